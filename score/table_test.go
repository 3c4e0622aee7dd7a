package score_test

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/score"
)

var original = map[string]int64{
	"profile.picture.like": 2,
	"profile.view":         1,
	"message.private":      3,
}

func TestDefault(t *testing.T) {
	d := score.Default()
	assert.Same(t, d, score.Default())
	assert.Equal(t, original, maps.Collect(d.All()))
	assert.Equal(t, []string{"message.private", "profile.picture.like", "profile.view"}, d.Activities())
	assert.Equal(t, 3, d.Len())
	for name, want := range original {
		got, ok := d.Score([]byte(name))
		assert.True(t, ok, name)
		assert.Equal(t, want, got, name)
		got, ok = d.ScoreString(name)
		assert.True(t, ok, name)
		assert.Equal(t, want, got, name)
	}
	for _, name := range []string{"", "profile", "profile.vie", "profile.view ", "Profile.view", "profile.views", "message.privatE"} {
		got, ok := d.ScoreString(name)
		assert.False(t, ok, name)
		assert.Zero(t, got, name)
	}
	// The caller's copy does not reach the table.
	d.Activities()[0] = "changed"
	assert.Equal(t, "message.private", d.Activities()[0])
}

func TestTableLookupSizes(t *testing.T) {
	// Small tables scan, larger ones hash: both must find every name and
	// nothing else.
	for _, n := range []int{1, 2, 8, 9, 100} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			scores := make(map[string]int64)
			for i := range n {
				scores["act."+strconv.Itoa(i)] = int64(i)
			}
			table, err := score.NewTable(scores)
			require.NoError(t, err)
			assert.Equal(t, n, table.Len())
			for name, want := range scores {
				got, ok := table.Score([]byte(name))
				assert.True(t, ok, name)
				assert.Equal(t, want, got, name)
			}
			for _, name := range []string{"", "act.", "act." + strconv.Itoa(n), "act.00"} {
				_, ok := table.Score([]byte(name))
				assert.False(t, ok, name)
			}
		})
	}
}

func TestZeroTable(t *testing.T) {
	var table score.Table
	_, ok := table.ScoreString("profile.view")
	assert.False(t, ok)
	assert.Zero(t, table.Len())
	assert.Empty(t, table.Activities())
}

func TestNewTable(t *testing.T) {
	cases := []struct {
		name   string
		scores map[string]int64
		err    string // "" when the table is good
	}{
		{"original", original, ""},
		{"zero score", map[string]int64{"ignored": 0}, ""},
		{"largest score", map[string]int64{"big": score.MaxScore}, ""},
		{"longest name", map[string]int64{strings.Repeat("a", score.MaxActivityLen): 1}, ""},
		{"inner space", map[string]int64{"profile view": 1}, ""},
		{"non-ASCII", map[string]int64{"profil.vue.é": 1}, ""},
		{"nil", nil, "no activities"},
		{"empty", map[string]int64{}, "no activities"},
		{"negative score", map[string]int64{"a": 1, "b": -1}, `activity "b": score -1 is outside 0..1000000`},
		{"absurd score", map[string]int64{"a": score.MaxScore + 1}, `activity "a": score 1000001 is outside 0..1000000`},
		{"empty name", map[string]int64{"": 1}, "empty activity name"},
		{"long name", map[string]int64{strings.Repeat("a", score.MaxActivityLen+1): 1}, "bytes long, over the limit of 256"},
		{"invalid UTF-8", map[string]int64{"a\xff": 1}, `activity "a\xff" is not valid UTF-8`},
		{"leading space", map[string]int64{" a": 1}, `activity " a" starts or ends with a space`},
		{"trailing space", map[string]int64{"a ": 1}, `activity "a " starts or ends with a space`},
		{"comma", map[string]int64{"a,b": 1}, `activity "a,b" holds ',', which a CSV row cannot carry`},
		{"quote", map[string]int64{`a"b`: 1}, `holds '"'`},
		{"tab", map[string]int64{"a\tb": 1}, `holds '\t'`},
		{"newline", map[string]int64{"a\n": 1}, `holds '\n'`},
		{"DEL", map[string]int64{"a\x7f": 1}, `holds '\x7f'`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			table, err := score.NewTable(c.scores)
			if c.err == "" {
				require.NoError(t, err)
				assert.Equal(t, c.scores, maps.Collect(table.All()))
				return
			}
			require.Error(t, err)
			assert.Nil(t, table)
			assert.ErrorIs(t, err, score.ErrInvalidTable)
			assert.ErrorContains(t, err, c.err)
			assert.True(t, strings.HasPrefix(err.Error(), "invalid score table: "), err.Error())
		})
	}
}

