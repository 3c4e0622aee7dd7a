package score_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/score"
)

func TestAppendJSON(t *testing.T) {
	cases := []struct {
		name string
		e    score.Event
		want string
	}{
		{"original", score.Event{UserID: 1234, Activity: "profile.view"}, `{"user_id":1234,"activity":"profile.view"}`},
		{"largest user id", score.Event{UserID: 1<<63 - 1, Activity: "a"}, `{"user_id":9223372036854775807,"activity":"a"}`},
		{"empty activity", score.Event{UserID: 1}, `{"user_id":1,"activity":""}`},
		{"escapes", score.Event{UserID: 1, Activity: "\"\\\n\r\t\x00\x1f/"}, `{"user_id":1,"activity":"\"\\\n\r\t\u0000\u001f/"}`},
		{"non-ASCII", score.Event{UserID: 1, Activity: "café 😀\u2028"}, "{\"user_id\":1,\"activity\":\"café 😀\u2028\"}"},
		{"invalid UTF-8", score.Event{UserID: 1, Activity: "a\xffb\xc3"}, `{"user_id":1,"activity":"a\ufffdb\ufffd"}`},
		{"HTML", score.Event{UserID: 1, Activity: "<a&b>"}, `{"user_id":1,"activity":"<a&b>"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := score.AppendJSON([]byte("prefix "), c.e)
			assert.Equal(t, "prefix "+c.want, string(got))

			// encoding/json reads what we write as we meant it.
			var back score.Event
			require.NoError(t, json.Unmarshal(got[len("prefix "):], &back))
			e := c.e
			e.Activity = string([]rune(e.Activity)) // invalid UTF-8 becomes U+FFFD, as in the encoding
			assert.Equal(t, e, back)

			// And so do we.
			back, err := score.DecodeJSON(got[len("prefix "):])
			require.NoError(t, err)
			assert.Equal(t, e, back)
		})
	}
}

func TestAppendCSV(t *testing.T) {
	for name := range score.Default().All() {
		e := score.Event{UserID: 1234, Activity: name}
		row := score.AppendCSV([]byte("x"), e)
		assert.Equal(t, "x1234,"+name, string(row))
		back, err := score.DecodeCSV(row[1:])
		require.NoError(t, err)
		assert.Equal(t, e, back)
	}
	assert.Equal(t, "9223372036854775807,a b", string(score.AppendCSV(nil, score.Event{UserID: 1<<63 - 1, Activity: "a b"})))
}

func TestDetectFormat(t *testing.T) {
	cases := []struct {
		line string
		want score.Format
	}{
		{`{"user_id": 1234, "activity": "profile.view"}`, score.FormatJSON},
		{`  {"user_id"`, score.FormatJSON},
		{"\ufeff{}", score.FormatJSON},
		{"{", score.FormatJSON}, // the shape only: it will not decode
		{"1234,profile.view", score.FormatCSV},
		{"1234,profile.view\r\n", score.FormatCSV},
		{"\ufeff1234,profile.view", score.FormatCSV},
		{"user_id,activity", score.FormatCSV},
		{"user_id,activity\n", score.FormatCSV},
		{"\ufeffuser_id,activity\r\n", score.FormatCSV},
		{"0,x", score.FormatCSV},
		{"", score.FormatUnknown},
		{"\n", score.FormatUnknown},
		{"1234", score.FormatUnknown},
		{"[1234, \"profile.view\"]", score.FormatUnknown},
		{"user,activity", score.FormatUnknown},
		{"USER_ID,ACTIVITY", score.FormatUnknown},
		{"id;activity", score.FormatUnknown},
		{"\xff", score.FormatUnknown},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%q", c.line), func(t *testing.T) {
			assert.Equal(t, c.want, score.DetectFormat([]byte(c.line)))
		})
	}
}

func TestIsCSVHeader(t *testing.T) {
	for _, line := range []string{"user_id,activity", "user_id,activity\n", "user_id,activity\r\n", "\ufeffuser_id,activity"} {
		assert.True(t, score.IsCSVHeader([]byte(line)), "%q", line)
	}
	for _, line := range []string{"", "1234,profile.view", " user_id,activity", "user_id,activity,", "user_id, activity", "activity,user_id"} {
		assert.False(t, score.IsCSVHeader([]byte(line)), "%q", line)
	}
}

func TestFormatString(t *testing.T) {
	assert.Equal(t, "json", score.FormatJSON.String())
	assert.Equal(t, "csv", score.FormatCSV.String())
	assert.Equal(t, "unknown", score.FormatUnknown.String())
	assert.Equal(t, "unknown", score.Format(42).String())
}

func TestError(t *testing.T) {
	e := &score.Error{Kind: score.ErrBadUserID, Offset: 3, Detail: `user id "12a" is not an integer`}
	assert.Equal(t, `bad user id at byte 3: user id "12a" is not an integer`, e.Error())
	assert.Equal(t, "empty record", (&score.Error{Kind: score.ErrEmpty, Offset: -1}).Error())
	assert.Equal(t, "malformed record: missing field activity", (&score.Error{Kind: score.ErrMalformed, Offset: -1, Detail: "missing field activity"}).Error())

	wrapped := fmt.Errorf("events.csv:17: %w", e)
	assert.Equal(t, `events.csv:17: bad user id at byte 3: user id "12a" is not an integer`, wrapped.Error())
	assert.ErrorIs(t, wrapped, score.ErrBadUserID)
	assert.NotErrorIs(t, wrapped, score.ErrMalformed)
	var got *score.Error
	require.ErrorAs(t, wrapped, &got)
	assert.Same(t, e, got)
}

func TestKind(t *testing.T) {
	names := map[score.Kind]string{
		score.ErrTooLong:         "record too long",
		score.ErrEmpty:           "empty record",
		score.ErrInvalidUTF8:     "invalid UTF-8",
		score.ErrMalformed:       "malformed record",
		score.ErrBadUserID:       "bad user id",
		score.ErrUnknownActivity: "unknown activity",
	}
	assert.Len(t, names, score.NumKinds-1, "every kind has a name here")
	for k, name := range names {
		assert.Equal(t, name, k.String())
		assert.Equal(t, name, k.Error())
		assert.Less(t, int(k), score.NumKinds)
	}
	assert.Equal(t, "Kind(0)", score.Kind(0).String())
	assert.Equal(t, "Kind(99)", score.Kind(99).String())

	k, ok := score.KindOf(nil)
	assert.False(t, ok)
	assert.Zero(t, k)
	_, ok = score.KindOf(errors.New("other"))
	assert.False(t, ok)
	k, ok = score.KindOf(fmt.Errorf("a: %w", &score.Error{Kind: score.ErrTooLong}))
	assert.True(t, ok)
	assert.Equal(t, score.ErrTooLong, k)

	// Counting bad records per kind, as a pipeline does.
	var counts [score.NumKinds]int
	for _, rec := range []string{"", "1,x", "x,x", "1,profile.view", "1,a,b", "2,y"} {
		d, err := score.NewDecoder(score.FormatCSV)
		require.NoError(t, err)
		if _, err := d.Decode([]byte(rec)); err != nil {
			k, _ := score.KindOf(err)
			counts[k]++
		}
	}
	assert.Equal(t, [score.NumKinds]int{score.ErrEmpty: 1, score.ErrMalformed: 1, score.ErrBadUserID: 1, score.ErrUnknownActivity: 2}, counts)
}

// A lone "\r" at the end of a record is taken as its line ending, as the
// doc says; an activity that ends with a line ending is written by
// AppendCSV as a row that decodes without it, as its doc says; an
// indented header is not one, for DetectFormat either.
func TestLineEndingsAtTheEdges(t *testing.T) {
	e, err := score.DecodeCSV([]byte("1234,profile.view\r"))
	require.NoError(t, err)
	assert.Equal(t, score.Event{UserID: 1234, Activity: "profile.view"}, e)
	for _, act := range []string{"x\n", "x\r", "x\r\n"} {
		e, err := score.DecodeCSV(score.AppendCSV(nil, score.Event{UserID: 1, Activity: act}))
		require.NoError(t, err, "%q", act)
		assert.Equal(t, "x", e.Activity, "%q", act)
	}
	assert.Equal(t, score.FormatUnknown, score.DetectFormat([]byte(" user_id,activity")))
	assert.Equal(t, score.FormatCSV, score.DetectFormat([]byte(" 1234,profile.view")))
}
