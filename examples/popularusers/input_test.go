package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream/checkpoint"
)

// readCSV reads the rows of a file written by generate.
func readCSV(t *testing.T, path string) [][2]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var rows [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		user, activity, ok := strings.Cut(sc.Text(), ",")
		require.True(t, ok, "row %q", sc.Text())
		rows = append(rows, [2]string{user, activity})
	}
	require.NoError(t, sc.Err())
	return rows
}

// The original's static data set, written by generate and read with
// -input: every batch's threshold and popular users against an exact
// computation over the rows read so far.
func TestInputGeneratedCSV(t *testing.T) {
	const (
		users = 3000
		rows  = 120_000
		batch = 30_000
	)
	path := filepath.Join(t.TempDir(), "data.csv")
	r := runMain(t, context.Background(), "", "generate", "-o", path,
		"-users", strconv.Itoa(users), "-rows", strconv.Itoa(rows), "-start", "1000", "-seed", "5")
	require.Equal(t, exitOK, r.code)
	data := readCSV(t, path)
	require.Len(t, data, rows)

	for _, tc := range []struct {
		name        string
		args        []string
		compression float64 // 0: exact
	}{
		{"exact", []string{"-sketch", "exact"}, 0},
		{"tdigest", nil, 1000},
		{"tdigest at compression 20", []string{"-compression", "20"}, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-input", path, "-json", "-batch-records", strconv.Itoa(batch)}, tc.args...)
			r := runMain(t, context.Background(), "", args...)
			require.Equal(t, exitOK, r.code)
			lines := parseLines(t, r.stdout)
			require.Len(t, lines, rows/batch)
			ref := newReference()
			for i, l := range lines {
				for _, row := range data[i*batch : (i+1)*batch] {
					user, err := strconv.ParseInt(row[0], 10, 64)
					require.NoError(t, err)
					require.True(t, user >= 1000 && user <= 1000+users, "user %d in range", user)
					ref.add(user, row[1])
				}
				assert.Equal(t, int64(i+1), l.Batch)
				assert.Equal(t, batch, l.Records)
				assert.Zero(t, l.Bad)
				assert.Equal(t, len(ref.totals), l.Users, "users in state")
				require.NotNil(t, l.Threshold, "batch %d", l.Batch)
				if tc.compression == 0 {
					assert.Equal(t, float64(ref.quantile(95, 100)), *l.Threshold, "exact threshold of batch %d", l.Batch)
				} else {
					bound := tdigestBound(0.95, tc.compression, len(ref.totals))
					assert.LessOrEqual(t, ref.rankError(*l.Threshold, 0.95), bound,
						"rank error of threshold %v in batch %d (exact %d)", *l.Threshold, l.Batch, ref.quantile(95, 100))
				}
				assert.Equal(t, ref.above(*l.Threshold), popularOf(l), "popular users of batch %d", l.Batch)
			}
		})
	}
}

// small is an input with a header, a bad record and ties, small enough to
// write its output by hand.
const small = `user_id,activity
1,profile.view
2,message.private
3,nope
3,profile.picture.like
1,message.private
4,profile.view
2,profile.view
`

// smallJSON is small as JSON lines, with an extra field a producer added
// and the bad record malformed.
const smallJSON = `{"user_id": 1, "activity": "profile.view"}
{"activity": "message.private", "user_id": 2}
{"user_id": 3, "activity": "profile.picture.like"
{"user_id": 3, "activity": "profile.picture.like", "client": "web"}
{"user_id":1,"activity":"message.private"}
{"user_id":4,"activity":"profile.view"}
{"user_id":2,"activity":"profile.view"}
`

// smallOut is the -json output of small and smallJSON with -limit 0.5
// -batch-records 3: the median of 2 totals is the lower one, of 4 the
// second; the tie at 4 in batch 3 is ordered by user id.
const smallOut = `{"batch":1,"records":3,"bad":1,"users":2,"threshold":1,"popular":[{"user_id":2,"score":3}]}
{"batch":2,"records":3,"bad":0,"users":4,"threshold":2,"popular":[{"user_id":1,"score":4},{"user_id":2,"score":3}]}
{"batch":3,"records":1,"bad":0,"users":4,"threshold":2,"popular":[{"user_id":1,"score":4},{"user_id":2,"score":4}]}
`