func TestNewTableCopies(t *testing.T) {
	scores := map[string]int64{"a": 1}
	table, err := score.NewTable(scores)
	require.NoError(t, err)
	scores["a"] = 2
	scores["b"] = 3
	got, _ := table.ScoreString("a")
	assert.Equal(t, int64(1), got)
	_, ok := table.ScoreString("b")
	assert.False(t, ok)
}

func TestLoadTable(t *testing.T) {
	table, err := score.LoadTable(filepath.Join("testdata", "scores.json"))
	require.NoError(t, err)
	assert.Equal(t, original, maps.Collect(table.All()))

	path := filepath.Join("testdata", "duplicate.json")
	_, err = score.LoadTable(path)
	assert.ErrorIs(t, err, score.ErrInvalidTable)
	assert.EqualError(t, err, "invalid score table "+path+`:4:3: activity "profile.view" appears twice`)

	_, err = score.LoadTable(filepath.Join(t.TempDir(), "missing.json"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.NotErrorIs(t, err, score.ErrInvalidTable)
	assert.ErrorContains(t, err, "load score table: ")
	assert.ErrorContains(t, err, "missing.json")
}

func TestParseTable(t *testing.T) {
	cases := []struct {
		name string
		data string
		want map[string]int64
		err  string // after "invalid score table scores.json", when want is nil
	}{
		{"original", `{"profile.picture.like": 2, "profile.view": 1, "message.private": 3}`, original, ""},
		{"one line per activity", "{\n\t\"a\": 1,\n\t\"b\": 0\n}\n", map[string]int64{"a": 1, "b": 0}, ""},
		{"escaped name", `{"caf\u00e9": 4}`, map[string]int64{"café": 4}, ""},
		{"largest score", `{"a": 1000000}`, map[string]int64{"a": score.MaxScore}, ""},
		{"byte order mark", "\xef\xbb\xbf{\"a\": 1}\r\n", map[string]int64{"a": 1}, ""},
		{"byte order mark alone", "\xef\xbb\xbf", nil, `: empty file, want a JSON object such as {"profile.view": 1}`},
		{"byte order mark twice", "\xef\xbb\xbf\xef\xbb\xbf{}", nil, `:1:4: invalid JSON: invalid character 'ï' looking for beginning of value`},

		{"empty file", ``, nil, `: empty file, want a JSON object such as {"profile.view": 1}`},
		{"blank file", " \n", nil, `: empty file, want a JSON object such as {"profile.view": 1}`},
		{"empty object", `{}`, nil, `: no activities`},
		{"array", `["profile.view", 1]`, nil, `:1:1: found an array, want a JSON object such as {"profile.view": 1}`},
		{"number", `  1`, nil, `:1:3: found the number 1, want a JSON object`},
		{"string", `"profile.view"`, nil, `:1:1: found the string "profile.view", want a JSON object`},
		{"null", `null`, nil, `:1:1: found null, want a JSON object`},
		{"negative", "{\n  \"a\": -1\n}", nil, `:2:3: activity "a": score -1 is outside 0..1000000`},
		{"absurd", `{"a": 1000001}`, nil, `:1:2: activity "a": score 1000001 is outside 0..1000000`},
		{"huge", `{"a": 99999999999999999999}`, nil, `:1:7: activity "a": score 99999999999999999999 is not an integer in 0..1000000`},
		{"fraction", `{"a": 1.5}`, nil, `:1:7: activity "a": score 1.5 is not an integer in 0..1000000`},
		{"exponent", `{"a": 1e3}`, nil, `:1:7: activity "a": score 1e3 is not an integer in 0..1000000`},
		{"string score", `{"a": "2"}`, nil, `:1:7: activity "a": score is the string "2", want an integer`},
		{"null score", `{"a": null}`, nil, `:1:7: activity "a": score is null, want an integer`},
		{"boolean score", `{"a": true}`, nil, `:1:7: activity "a": score is true, want an integer`},
		{"object score", `{"a": {"b": 1}}`, nil, `:1:7: activity "a": score is an object, want an integer`},
		{"array score", `{"a": [1]}`, nil, `:1:7: activity "a": score is an array, want an integer`},
		{"duplicate", "{\"a\": 1,\n\"a\": 2}", nil, `:2:1: activity "a" appears twice`},
		{"duplicate through an escape", `{"a": 1, "\u0061": 2}`, nil, `:1:10: activity "a" appears twice`},
		{"bad name", `{"a,b": 1}`, nil, `:1:2: activity "a,b" holds ','`},
		{"empty name", `{"": 1}`, nil, `:1:2: empty activity name`},
		{"trailing comma", `{"a": 1,}`, nil, `: invalid JSON: invalid character '}' looking for beginning of object key string`},
		{"truncated", `{"a": 1`, nil, `: unexpected end of JSON`},
		{"two objects", `{"a": 1} {"b": 2}`, nil, `:1:10: data after the JSON object`},
		{"garbage after", `{"a": 1} x`, nil, `:1:10: data after the JSON object`},
		{"comma after", `{"a": 1},`, nil, `:1:9: data after the JSON object`},
		{"colon after", "{\"a\": 1}\n:", nil, `:2:1: data after the JSON object`},
		{"separators after", `{"a": 1} , : ,`, nil, `:1:10: data after the JSON object`},
		{"invalid UTF-8", "{\"a\xff\": 1}", nil, `:1:4: not valid UTF-8`},
		{"single quotes", `{'a': 1}`, nil, `:1:2: invalid JSON: invalid character '\''`},
		// Errors inside a value are placed by the whole input, not by the
		// bytes the decoder counted since its last value.
		{"bad value on a later line", "{\n  \"a\": 1,\n  \"b\": x\n}\n", nil, `:3:8: invalid JSON: invalid character 'x' looking for beginning of value`},
		{"bad fraction", `{"a": 1, "b": 1.}`, nil, `:1:17: invalid JSON: invalid character '}' after decimal point in numeric literal`},
		{"bad escape in a name", "{\"a\": 1,\r\n\"\\x\": 2}", nil, `:2:3: invalid JSON: invalid character 'x' in string escape code`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			table, err := score.ParseTable("scores.json", []byte(c.data))
			if c.want != nil {
				require.NoError(t, err)
				assert.Equal(t, c.want, maps.Collect(table.All()))
				return
			}
			require.Error(t, err)
			assert.Nil(t, table)
			assert.ErrorIs(t, err, score.ErrInvalidTable)
			assert.True(t, strings.HasPrefix(err.Error(), "invalid score table scores.json"), err.Error())
			assert.Contains(t, err.Error(), c.err)
		})
	}
}

func TestLoadTableFromFile(t *testing.T) {
	// A table written by hand for a pipeline, as a -scores flag would load
	// it.
	path := filepath.Join(t.TempDir(), "my scores.json")
	require.NoError(t, os.WriteFile(path, []byte(`{"like": 2, "view": 1, "share": 5}`), 0o600))
	table, err := score.LoadTable(path)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"like": 2, "view": 1, "share": 5}, maps.Collect(table.All()))

	require.NoError(t, os.WriteFile(path, []byte(`{"like": -2}`), 0o600))
	_, err = score.LoadTable(path)
	assert.ErrorIs(t, err, score.ErrInvalidTable)
	assert.EqualError(t, err, "invalid score table "+path+`:1:2: activity "like": score -2 is outside 0..1000000`)
}

// TestTableConcurrent reads one table from many goroutines, for the race
// detector.
func TestTableConcurrent(t *testing.T) {
	big := make(map[string]int64)
	for i := range 50 {
		big["a"+strconv.Itoa(i)] = int64(i)
	}
	bigTable, err := score.NewTable(big)
	require.NoError(t, err)
	var wg sync.WaitGroup
	var failed sync.Map
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				name := "a" + strconv.Itoa((g+i)%50)
				if s, ok := bigTable.ScoreString(name); !ok || s != int64((g+i)%50) {
					failed.Store(name, errors.New("wrong score"))
				}
				if s, ok := score.Default().ScoreString("profile.view"); !ok || s != 1 {
					failed.Store("profile.view", errors.New("wrong score"))
				}
			}
		})
	}
	wg.Wait()
	failed.Range(func(k, v any) bool {
		t.Errorf("%v: %v", k, v)
		return true
	})
}
