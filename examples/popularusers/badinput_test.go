package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readDeadLetters reads a -dead-letter file strictly: every line one dead
// letter with only the documented fields.
func readDeadLetters(t *testing.T, path string) []deadLetter {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []deadLetter
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		var d deadLetter
		require.NoError(t, dec.Decode(&d), "line %q", sc.Text())
		out = append(out, d)
	}
	require.NoError(t, sc.Err())
	return out
}

// Every kind of bad record, as the second line of a file after a good one:
// counted, dead-lettered with its kind, origin and error, and the good line
// counted as if the bad one were not there.
func TestBadRecordKinds(t *testing.T) {
	const goodCSV, goodJSON = "7,message.private", `{"user_id":7,"activity":"message.private"}`
	for _, tc := range []struct {
		name, good, bad, kind, err string
	}{
		{"too long", goodCSV, "8," + strings.Repeat("a", 70<<10), "record too long", "record too long"},
		{"empty", goodCSV, "", "empty record", "empty record"},
		{"white space", goodCSV, " \t ", "empty record", "empty record"},
		{"invalid UTF-8 csv", goodCSV, "8,profile.view\xff", "invalid UTF-8", "invalid UTF-8 at byte 14"},
		{"invalid UTF-8 json", goodJSON, "{\"user_id\":8,\"activity\":\"\xc3(\"}", "invalid UTF-8", "invalid UTF-8"},
		{"malformed csv: one field", goodCSV, "8", "malformed record", "malformed record"},
		{"malformed csv: three fields", goodCSV, "8,profile.view,x", "malformed record", "malformed record"},
		{"malformed csv: quote", goodCSV, `8,"profile.view"`, "malformed record", "malformed record"},
		{"malformed json: truncated", goodJSON, `{"user_id":8,"activity":"profile.view"`, "malformed record", "unexpected end of JSON"},
		{"bad user id: json string", goodJSON, `{"user_id":"8","activity":"profile.view"}`, "bad user id", "user_id is a string"},
		{"malformed json: missing activity", goodJSON, `{"user_id":8}`, "malformed record", "malformed record"},
		{"malformed json: not an object", goodJSON, `[8,"profile.view"]`, "malformed record", "malformed record"},
		{"bad user id: letters", goodCSV, "8a,profile.view", "bad user id", "bad user id"},
		{"bad user id: zero", goodCSV, "0,profile.view", "bad user id", "bad user id"},
		{"bad user id: negative", goodCSV, "-8,profile.view", "bad user id", "is negative"},
		{"bad user id: overflow", goodCSV, "9223372036854775808,profile.view", "bad user id", "out of range"},
		{"bad user id: json overflow", goodJSON, `{"user_id":99999999999999999999,"activity":"profile.view"}`, "bad user id", "bad user id"},
		{"bad user id: json fraction", goodJSON, `{"user_id":8.5,"activity":"profile.view"}`, "bad user id", "bad user id"},
		{"bad user id: json zero", goodJSON, `{"user_id":0,"activity":"profile.view"}`, "bad user id", "bad user id"},
		{"unknown activity csv", goodCSV, "8,profile.poke", "unknown activity", `unknown activity at byte 2: "profile.poke"`},
		{"unknown activity json", goodJSON, `{"user_id":8,"activity":"profile.poke"}`, "unknown activity", `"profile.poke"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			in, dead := filepath.Join(dir, "events"), filepath.Join(dir, "dead.jsonl")
			require.NoError(t, os.WriteFile(in, []byte(tc.good+"\n"+tc.bad+"\n"), 0o644))
			r := runMain(t, context.Background(), "", "-input", in, "-json", "-sketch", "exact", "-limit", "0.5", "-dead-letter", dead)
			require.Equal(t, exitOK, r.code)
			assert.Equal(t, `{"batch":1,"records":2,"bad":1,"users":1,"threshold":3,"popular":[]}`+"\n", r.stdout,
				"the good line counts as if the bad one were not there")
			assert.Contains(t, r.stderr, `msg="bad record" batch=1 origin=`+in+`:2 kind="`+tc.kind+`"`, "logged with its origin")
			assert.Contains(t, r.stderr, `"bad by kind"="`+tc.kind+`: 1"`, "counted by kind")
			assert.NotContains(t, r.stderr, `"dead_letter"`, "with -dead-letter, none goes to standard error")

			letters := readDeadLetters(t, dead)
			require.Len(t, letters, 1)
			d := letters[0]
			assert.Equal(t, in+":2", d.Origin)
			assert.Equal(t, tc.kind, d.Kind)
			assert.Contains(t, d.Error, tc.err)
			switch {
			case tc.kind == "invalid UTF-8":
				assert.Nil(t, d.Record)
				assert.Equal(t, tc.bad, string(d.RecordBase64), "a record that is not UTF-8 is kept whole, in base64")
			case tc.kind == "record too long":
				// The file source keeps the first bytes of a long line.
				require.NotNil(t, d.Record)
				assert.True(t, strings.HasPrefix(tc.bad, *d.Record))
			default:
				require.NotNil(t, d.Record)
				assert.Equal(t, tc.bad, *d.Record)
			}
		})
	}
}

// Bad lines of every kind among good ones, over several batches: the
// totals are exactly those of the good lines, and the dead-letter file
// holds exactly the bad lines, each with its file:line.
func TestBadLinesAmongGood(t *testing.T) {
	bad := []string{
		"", "   ", "1001", "1001,profile.view,x", "x,profile.view", "0,profile.view", "-5,profile.view",
		"9223372036854775808,profile.view", "1001,profile.poke", "1001,profile.view\xfe", `"1001",profile.view`,
		"1001," + strings.Repeat("v", 70<<10), "user_id,activity",
	}
	activities := []string{"profile.picture.like", "profile.view", "message.private"}
	rng := rand.New(rand.NewPCG(8, 8))
	var (
		file     strings.Builder
		ref      = newReference()
		wantDead = map[string]string{} // origin: record
	)
	file.WriteString("user_id,activity\n") // line 1, skipped
	for line := 2; line <= 3001; line++ {
		if rng.IntN(5) == 0 {
			b := bad[rng.IntN(len(bad))]
			wantDead[fmt.Sprintf("%s:%d", "FILE", line)] = b
			file.WriteString(b + "\n")
			continue
		}
		user, activity := 1000+rng.Int64N(300), activities[rng.IntN(len(activities))]
		ref.add(user, activity)
		fmt.Fprintf(&file, "%d,%s\n", user, activity)
	}
	dir := t.TempDir()
	in, dead := filepath.Join(dir, "mixed.csv"), filepath.Join(dir, "dead.jsonl")
	require.NoError(t, os.WriteFile(in, []byte(file.String()), 0o644))

	r := runMain(t, context.Background(), "", "-input", in, "-json", "-sketch", "exact", "-limit", "0.9", "-batch-records", "500", "-dead-letter", dead)
	require.Equal(t, exitOK, r.code)
	lines := parseLines(t, r.stdout)
	require.Len(t, lines, 6)
	records, badCount := 0, 0
	for _, l := range lines {
		records += l.Records
		badCount += l.Bad
	}
	assert.Equal(t, 3000, records)
	assert.Equal(t, len(wantDead), badCount)
	last := lines[len(lines)-1]
	assert.Equal(t, len(ref.totals), last.Users)
	threshold := ref.quantile(9, 10)
	require.NotNil(t, last.Threshold)
	assert.Equal(t, float64(threshold), *last.Threshold)
	assert.Equal(t, ref.above(float64(threshold)), popularOf(last), "the totals of the good lines, exactly")

	got := map[string]string{}
	for _, d := range readDeadLetters(t, dead) {
		o := strings.Replace(d.Origin, in, "FILE", 1)
		_, dup := got[o]
		require.False(t, dup, "%s dead-lettered twice", o)
		rec := string(d.RecordBase64)
		if d.Record != nil {
			rec = *d.Record
		}
		got[o] = rec
	}
	require.Len(t, got, len(wantDead))
	for o, want := range wantDead {
		if len(want) > 64<<10 {
			assert.True(t, strings.HasPrefix(want, got[o]), "%s: the start of the long line", o)
			continue
		}
		assert.Equal(t, want, got[o], o)
	}
}

// -max-bad-ratio: a batch with a greater share of bad records fails the
// run, with an error that says which batch, its ratio and the limit; the
// batches before it are reported.
func TestMaxBadRatio(t *testing.T) {
	// Two batches of 5: one bad in the first (0.2), two in the second (0.4).
	const input = "1,profile.view\n2,profile.view\nx\n3,profile.view\n4,profile.view\n" +
		"5,profile.view\ny\n6,profile.view\nz\n7,profile.view\n"
	for _, tc := range []struct {
		limit   string
		code    int
		batches int
		err     string
	}{
		{"0", exitOK, 2, ""},
		{"0.4", exitOK, 2, ""},
		{"0.3", exitFailure, 1, "popularusers run: stream: batch 2: "},
		{"0.1", exitFailure, 0, "batch 1: 1 of 5 records did not decode (ratio 0.2), over -max-bad-ratio 0.1: too many bad records"},
	} {
		t.Run(tc.limit, func(t *testing.T) {
			dead := filepath.Join(t.TempDir(), "dead.jsonl")
			r := runMain(t, context.Background(), input, "-input", "-", "-json", "-batch-records", "5", "-max-bad-ratio", tc.limit, "-dead-letter", dead)
			assert.Equal(t, tc.code, r.code)
			assert.Len(t, parseLines(t, r.stdout), tc.batches)
			assert.Contains(t, r.stderr, tc.err)
			if tc.limit == "0.3" {
				assert.Contains(t, r.stderr, "2 of 5 records did not decode (ratio 0.4), over -max-bad-ratio 0.3")
				assert.Len(t, readDeadLetters(t, dead), 3, "the failing batch's bad records are in the dead letters too")
			}
			// The run's last line counts every bad record dead-lettered,
			// the failing batch's too, and agrees with its count by kind.
			letters := len(readDeadLetters(t, dead))
			assert.Regexp(t, fmt.Sprintf(`msg=stopped batches=%d records=%d bad=%d "bad by kind"="malformed record: %d"`,
				tc.batches, 5*tc.batches, letters, letters), r.stderr)
		})
	}
}

func TestFaultFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"-input", "x", "-max-bad-ratio", "1"}, "-max-bad-ratio 1: must be 0 (off) or a share"},
		{[]string{"-input", "x", "-max-bad-ratio", "-0.1"}, "-max-bad-ratio -0.1"},
		{[]string{"-input", "x", "-max-bad-ratio", "NaN"}, "-max-bad-ratio NaN"},
		{[]string{"-input", "x", "-dlq-topic", "bad"}, "-dlq-topic takes the bad records of the Kafka input; with -input, use -dead-letter FILE"},
		{[]string{"-input", "x", "-connect-timeout", "1s"}, "-connect-timeout bounds the wait for Kafka brokers: with -input it needs -brokers"},
		{[]string{"-input", "in.csv", "-dead-letter", "./in.csv"}, `-dead-letter "./in.csv" is the -input file`},
		{[]string{"-input", "-", "-dead-letter", "-"}, `-dead-letter -: standard output is the report`},
		{[]string{"-input", "in.csv", "-dead-letter", "-"}, `-dead-letter -: standard output is the report`},
		{[]string{"-brokers", "h:1", "-connect-timeout", "0s"}, "-connect-timeout 0s: must be positive"},
		{[]string{"-brokers", "h:1", "-dlq-topic", "messages"}, `-dlq-topic "messages" must differ`},
		{[]string{"-brokers", "h:1", "-exactly-once", "-output-retry", "10s"}, "-output-retry 10s: with -exactly-once a failed write aborts the batch's transaction"},
		{[]string{"-brokers", "h:1", "-topic", "in", "-out-topic", "in.dlq"}, `-dlq-topic "in.dlq" must differ`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runMain(t, context.Background(), "", tc.args...)
			assert.Equal(t, exitUsage, r.code)
			assert.Contains(t, r.stderr, tc.err)
		})
	}
	t.Run("defaults", func(t *testing.T) {
		c, err := parseRun([]string{"-brokers", "h:1", "-topic", "in"}, &buffer{})
		require.NoError(t, err)
		assert.Equal(t, "in.dlq", c.faults.dlqTopic)
		c, err = parseRun([]string{"-brokers", "h:1", "-dlq-topic="}, &buffer{})
		require.NoError(t, err)
		assert.Empty(t, c.faults.dlqTopic, "an empty -dlq-topic sends no dead letter to Kafka")
		c, err = parseRun([]string{"-input", "x"}, &buffer{})
		require.NoError(t, err)
		assert.Empty(t, c.faults.dlqTopic)
		assert.Zero(t, c.faults.maxBadRatio)
	})
}

// A total saturates at the largest int64 instead of wrapping around to a
// negative one.
func TestAddScoresSaturates(t *testing.T) {
	for _, tc := range []struct {
		sum       int64
		points    []int64
		want      int64
		saturated bool
	}{
		{0, nil, 0, false},
		{5, []int64{1, 2, 3}, 11, false},
		{math.MaxInt64 - 3, []int64{3}, math.MaxInt64, false},
		{math.MaxInt64 - 3, []int64{2, 2}, math.MaxInt64, true},
		{math.MaxInt64, []int64{1_000_000}, math.MaxInt64, true},
		{math.MaxInt64, []int64{0}, math.MaxInt64, false},
	} {
		t.Run(strconv.FormatInt(tc.sum, 10), func(t *testing.T) {
			got, saturated := addScores(tc.sum, tc.points)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.saturated, saturated)
		})
	}
}

// A rerun that resumes from a checkpoint skips the lines it already
// counted, so the dead letters of those lines are kept: the -dead-letter
// file is appended to, not created anew.
func TestDeadLetterFileKeptAcrossResumedRuns(t *testing.T) {
	dir := t.TempDir()
	in, dead, ckpt := filepath.Join(dir, "events"), filepath.Join(dir, "dead.jsonl"), filepath.Join(dir, "ckpt")
	args := []string{"-input", in, "-json", "-checkpoint", ckpt, "-dead-letter", dead}
	require.NoError(t, os.WriteFile(in, []byte("1,profile.view\nx\n"), 0o644))
	r := runMain(t, context.Background(), "", args...)
	require.Equal(t, exitOK, r.code)
	require.Len(t, readDeadLetters(t, dead), 1)

	f, err := os.OpenFile(in, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("2,profile.view\ny\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	r = runMain(t, context.Background(), "", args...)
	require.Equal(t, exitOK, r.code)
	var origins []string
	for _, d := range readDeadLetters(t, dead) {
		origins = append(origins, d.Origin)
	}
	assert.Equal(t, []string{in + ":2", in + ":4"}, origins, "the first run's dead letter is still there")

	// Without a checkpoint every run reads the whole input again: its dead
	// letters are those of this run alone.
	r = runMain(t, context.Background(), "", "-input", in, "-json", "-dead-letter", dead)
	require.Equal(t, exitOK, r.code)
	assert.Len(t, readDeadLetters(t, dead), 2)
}
