package score_test

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/score"
)

// TestDifferentialJSON decodes random valid records both with the package
// and with encoding/json: both must give the event that was written.
func TestDifferentialJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	d, err := score.NewDecoder(score.FormatJSON)
	require.NoError(t, err)
	for range 20000 {
		want := randomEvent(r)
		rec := randomJSON(r, want)

		got, err := score.DecodeJSON(rec)
		require.NoError(t, err, "%s", rec)
		assert.Equal(t, want, got, "%s", rec)

		var std score.Event
		require.NoError(t, json.Unmarshal(rec, &std), "%s", rec)
		assert.Equal(t, want, std, "encoding/json: %s", rec)

		if s, ok := score.Default().ScoreString(want.Activity); ok {
			id, gotScore, err := d.Score(rec)
			require.NoError(t, err, "%s", rec)
			assert.Equal(t, want.UserID, id)
			assert.Equal(t, s, gotScore)
		} else {
			_, _, err := d.Score(rec)
			assert.ErrorIs(t, err, score.ErrUnknownActivity, "%s", rec)
		}
		if t.Failed() {
			break
		}
	}
}

// TestDepthLimit checks that the package nests as deep as encoding/json, and
// no deeper.
func TestDepthLimit(t *testing.T) {
	for _, depth := range []int{9999, 10000} { // the record's object adds one
		for _, open := range []string{"[", `{"a":`} {
			closer := map[string]string{"[": "]", `{"a":`: "}"}[open]
			rec := []byte(`{"user_id":1,"activity":"a","x":` + strings.Repeat(open, depth) + "1" + strings.Repeat(closer, depth) + "}")
			_, err := score.DecodeJSON(rec)
			std := json.Unmarshal(rec, new(score.Event))
			assert.Equal(t, std == nil, err == nil, "depth %d of %s: encoding/json says %v, we say %v", depth, open, std, err)
			if depth == 9999 {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, "nested deeper than 10000")
			}
		}
	}
}

// TestStringBytes puts each kind of byte that needs a look at each position
// of strings of several lengths, to check the word-at-a-time scan against
// encoding/json.
func TestStringBytes(t *testing.T) {
	for _, c := range []string{`"`, `\\`, `\n`, `\u00e9`, "\x00", "\x1f", " ", "\x7f", "é", "😀", "\xff", "\\"} {
		for n := range 20 {
			for pos := range n + 1 {
				act := strings.Repeat("a", pos) + c + strings.Repeat("b", n-pos)
				for _, rec := range []string{
					`{"user_id":1,"activity":"` + act + `"}`,
					`{"activity":"` + act + `","user_id":1}`,
					`{"user_id":1,"activity":"x","` + act + `":0}`,
				} {
					e, err := score.DecodeJSON([]byte(rec))
					ref := refJSON([]byte(rec))
					if ref.ok && err == nil {
						assert.Equal(t, ref.event, e, "%q", rec)
						continue
					}
					var de *score.Error
					if assert.ErrorAs(t, err, &de, "%q", rec) {
						assert.True(t, !ref.ok || de.Kind == score.ErrInvalidUTF8, "%q: %v", rec, err)
					}
				}
			}
		}
	}
}