func TestJSONOutputFormat(t *testing.T) {
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "small.csv")
	require.NoError(t, os.WriteFile(csvPath, []byte(small), 0o644))
	jsonPath := filepath.Join(dir, "small.json")
	require.NoError(t, os.WriteFile(jsonPath, []byte(smallJSON), 0o644))
	// The bad record is line 4 (the CSV header is line 1).
	for _, tc := range []struct {
		name, path, stdin, deadLetter string
	}{
		{"csv", csvPath, "", `{"dead_letter":"` + csvPath + `:4","kind":"unknown activity","error":"unknown activity at byte 2: \"nope\"","record":"3,nope"}`},
		{"csv on stdin", "-", small, `{"dead_letter":"stdin:4","kind":"unknown activity"`},
		{"json lines", jsonPath, "", `{"dead_letter":"` + jsonPath + `:3","kind":"malformed record"`},
	} {
		for _, sketch := range []string{"exact", "tdigest"} {
			t.Run(tc.name+"/"+sketch, func(t *testing.T) {
				r := runMain(t, context.Background(), tc.stdin, "-input", tc.path, "-json", "-limit", "0.5", "-batch-records", "3", "-sketch", sketch)
				require.Equal(t, exitOK, r.code)
				assert.Equal(t, smallOut, r.stdout)
				assert.Contains(t, r.stderr, tc.deadLetter, "the bad record is in the dead letters with its origin")
				assert.Contains(t, r.stderr, "bad records sent to the dead letters")
			})
		}
	}
}

func TestSummaryOutput(t *testing.T) {
	r := runMain(t, context.Background(), small, "-input", "-", "-limit", "0.5", "-batch-records", "3")
	require.Equal(t, exitOK, r.code)
	blocks := strings.Split(r.stdout, "batch ")[1:]
	require.Len(t, blocks, 3, "one summary per batch")
	assert.Regexp(t, `^2 at \d\d:\d\d:\d\d: 3 records \(\d+/s\), 0 bad; 4 users; threshold 2; 2 popular\n`, blocks[1])
	assert.Equal(t, []string{"user", "score", "1", "4", "2", "3"}, strings.Fields(strings.SplitN(blocks[1], "\n", 2)[1]))
}

