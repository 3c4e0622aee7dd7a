package score_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/score"
)

// noOffset marks a case whose error concerns the whole record.
const noOffset = -1

type decodeCase struct {
	name string
	rec  string
	want score.Event // when kind is 0
	kind score.Kind
	off  int // of the error
}

var jsonCases = []decodeCase{
	// Good records.
	{name: "original", rec: `{"user_id": 1234, "activity": "profile.view"}`, want: score.Event{UserID: 1234, Activity: "profile.view"}},
	{name: "compact", rec: `{"user_id":1,"activity":"message.private"}`, want: score.Event{UserID: 1, Activity: "message.private"}},
	{name: "fields reversed", rec: `{"activity":"profile.picture.like","user_id":77}`, want: score.Event{UserID: 77, Activity: "profile.picture.like"}},
	{name: "white space everywhere", rec: " \t{ \"user_id\"\n:\r1234 ,\t\"activity\" : \"profile.view\" } \t", want: score.Event{UserID: 1234, Activity: "profile.view"}},
	{name: "line ending", rec: "{\"user_id\":1,\"activity\":\"profile.view\"}\n", want: score.Event{UserID: 1, Activity: "profile.view"}},
	{name: "CRLF line ending", rec: "{\"user_id\":1,\"activity\":\"profile.view\"}\r\n", want: score.Event{UserID: 1, Activity: "profile.view"}},
	{name: "byte order mark", rec: "\ufeff{\"user_id\":1,\"activity\":\"profile.view\"}", want: score.Event{UserID: 1, Activity: "profile.view"}},
	{name: "largest user id", rec: `{"user_id":9223372036854775807,"activity":"profile.view"}`, want: score.Event{UserID: 1<<63 - 1, Activity: "profile.view"}},
	{name: "extra fields skipped", rec: `{"ts":1.5e-3,"user_id":5,"tags":["a",{"b":[[],{}]},null,true,false,-0],"activity":"profile.view","meta":{"k":"v\"}"}}`, want: score.Event{UserID: 5, Activity: "profile.view"}},
	{name: "field names differing in case are other fields", rec: `{"USER_ID":"x","Activity":1,"user_id":5,"activity":"profile.view"}`, want: score.Event{UserID: 5, Activity: "profile.view"}},
	{name: "escaped activity", rec: `{"user_id":5,"activity":"profile\u002eview"}`, want: score.Event{UserID: 5, Activity: "profile.view"}},
	{name: "escaped field name", rec: `{"user\u005fid":5,"\u0061ctivity":"profile.view"}`, want: score.Event{UserID: 5, Activity: "profile.view"}},
	{name: "18 digits", rec: `{"user_id":123456789012345678,"activity":"profile.view"}`, want: score.Event{UserID: 123456789012345678, Activity: "profile.view"}},
	{name: "19 digits", rec: `{"user_id":1234567890123456789,"activity":"profile.view"}`, want: score.Event{UserID: 1234567890123456789, Activity: "profile.view"}},
	{name: "spaces before the brace", rec: `{"user_id":1,"activity":"profile.view"  }`, want: score.Event{UserID: 1, Activity: "profile.view"}},
	{name: "several spaces", rec: `{"user_id":   1  ,   "activity":   "profile.view"}`, want: score.Event{UserID: 1, Activity: "profile.view"}},
	{name: "empty object in extra field", rec: `{"x":{},"y":[],"user_id":5,"activity":"profile.view"}`, want: score.Event{UserID: 5, Activity: "profile.view"}},

	// Too long: see TestDecoderMaxLen.

	{name: "empty", rec: "", kind: score.ErrEmpty, off: noOffset},
	{name: "blank", rec: " \t\r\n", kind: score.ErrEmpty, off: noOffset},
	{name: "byte order mark only", rec: "\ufeff", kind: score.ErrEmpty, off: noOffset},

	{name: "invalid UTF-8 in activity", rec: "{\"user_id\":1,\"activity\":\"a\xffb\"}", kind: score.ErrInvalidUTF8, off: 26},
	{name: "invalid UTF-8 in extra field", rec: "{\"x\":\"\xc3\",\"user_id\":1,\"activity\":\"profile.view\"}", kind: score.ErrInvalidUTF8, off: 6},
	{name: "invalid UTF-8 outside strings", rec: "{\"user_id\":1,\xff\"activity\":\"profile.view\"}", kind: score.ErrInvalidUTF8, off: 13},
	{name: "UTF-16 surrogate written as UTF-8", rec: "{\"user_id\":1,\"activity\":\"\xed\xa0\x80\"}", kind: score.ErrInvalidUTF8, off: 25},
	{name: "invalid UTF-8 and malformed", rec: "{\"user_id\":1,,\"activity\":\"\xff\"}", kind: score.ErrInvalidUTF8, off: 26},

	{name: "array", rec: `[1234,"profile.view"]`, kind: score.ErrMalformed, off: 0},
	{name: "number", rec: `1234`, kind: score.ErrMalformed, off: 0},
	{name: "null", rec: `null`, kind: score.ErrMalformed, off: 0},
	{name: "string", rec: `"profile.view"`, kind: score.ErrMalformed, off: 0},
	{name: "CSV row", rec: `1234,profile.view`, kind: score.ErrMalformed, off: 0},
	{name: "empty object", rec: `{}`, kind: score.ErrMalformed, off: noOffset},
	{name: "missing user_id", rec: `{"activity":"profile.view"}`, kind: score.ErrMalformed, off: noOffset},
	{name: "missing activity", rec: `{"user_id":1}`, kind: score.ErrMalformed, off: noOffset},
	{name: "user_id twice", rec: `{"user_id":1,"activity":"profile.view","user_id":2}`, kind: score.ErrMalformed, off: 39},
	{name: "activity twice", rec: `{"activity":"profile.view","user_id":1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 39},
	{name: "activity twice, once escaped", rec: `{"activity":"profile.view","user_id":1,"activit\u0079":"x"}`, kind: score.ErrMalformed, off: 39},
	{name: "activity is a number", rec: `{"user_id":1,"activity":3}`, kind: score.ErrMalformed, off: 24},
	{name: "activity is null", rec: `{"user_id":1,"activity":null}`, kind: score.ErrMalformed, off: 24},
	{name: "activity is an object", rec: `{"user_id":1,"activity":{"a":"b"}}`, kind: score.ErrMalformed, off: 24},
	{name: "truncated", rec: `{"user_id":1,"activity":"profile.vi`, kind: score.ErrMalformed, off: 35},
	{name: "truncated after value", rec: `{"user_id":1`, kind: score.ErrMalformed, off: 12},
	{name: "only a brace", rec: `{`, kind: score.ErrMalformed, off: 1},
	{name: "missing colon", rec: `{"user_id" 1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 11},
	{name: "missing comma", rec: `{"user_id":1 "activity":"profile.view"}`, kind: score.ErrMalformed, off: 13},
	{name: "trailing comma", rec: `{"user_id":1,"activity":"profile.view",}`, kind: score.ErrMalformed, off: 39},
	{name: "trailing comma in extra array", rec: `{"x":[1,],"user_id":1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 8},
	{name: "a brace after the object", rec: `{"user_id":1,"activity":"profile.view"}}`, kind: score.ErrMalformed, off: 39},
	{name: "data after the object", rec: `{"user_id":1,"activity":"profile.view"} x`, kind: score.ErrMalformed, off: 40},
	{name: "two objects", rec: `{"user_id":1,"activity":"profile.view"}{"user_id":1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 39},
	{name: "single quotes", rec: `{'user_id':1,'activity':'profile.view'}`, kind: score.ErrMalformed, off: 1},
	{name: "unquoted field name", rec: `{user_id:1,activity:"profile.view"}`, kind: score.ErrMalformed, off: 1},
	{name: "invalid escape", rec: `{"user_id":1,"activity":"profile\x2eview"}`, kind: score.ErrMalformed, off: 32},
	{name: "short unicode escape", rec: `{"user_id":1,"activity":"\u12"}`, kind: score.ErrMalformed, off: 25},
	{name: "control character in string", rec: "{\"user_id\":1,\"activity\":\"profile\tview\"}", kind: score.ErrMalformed, off: 32},
	{name: "leading zero in user_id", rec: `{"user_id":007,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 12},
	{name: "leading zero in extra field", rec: `{"x":01,"user_id":1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 6},
	{name: "number without digits", rec: `{"x":-,"user_id":1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 6},
	{name: "fraction without digits", rec: `{"x":1.,"user_id":1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 7},
	{name: "exponent without digits", rec: `{"x":1e+,"user_id":1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 8},
	{name: "misspelt literal", rec: `{"x":nul,"user_id":1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 5},
	{name: "truncated literal", rec: `{"x":tru`, kind: score.ErrMalformed, off: 8},
	{name: "comment", rec: `{"user_id":1,/* c */"activity":"profile.view"}`, kind: score.ErrMalformed, off: 13},
	{name: "unclosed extra array", rec: `{"x":[1,2,"user_id":1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 19},
	{name: "mismatched brackets", rec: `{"x":[1,2},"user_id":1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 9},
	{name: "nested too deep", rec: `{"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `,"user_id":1,"activity":"profile.view"}`, kind: score.ErrMalformed, off: 5 + 9999},

	{name: "user_id is a string", rec: `{"user_id":"12","activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id has a fraction", rec: `{"user_id":1.5,"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id has a zero fraction", rec: `{"user_id":1.0,"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id has an exponent", rec: `{"user_id":1e3,"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id has a capital exponent", rec: `{"user_id":1E3,"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id is null", rec: `{"user_id":null,"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id is a boolean", rec: `{"user_id":true,"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id is an array", rec: `{"user_id":[1],"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id is an object", rec: `{"user_id":{},"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id is negative", rec: `{"user_id":-5,"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id is zero", rec: `{"user_id":0,"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id is minus zero", rec: `{"user_id":-0,"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id overflows", rec: `{"user_id":9223372036854775808,"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},
	{name: "user_id overflows by far", rec: `{"user_id":123456789012345678901234567890,"activity":"profile.view"}`, kind: score.ErrBadUserID, off: 11},

	{name: "unknown activity", rec: `{"user_id":1,"activity":"profile.like"}`, kind: score.ErrUnknownActivity, off: 24},
	{name: "empty activity", rec: `{"user_id":1,"activity":""}`, kind: score.ErrUnknownActivity, off: 24},
	{name: "activity in capitals", rec: `{"user_id":1,"activity":"PROFILE.VIEW"}`, kind: score.ErrUnknownActivity, off: 24},
	{name: "activity with a space", rec: `{"user_id":1,"activity":"profile.view "}`, kind: score.ErrUnknownActivity, off: 24},
	{name: "escaped unknown activity", rec: `{"user_id":1,"activity":"\u00e9"}`, kind: score.ErrUnknownActivity, off: 24},
	{name: "long escaped activity", rec: `{"user_id":1,"activity":"` + strings.Repeat(`\u0041`, 300) + `"}`, kind: score.ErrUnknownActivity, off: 24},

	// When a record has several problems, the kind follows the order of
	// Kind, whatever the order of the fields.
	{name: "bad user id and unknown activity", rec: `{"activity":"x","user_id":0}`, kind: score.ErrBadUserID, off: 26},
	{name: "bad user id, then malformed", rec: `{"user_id":0,"activity":"profile.view",}`, kind: score.ErrMalformed, off: 39},
	{name: "unknown activity, then malformed", rec: `{"activity":"x","user_id":1,"z":}`, kind: score.ErrMalformed, off: 32},
	{name: "bad user id and missing activity", rec: `{"user_id":"x"}`, kind: score.ErrMalformed, off: noOffset},
}

var csvCases = []decodeCase{
	{name: "original", rec: "1234,profile.view", want: score.Event{UserID: 1234, Activity: "profile.view"}},
	{name: "line ending", rec: "1234,message.private\n", want: score.Event{UserID: 1234, Activity: "message.private"}},
	{name: "CRLF line ending", rec: "1234,profile.picture.like\r\n", want: score.Event{UserID: 1234, Activity: "profile.picture.like"}},
	{name: "byte order mark", rec: "\ufeff1234,profile.view", want: score.Event{UserID: 1234, Activity: "profile.view"}},
	{name: "leading zeros", rec: "0001234,profile.view", want: score.Event{UserID: 1234, Activity: "profile.view"}},
	{name: "largest user id", rec: "9223372036854775807,profile.view", want: score.Event{UserID: 1<<63 - 1, Activity: "profile.view"}},

	{name: "empty", rec: "", kind: score.ErrEmpty, off: noOffset},
	{name: "blank", rec: " \t\r\n", kind: score.ErrEmpty, off: noOffset},
	{name: "line ending only", rec: "\n", kind: score.ErrEmpty, off: noOffset},

	{name: "invalid UTF-8 in activity", rec: "1,profile\xff", kind: score.ErrInvalidUTF8, off: 9},
	{name: "invalid UTF-8 in user id", rec: "1\xff,profile.view", kind: score.ErrInvalidUTF8, off: 1},
	{name: "invalid UTF-8 and too many fields", rec: "1,a,b\xc3", kind: score.ErrInvalidUTF8, off: 5},

	{name: "one field", rec: "1234", kind: score.ErrMalformed, off: noOffset},
	{name: "three fields", rec: "1234,profile.view,3", kind: score.ErrMalformed, off: 17},
	{name: "three fields, bad user id", rec: "x,profile.view,3", kind: score.ErrMalformed, off: 14},
	{name: "quoted activity", rec: `1234,"profile.view"`, kind: score.ErrMalformed, off: 5},
	{name: "control character", rec: "1234,profile\tview", kind: score.ErrMalformed, off: 12},
	{name: "line ending inside", rec: "1234,profile\nview", kind: score.ErrMalformed, off: 12},
	{name: "JSON record", rec: `{"user_id": 1234, "activity": "profile.view"}`, kind: score.ErrMalformed, off: 18},

	{name: "empty user id", rec: ",profile.view", kind: score.ErrBadUserID, off: 0},
	{name: "user id with letters", rec: "12a,profile.view", kind: score.ErrBadUserID, off: 2},
	{name: "negative user id", rec: "-12,profile.view", kind: score.ErrBadUserID, off: 0},
	{name: "user id with plus", rec: "+12,profile.view", kind: score.ErrBadUserID, off: 0},
	{name: "user id with space", rec: " 12,profile.view", kind: score.ErrBadUserID, off: 0},
	{name: "user id with fraction", rec: "12.0,profile.view", kind: score.ErrBadUserID, off: 2},
	{name: "zero user id", rec: "0,profile.view", kind: score.ErrBadUserID, off: 0},
	{name: "user id overflows", rec: "9223372036854775808,profile.view", kind: score.ErrBadUserID, off: 0},
	{name: "header line", rec: "user_id,activity", kind: score.ErrBadUserID, off: 0},
	{name: "bad user id after byte order mark", rec: "\ufeffx,profile.view", kind: score.ErrBadUserID, off: 3},

	{name: "unknown activity", rec: "1234,profile.like", kind: score.ErrUnknownActivity, off: 5},
	{name: "empty activity", rec: "1234,", kind: score.ErrUnknownActivity, off: 5},
	{name: "activity with a space", rec: "1234, profile.view", kind: score.ErrUnknownActivity, off: 5},
	{name: "bad user id and unknown activity", rec: "0,x", kind: score.ErrBadUserID, off: 0},
}

func TestDecoder(t *testing.T) {
	for _, format := range []score.Format{score.FormatJSON, score.FormatCSV} {
		cases := jsonCases
		if format == score.FormatCSV {
			cases = csvCases
		}
		d, err := score.NewDecoder(format)
		require.NoError(t, err)
		for _, c := range cases {
			t.Run(format.String()+"/"+c.name, func(t *testing.T) {
				e, err := d.Decode([]byte(c.rec))
				id, s, serr := d.Score([]byte(c.rec))
				if c.kind == 0 {
					require.NoError(t, err)
					assert.Equal(t, c.want, e)
					require.NoError(t, serr)
					assert.Equal(t, c.want.UserID, id)
					want, ok := score.Default().ScoreString(c.want.Activity)
					require.True(t, ok)
					assert.Equal(t, want, s)
					return
				}
				checkError(t, err, c.kind, c.off)
				assert.Equal(t, score.Event{}, e)
				assert.Equal(t, err, serr, "Score and Decode disagree")
				assert.Zero(t, id)
				assert.Zero(t, s)
			})
		}
	}
}

// TestDecodeWithoutTable checks that DecodeJSON and DecodeCSV agree with a
// Decoder, but for activities: they take any.
func TestDecodeWithoutTable(t *testing.T) {
	for _, format := range []score.Format{score.FormatJSON, score.FormatCSV} {
		cases, decode := jsonCases, score.DecodeJSON
		if format == score.FormatCSV {
			cases, decode = csvCases, score.DecodeCSV
		}
		for _, c := range cases {
			t.Run(format.String()+"/"+c.name, func(t *testing.T) {
				e, err := decode([]byte(c.rec))
				if c.kind == 0 || c.kind == score.ErrUnknownActivity {
					require.NoError(t, err)
					assert.Positive(t, e.UserID)
					if c.kind == 0 {
						assert.Equal(t, c.want, e)
					}
					return
				}
				checkError(t, err, c.kind, c.off)
			})
		}
	}
}

func TestDecodeActivities(t *testing.T) {
	cases := []struct {
		name, rec, want string
	}{
		{"plain", `{"user_id":1,"activity":"a.b"}`, "a.b"},
		{"empty", `{"user_id":1,"activity":""}`, ""},
		{"short escapes", `{"user_id":1,"activity":"\"\\\/\b\f\n\r\t"}`, "\"\\/\b\f\n\r\t"},
		{"unicode escapes", `{"user_id":1,"activity":"\u00e9\u00E9\u20ac\u0000"}`, "éé€\x00"},
		{"surrogate pair", `{"user_id":1,"activity":"\ud83d\ude00"}`, "😀"},
		{"lone high surrogate", `{"user_id":1,"activity":"\ud83dx"}`, "\ufffdx"},
		{"lone low surrogate", `{"user_id":1,"activity":"\ude00"}`, "\ufffd"},
		{"high surrogate then escape", `{"user_id":1,"activity":"\ud83d\u0041"}`, "\ufffdA"},
		{"two high surrogates", `{"user_id":1,"activity":"\ud83d\ud83d\ude00"}`, "\ufffd😀"},
		{"raw UTF-8", `{"user_id":1,"activity":"café 😀"}`, "café 😀"},
		{"DEL", "{\"user_id\":1,\"activity\":\"\x7f\"}", "\x7f"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := score.DecodeJSON([]byte(c.rec))
			require.NoError(t, err)
			assert.Equal(t, c.want, e.Activity)
			assert.Equal(t, int64(1), e.UserID)
		})
	}
}

func TestDecoderMaxLen(t *testing.T) {
	recs := map[score.Format]string{
		score.FormatJSON: `{"user_id":1,"activity":"profile.view"}`,
		score.FormatCSV:  "1,profile.view",
	}
	for format, rec := range recs {
		t.Run(format.String(), func(t *testing.T) {
			d, err := score.NewDecoder(format, score.WithMaxLen(len(rec)))
			require.NoError(t, err)
			_, err = d.Decode([]byte(rec))
			require.NoError(t, err, "a record as long as the limit passes")

			// Too long wins over every other problem.
			for _, long := range []string{rec + " ", rec + "\xff", strings.Repeat("x", len(rec)+1)} {
				_, err = d.Decode([]byte(long))
				checkError(t, err, score.ErrTooLong, noOffset)
				assert.Contains(t, err.Error(), fmt.Sprintf("%d bytes, over the limit of %d", len(long), len(rec)))
			}
		})
	}
	t.Run("default", func(t *testing.T) {
		pad := strings.Repeat(" ", score.DefaultMaxLen)
		_, err := score.DecodeJSON([]byte(`{"user_id":1,"activity":"a"}` + pad))
		checkError(t, err, score.ErrTooLong, noOffset)
		_, err = score.DecodeCSV([]byte("1," + pad))
		checkError(t, err, score.ErrTooLong, noOffset)
	})
}

func TestNewDecoder(t *testing.T) {
	_, err := score.NewDecoder(score.FormatUnknown)
	assert.ErrorContains(t, err, "cannot decode format unknown")
	_, err = score.NewDecoder(score.FormatJSON, score.WithTable(nil))
	assert.ErrorContains(t, err, "table is nil or empty")
	_, err = score.NewDecoder(score.FormatJSON, score.WithTable(&score.Table{}))
	assert.ErrorContains(t, err, "table is nil or empty")
	_, err = score.NewDecoder(score.FormatCSV, score.WithMaxLen(0))
	assert.ErrorContains(t, err, "max record length 0 is less than 1")

	table, err := score.NewTable(map[string]int64{"like": 5})
	require.NoError(t, err)
	d, err := score.NewDecoder(score.FormatCSV, score.WithTable(table))
	require.NoError(t, err)
	assert.Equal(t, score.FormatCSV, d.Format())
	assert.Same(t, table, d.Table())
	id, s, err := d.Score([]byte("42,like"))
	require.NoError(t, err)
	assert.Equal(t, int64(42), id)
	assert.Equal(t, int64(5), s)
	_, _, err = d.Score([]byte("42,profile.view"))
	assert.ErrorIs(t, err, score.ErrUnknownActivity)
}

// TestDecoderConcurrent shares a Decoder between goroutines, for the race
// detector.
func TestDecoderConcurrent(t *testing.T) {
	d, err := score.NewDecoder(score.FormatJSON)
	require.NoError(t, err)
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			var err error
			for i := range 1000 {
				rec := fmt.Appendf(nil, `{"user_id":%d,"activity":"profile.view"}`, g*1000+i+1)
				id, s, derr := d.Score(rec)
				if derr != nil || id != int64(g*1000+i+1) || s != 1 {
					err = fmt.Errorf("%s: got %d, %d, %v", rec, id, s, derr)
					break
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		assert.NoError(t, <-errs)
	}
}

func checkError(t *testing.T, err error, kind score.Kind, off int) {
	t.Helper()
	require.Error(t, err)
	var e *score.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, kind, e.Kind, "kind; error: %v", err)
	assert.Equal(t, off, e.Offset, "offset; error: %v", err)
	assert.ErrorIs(t, err, kind)
	for k := score.Kind(1); int(k) < score.NumKinds; k++ {
		if k != kind {
			assert.NotErrorIs(t, err, k)
		}
	}
	got, ok := score.KindOf(fmt.Errorf("wrapped: %w", err))
	assert.True(t, ok)
	assert.Equal(t, kind, got)
	assert.True(t, strings.HasPrefix(err.Error(), kind.String()), "message %q starts with the kind", err)
	assert.False(t, errors.Is(err, score.ErrInvalidTable))
}

// A record one byte over the limit may be the cut of a longer line (a
// file reader keeps the first limit+1 bytes of one): its error says "at
// least"; a longer one gives its length.
func TestTooLongSaysAtLeastForACut(t *testing.T) {
	d, err := score.NewDecoder(score.FormatCSV, score.WithMaxLen(10))
	require.NoError(t, err)
	_, err = d.Decode([]byte(strings.Repeat("1", 11)))
	require.ErrorIs(t, err, score.ErrTooLong)
	assert.Contains(t, err.Error(), "at least 11 bytes, over the limit of 10")
	_, err = d.Decode([]byte(strings.Repeat("1", 12)))
	require.ErrorIs(t, err, score.ErrTooLong)
	assert.Contains(t, err.Error(), ": 12 bytes, over the limit of 10")
}
