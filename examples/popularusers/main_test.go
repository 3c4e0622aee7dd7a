package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// mainEnv makes the test binary run the program itself, for the tests that
// need a process of their own (signals).
const mainEnv = "POPULARUSERS_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		main()
		return
	}
	// sarama's metrics start one process-wide goroutine that never ends;
	// after a failed produce, sarama's circuit breaker sleeps 10s in a
	// goroutine of its own before it ends.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
		goleak.IgnoreAnyFunction("github.com/eapache/go-resiliency/breaker.(*Breaker).timer"))
}

// buffer is a bytes.Buffer safe for concurrent use.
type buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the complete lines written so far.
func (b *buffer) lines() []string {
	s := b.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}

// result is what a command printed and returned.
type result struct {
	code           int
	stdout, stderr string
}

// runMain runs the program in-process with args and stdin.
func runMain(t *testing.T, ctx context.Context, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr buffer
	code := run(ctx, args, strings.NewReader(stdin), &stdout, &stderr)
	r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("popularusers %s: exit %d\nstdout:\n%.4000s\nstderr:\n%.4000s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
	})
	return r
}

// batchLine is one line of -json output.
type batchLine struct {
	Batch     int64    `json:"batch"`
	Records   int      `json:"records"`
	Bad       int      `json:"bad"`
	Users     int      `json:"users"`
	Threshold *float64 `json:"threshold"`
	Popular   []struct {
		UserID int64 `json:"user_id"`
		Score  int64 `json:"score"`
	} `json:"popular"`
}

// parseLines parses -json output strictly: every line one batch object
// with exactly the documented fields.
func parseLines(t *testing.T, out string) []batchLine {
	t.Helper()
	var lines []batchLine
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		var l batchLine
		require.NoError(t, dec.Decode(&l), "line %q", sc.Text())
		lines = append(lines, l)
	}
	require.NoError(t, sc.Err())
	return lines
}

// userScore is a user and a total, as the reference computes them.
type userScore struct{ user, score int64 }

// popularOf returns the users of a line, in its order.
func popularOf(l batchLine) []userScore {
	out := make([]userScore, len(l.Popular))
	for i, p := range l.Popular {
		out[i] = userScore{p.UserID, p.Score}
	}
	return out
}

// reference computes what the pipeline must find, independently of the
// digest package: the exact q-quantile of the totals by its definition
// (the value of rank ⌈q·n⌉, q given as num/den so that the rank is exact
// integer arithmetic) and the users strictly above a threshold.
type reference struct {
	totals map[int64]int64
}

func newReference() *reference { return &reference{totals: map[int64]int64{}} }

var scoreOf = map[string]int64{"profile.picture.like": 2, "profile.view": 1, "message.private": 3}

func (r *reference) add(user int64, activity string) {
	s, ok := scoreOf[activity]
	if !ok {
		panic("unknown activity " + activity)
	}
	r.totals[user] += s
}

func (r *reference) sorted() []int64 {
	vals := make([]int64, 0, len(r.totals))
	for _, v := range r.totals {
		vals = append(vals, v)
	}
	slices.Sort(vals)
	return vals
}

// quantile returns the exact num/den-quantile of the totals.
func (r *reference) quantile(num, den int) int64 {
	vals := r.sorted()
	n := len(vals)
	rank := (num*n + den - 1) / den // ⌈num·n/den⌉
	return vals[min(max(rank, 1), n)-1]
}

// above returns the users whose total is strictly greater than threshold,
// by score descending, then user id.
func (r *reference) above(threshold float64) []userScore {
	out := []userScore{} // as popularOf: empty, not nil
	for u, s := range r.totals {
		if float64(s) > threshold {
			out = append(out, userScore{u, s})
		}
	}
	slices.SortFunc(out, func(a, b userScore) int { return cmp.Or(cmp.Compare(b.score, a.score), cmp.Compare(a.user, b.user)) })
	return out
}

// rankError returns how far q lies outside the ranks v holds among the
// totals, [#{x < v}/n, #{x ≤ v}/n], as the digest package defines it.
func (r *reference) rankError(v, q float64) float64 {
	vals := r.sorted()
	n := float64(len(vals))
	below, atOrBelow := 0, 0
	for _, x := range vals {
		if float64(x) < v {
			below++
		}
		if float64(x) <= v {
			atOrBelow++
		}
	}
	return max(0, float64(below)/n-q, q-float64(atOrBelow)/n)
}

// tdigestBound is the digest package's documented bound on the rank error
// of TDigest at compression c over n values.
func tdigestBound(q, c float64, n int) float64 {
	return math.Pi*math.Sqrt(q*(1-q))/(4*c) + 2/float64(n)
}

// testLogger returns a logger writing to w.
func testLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: still waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