func TestInputEdgeCases(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, stdin string
		code        int
		stdout      string
		stderr      string
	}{
		{"empty input is one empty batch", "", exitOK,
			`{"batch":1,"records":0,"bad":0,"users":0,"threshold":null,"popular":[]}` + "\n", ""},
		{"a header alone is one empty batch", "user_id,activity\r\n", exitOK,
			`{"batch":1,"records":0,"bad":0,"users":0,"threshold":null,"popular":[]}` + "\n", ""},
		{"only bad records", "1,nope\n", exitOK,
			`{"batch":1,"records":1,"bad":1,"users":0,"threshold":null,"popular":[]}` + "\n", `"kind":"unknown activity"`},
		{"unknown format", "hello\n1,profile.view\n", exitFailure, "",
			`popularusers run: input -: line 1 is neither a JSON event nor a CSV row user_id,activity: "hello"`},
		// The format is told from the first line that is not blank; the
		// blank lines before it are bad records, as blank lines anywhere.
		{"blank lines before the first row", "\n \t\r\n1001,profile.view\n1002,message.private\n", exitOK,
			`{"batch":1,"records":4,"bad":2,"users":2,"threshold":3,"popular":[]}` + "\n",
			`{"dead_letter":"stdin:2","kind":"empty record","error":"empty record","record":" \t"}`},
		{"a blank line before the first event", "\n" + `{"user_id":1001,"activity":"profile.view"}` + "\n", exitOK,
			`{"batch":1,"records":2,"bad":1,"users":1,"threshold":1,"popular":[]}` + "\n",
			`{"dead_letter":"stdin:1","kind":"empty record","error":"empty record","record":""}`},
		{"blank lines alone", "\n\n", exitOK,
			`{"batch":1,"records":2,"bad":2,"users":0,"threshold":null,"popular":[]}` + "\n", `"kind":"empty record"`},
		{"unknown format after a blank line", "\nhello\n", exitFailure, "",
			`popularusers run: input -: line 2 is neither a JSON event nor a CSV row user_id,activity: "hello"`},
		{"too many blank lines to tell the format", strings.Repeat("\n", maxLeadingBlank+1) + "1001,profile.view\n", exitFailure, "",
			fmt.Sprintf("popularusers run: input -: lines 1 to %d are blank: no line to tell the format from", maxLeadingBlank)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runMain(t, context.Background(), tc.stdin, "-input", "-", "-json")
			assert.Equal(t, tc.code, r.code)
			assert.Equal(t, tc.stdout, r.stdout)
			assert.Contains(t, r.stderr, tc.stderr)
		})
	}
	t.Run("missing file", func(t *testing.T) {
		missing := filepath.Join(dir, "missing.csv")
		r := runMain(t, context.Background(), "", "-input", missing)
		assert.Equal(t, exitFailure, r.code)
		assert.Contains(t, r.stderr, "popularusers run: input: source: open "+missing+": no such file or directory")
	})
}

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	gen := func(name string, args ...string) []byte {
		path := filepath.Join(dir, name)
		r := runMain(t, context.Background(), "", append([]string{"generate", "-o", path}, args...)...)
		require.Equal(t, exitOK, r.code)
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		return data
	}
	a := gen("a.csv", "-rows", "5000", "-users", "100", "-start", "50", "-seed", "9")
	b := gen("b.csv", "-rows", "5000", "-users", "100", "-start", "50", "-seed", "9")
	c := gen("c.csv", "-rows", "5000", "-users", "100", "-start", "50", "-seed", "10")
	assert.Equal(t, a, b, "the same seed gives the same file")
	assert.NotEqual(t, a, c, "another seed another")

	rows := readCSV(t, filepath.Join(dir, "a.csv"))
	require.Len(t, rows, 5000)
	seen := map[string]bool{}
	for _, row := range rows {
		user, err := strconv.Atoi(row[0])
		require.NoError(t, err)
		assert.True(t, user >= 50 && user <= 150, "user %d within start..start+users", user)
		assert.Contains(t, scoreOf, row[1])
		seen[row[1]] = true
	}
	assert.Len(t, seen, 3, "every activity appears")

	fi, err := os.Stat(filepath.Join(dir, "a.csv"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 3, "no temporary file left")

	r := runMain(t, context.Background(), "", "generate", "-o", "-", "-rows", "3", "-seed", "9", "-users", "100", "-start", "50")
	require.Equal(t, exitOK, r.code)
	assert.Equal(t, string(a[:len(r.stdout)]), r.stdout, "-o - writes the same rows to stdout")
	assert.Equal(t, 3, strings.Count(r.stdout, "\n"))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r = runMain(t, ctx, "", "generate", "-o", filepath.Join(dir, "stopped.csv"), "-rows", "1000")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "interrupted after 0 of 1000 rows")
	assert.NoFileExists(t, filepath.Join(dir, "stopped.csv"))
}

