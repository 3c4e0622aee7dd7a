package score_test

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/score"
)

// FuzzDecodeJSON checks DecodeJSON against encoding/json: whatever one of
// them accepts, the other accepts too and decodes to the same event, but for
// the differences parseJSON documents (a repeated field, invalid UTF-8, a
// byte order mark, names differing in case); it never panics; an event it
// decodes re-encodes to a record that decodes to the same event; and a
// Decoder agrees with it.
func FuzzDecodeJSON(f *testing.F) {
	for _, c := range jsonCases {
		if len(c.rec) <= maxSeedLen {
			f.Add([]byte(c.rec))
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		f.Add(randomJSON(r, randomEvent(r)))
	}
	// As producers write them, which the Decoder reads on a shorter path.
	for _, act := range score.Default().Activities() {
		f.Add(score.AppendJSON(nil, score.Event{UserID: 1234, Activity: act}))
		f.Add([]byte(`{"user_id": 98765, "activity": "` + act + `"}`))
	}
	d, err := score.NewDecoder(score.FormatJSON)
	require.NoError(f, err)

	f.Fuzz(func(t *testing.T, rec []byte) {
		e, err := score.DecodeJSON(rec)
		ref := refJSON(rec)

		if err != nil {
			var de *score.Error
			require.ErrorAs(t, err, &de)
			require.Greater(t, int(de.Kind), 0)
			require.Less(t, int(de.Kind), score.NumKinds)
			require.NotEqual(t, score.ErrUnknownActivity, de.Kind, "DecodeJSON has no table")
			require.LessOrEqual(t, de.Offset, len(rec))
			require.GreaterOrEqual(t, de.Offset, -1)
			if ref.ok {
				// The documented differences.
				require.True(t, ref.dup || de.Kind == score.ErrInvalidUTF8 || de.Kind == score.ErrTooLong,
					"encoding/json accepts what we reject as %v: %q", err, rec)
			}
			if !ref.valid && de.Kind != score.ErrInvalidUTF8 && de.Kind != score.ErrTooLong {
				require.Contains(t, []score.Kind{score.ErrMalformed, score.ErrEmpty}, de.Kind,
					"not JSON, but %v: %q", err, rec)
			}
			_, derr := d.Decode(rec)
			require.Equal(t, err, derr, "Decoder and DecodeJSON disagree on %q", rec)
			return
		}

		require.True(t, ref.ok, "we accept what encoding/json rejects: %q", rec)
		require.Equal(t, ref.event, e, "%q", rec)
		if !ref.caseVariant {
			var std score.Event
			require.NoError(t, json.Unmarshal(rec[len(rec)-len(trimBOM(rec)):], &std))
			require.Equal(t, std, e, "encoding/json decodes %q to another event", rec)
		}
		require.Positive(t, e.UserID)

		again, err := score.DecodeJSON(score.AppendJSON(nil, e))
		require.NoError(t, err)
		require.Equal(t, e, again, "JSON round trip of %q", rec)
		if csvSafe(e.Activity) {
			again, err := score.DecodeCSV(score.AppendCSV(nil, e))
			require.NoError(t, err)
			require.Equal(t, e, again, "CSV round trip of %q", rec)
		}

		got, err := d.Decode(rec)
		if s, ok := score.Default().ScoreString(e.Activity); ok {
			require.NoError(t, err)
			assert.Equal(t, e, got)
			id, gotScore, err := d.Score(rec)
			require.NoError(t, err)
			assert.Equal(t, e.UserID, id)
			assert.Equal(t, s, gotScore)
		} else {
			require.ErrorIs(t, err, score.ErrUnknownActivity)
		}
	})
}

// FuzzDecodeCSV checks DecodeCSV against a plain implementation of the same
// rules with strings.Split and strconv; it never panics; an event it decodes
// re-encodes to a row that decodes to the same event; and a Decoder agrees
// with it.
func FuzzDecodeCSV(f *testing.F) {
	for _, c := range csvCases {
		f.Add([]byte(c.rec))
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 20 {
		e := randomEvent(r)
		if csvSafe(e.Activity) {
			f.Add(score.AppendCSV(nil, e))
		}
	}
	d, err := score.NewDecoder(score.FormatCSV)
	require.NoError(f, err)

	f.Fuzz(func(t *testing.T, rec []byte) {
		e, err := score.DecodeCSV(rec)
		want, ok := refCSV(rec)
		if err != nil {
			var de *score.Error
			require.ErrorAs(t, err, &de)
			require.Greater(t, int(de.Kind), 0)
			require.Less(t, int(de.Kind), score.NumKinds)
			require.NotEqual(t, score.ErrUnknownActivity, de.Kind, "DecodeCSV has no table")
			require.LessOrEqual(t, de.Offset, len(rec))
			require.GreaterOrEqual(t, de.Offset, -1)
			require.False(t, ok && de.Kind != score.ErrTooLong, "the reference accepts what we reject as %v: %q", err, rec)
			_, derr := d.Decode(rec)
			require.Equal(t, err, derr, "Decoder and DecodeCSV disagree on %q", rec)
			return
		}
		require.True(t, ok, "the reference rejects what we accept: %q", rec)
		require.Equal(t, want, e)

		again, err := score.DecodeCSV(score.AppendCSV(nil, e))
		require.NoError(t, err)
		require.Equal(t, e, again, "CSV round trip of %q", rec)
		again, err = score.DecodeJSON(score.AppendJSON(nil, e))
		require.NoError(t, err)
		require.Equal(t, e, again, "JSON round trip of %q", rec)

		got, err := d.Decode(rec)
		if _, ok := score.Default().ScoreString(e.Activity); ok {
			require.NoError(t, err)
			assert.Equal(t, e, got)
		} else {
			require.ErrorIs(t, err, score.ErrUnknownActivity)
		}
	})
}

// maxSeedLen keeps the deeply nested cases out of the corpus: minimizing
// what the fuzzer finds from them takes most of a short run.
const maxSeedLen = 1024

func trimBOM(b []byte) []byte {
	if len(b) >= 3 && string(b[:3]) == "\ufeff" {
		return b[3:]
	}
	return b
}