// Totals that are all distinct (1..1000, one per user) leave a t-digest no
// ties to land on: at low compression its threshold is an estimate, which
// must be within the digest's documented rank error, and the popular users
// exactly those above it. -batch-records 0 reads the file as one batch.
func TestInputTDigestWithinItsBound(t *testing.T) {
	const users = 1000
	rng := rand.New(rand.NewPCG(1, 2))
	activity := map[int64]string{1: "profile.view", 2: "profile.picture.like", 3: "message.private"}
	ref := newReference()
	var rows []string
	for i, total := range rng.Perm(users) {
		user := int64(1000 + i)
		for left := int64(total + 1); left > 0; {
			s := min(left, 1+rng.Int64N(3))
			rows = append(rows, fmt.Sprintf("%d,%s", user, activity[s]))
			ref.add(user, activity[s])
			left -= s
		}
	}
	rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	path := filepath.Join(t.TempDir(), "distinct.csv")
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(rows, "\n")+"\n"), 0o644))
	exact := ref.quantile(95, 100)
	require.Equal(t, int64(950), exact)

	for _, compression := range []float64{10, 100, 1000} {
		t.Run(fmt.Sprint(compression), func(t *testing.T) {
			r := runMain(t, context.Background(), "", "-input", path, "-json", "-batch-records", "0", "-compression", fmt.Sprint(compression))
			require.Equal(t, exitOK, r.code)
			lines := parseLines(t, r.stdout)
			require.Len(t, lines, 1)
			l := lines[0]
			assert.Equal(t, len(rows), l.Records)
			assert.Equal(t, users, l.Users)
			require.NotNil(t, l.Threshold)
			t.Logf("threshold %v, exact %d", *l.Threshold, exact)
			assert.LessOrEqual(t, ref.rankError(*l.Threshold, 0.95), tdigestBound(0.95, compression, users))
			assert.Equal(t, ref.above(*l.Threshold), popularOf(l))
		})
	}
}

// A rerun of a file with -checkpoint resumes it, however its path is
// written: its offsets are kept under its absolute path. A rerun of the
// file as it was prints no batch; one of the file grown counts the new
// lines alone.
func TestInputRerunByAnotherPathResumes(t *testing.T) {
	dir := t.TempDir()
	var rows strings.Builder
	for i := range 4000 {
		fmt.Fprintf(&rows, "%d,profile.view\n", 1000+i%200) // every user: 20 views, 20 points
	}
	path := filepath.Join(dir, "events.csv")
	require.NoError(t, os.WriteFile(path, []byte(rows.String()), 0o644))
	ckpt := filepath.Join(dir, "checkpoint")
	t.Chdir(dir)
	for i, p := range []string{path, "events.csv", "./events.csv", filepath.Join(dir, ".", "events.csv")} {
		if i > 0 {
			r := runMain(t, context.Background(), "", "-input", p, "-json", "-sketch", "exact", "-checkpoint", ckpt)
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Empty(t, parseLines(t, r.stdout), "-input %s: a batch of lines counted before", p)

			var more strings.Builder
			for u := range 200 {
				fmt.Fprintf(&more, "%d,profile.view\n", 1000+u) // every user: one view more
			}
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteString(more.String())
			require.NoError(t, errors.Join(err, f.Close()))
		}
		r := runMain(t, context.Background(), "", "-input", p, "-json", "-sketch", "exact", "-checkpoint", ckpt)
		require.Equal(t, exitOK, r.code, r.stderr)
		lines := parseLines(t, r.stdout)
		require.NotEmpty(t, lines)
		last := lines[len(lines)-1]
		require.NotNil(t, last.Threshold)
		assert.Equal(t, float64(20+i), *last.Threshold, "-input %s: every user's total counts each line once", p)
	}
}

// A file replaced by a shorter one, rerun with its checkpoint, fails as it
// ends, saying why, rather than taking its lines for counted; with
// -reset-checkpoint, it is counted anew.
func TestInputReplacedByAShorterFileFails(t *testing.T) {
	dir := t.TempDir()
	path, ckpt := filepath.Join(dir, "events.csv"), filepath.Join(dir, "checkpoint")
	require.NoError(t, os.WriteFile(path, []byte("1001,profile.view\n1002,profile.view\n1003,profile.view\n"), 0o644))
	r := runMain(t, context.Background(), "", "-input", path, "-json", "-checkpoint", ckpt)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.NoError(t, os.WriteFile(path, []byte("2001,profile.view\n"), 0o644))
	r = runMain(t, context.Background(), "", "-input", path, "-json", "-checkpoint", ckpt)
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "stream: source "+path+" ended at offset 1, below 4, up to which the restored state had counted its records: the input is not the one checkpointed")
	r = runMain(t, context.Background(), "", "-input", path, "-json", "-checkpoint", ckpt, "-reset-checkpoint")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := parseLines(t, r.stdout)
	require.NotEmpty(t, lines)
	assert.Equal(t, 1, lines[len(lines)-1].Users)
}

// A checkpoint file that fails its checksum as the state is restored
// fails the run naming it, and says how to start from empty totals, as a
// corrupt MANIFEST does when the directory is opened.
func TestCorruptCheckpointFileFails(t *testing.T) {
	dir := t.TempDir()
	path, ckpt := filepath.Join(dir, "events.csv"), filepath.Join(dir, "checkpoint")
	require.NoError(t, os.WriteFile(path, []byte("1001,profile.view\n1002,profile.view\n"), 0o644))
	r := runMain(t, context.Background(), "", "-input", path, "-json", "-checkpoint", ckpt)
	require.Equal(t, exitOK, r.code, r.stderr)
	files, err := filepath.Glob(filepath.Join(ckpt, "*.ckpt"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	b, err := os.ReadFile(files[0])
	require.NoError(t, err)
	b[len(b)/2] ^= 0xff
	require.NoError(t, os.WriteFile(files[0], b, 0o644))

	r = runMain(t, context.Background(), "", "-input", path, "-json", "-checkpoint", ckpt)
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, files[0])
	assert.Contains(t, r.stderr, "(to start from empty totals on purpose, run with -reset-checkpoint)")
	r = runMain(t, context.Background(), "", "-input", path, "-json", "-checkpoint", ckpt, "-reset-checkpoint")
	require.Equal(t, exitOK, r.code, r.stderr)
}

// One checkpoint directory belongs to one process: a second run pointed
// at a directory in use fails at once, naming it, instead of writing over
// the first one's checkpoint; once the first is done, the directory is
// free.
func TestCheckpointInUseFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.csv")
	require.NoError(t, os.WriteFile(path, []byte("1,profile.view\n2,profile.view\n"), 0o644))
	ckpt := filepath.Join(dir, "checkpoint")
	held, err := checkpoint.Open(ckpt) // another process's, as this one takes it
	require.NoError(t, err)
	r := runMain(t, context.Background(), "", "-input", path, "-json", "-checkpoint", ckpt)
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "checkpoint: directory in use: "+ckpt+": one checkpoint directory belongs to one pipeline at a time")
	assert.Empty(t, r.stdout, "nothing read")
	require.NoError(t, held.Close())

	r = runMain(t, context.Background(), "", "-input", path, "-json", "-checkpoint", ckpt)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Len(t, parseLines(t, r.stdout), 1)
}

// -input naming a named pipe that no writer has opened yet waits for one,
// but not past a cancellation (a signal): the run ends at once, exit 0.
func TestInputNamedPipeWithoutAWriterStopsOnCancel(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "events")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	r := runMain(t, ctx, "", "-input", fifo, "-json")
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Empty(t, r.stdout, "no batch: nothing was read")
	assert.Less(t, time.Since(start), 10*time.Second)
}

// A file whose last line has no line ending, run with a checkpoint, gets a
// warning: appended to, its rerun would not count the rest of that line.
// One that ends with a line ending, or run without a checkpoint, gets none.
func TestInputLastLineWithoutALineEndingWarns(t *testing.T) {
	const warning = "the input's last line has no line ending"
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
		checkpoint    bool
		warn          bool
	}{
		{"unended, checkpointed", "1001,profile.view\n1002,profile.vi", true, true},
		{"ended, checkpointed", "1001,profile.view\n", true, false},
		{"unended, no checkpoint", "1001,profile.view\n1002,profile.vi", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "")+".csv")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o644))
			args := []string{"-input", path, "-json"}
			if tc.checkpoint {
				args = append(args, "-checkpoint", filepath.Join(dir, "ck-"+strings.ReplaceAll(tc.name, " ", "")))
			}
			r := runMain(t, context.Background(), "", args...)
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Equal(t, tc.warn, strings.Contains(r.stderr, warning), r.stderr)
		})
	}
}
