package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
)

// process is the program running in a process of its own: this test
// binary, which TestMain turns into the program.
type process struct {
	cmd            *exec.Cmd
	stdout, stderr *buffer
	stdin          *os.File // the write end of its standard input
}

func start(t *testing.T, args ...string) *process {
	t.Helper()
	return startIn(t, "", args...)
}

// startIn is start with dir as the working directory ("": the test's).
func startIn(t *testing.T, dir string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	return startCmd(t, cmd, args)
}

// startIgnoringSIGINT starts the program as a shell script's background
// job is started: with SIGINT ignored.
func startIgnoringSIGINT(t *testing.T, args ...string) *process {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to start the program with SIGINT ignored")
	}
	return startCmd(t, exec.Command(sh, append([]string{"-c", `trap '' INT; exec "$0" "$@"`, os.Args[0]}, args...)...), args)
}

func startCmd(t *testing.T, cmd *exec.Cmd, args []string) *process {
	t.Helper()
	p := &process{cmd: cmd, stdout: &buffer{}, stderr: &buffer{}}
	p.cmd.Env = append(os.Environ(), mainEnv+"=1")
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	r, w, err := os.Pipe()
	require.NoError(t, err)
	p.cmd.Stdin, p.stdin = r, w
	require.NoError(t, p.cmd.Start())
	r.Close()
	t.Cleanup(func() {
		p.stdin.Close()
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("popularusers %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), tail(p.stdout.String()), tail(p.stderr.String()))
		}
	})
	return p
}

// tail returns the end of a process's output, where a failure shows: its
// last 4000 bytes from a line's start.
func tail(s string) string {
	const max = 4000
	if len(s) <= max {
		return s
	}
	s = s[len(s)-max:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "[…]\n" + s
}

// stop sends sig and returns the exit code, failing if the process takes
// longer than d to exit.
func (p *process) stop(t *testing.T, sig os.Signal, d time.Duration) int {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("still running %v after %v", sig, d)
		return -1
	}
}

// SIGINT while reading a pipe that stays open: the batch being collected
// is cut and processed, every record read is reported, and the exit is 0.
func TestSignalFinishesTheBatch(t *testing.T) {
	const first, more = 1000, 500
	rng := rand.New(rand.NewPCG(3, 4))
	activities := []string{"profile.view", "profile.picture.like", "message.private"}
	var rows []string
	for range first + more {
		rows = append(rows, fmt.Sprintf("%d,%s", 1+rng.IntN(100), activities[rng.IntN(3)]))
	}
	p := start(t, "-input", "-", "-json", "-interval", "200ms", "-sketch", "exact")
	_, err := p.stdin.WriteString(strings.Join(rows[:first], "\n") + "\n")
	require.NoError(t, err)
	reported := func() int {
		n := 0
		for _, l := range parseLines(t, strings.Join(p.stdout.lines(), "\n")) {
			n += l.Records
		}
		return n
	}
	waitFor(t, 30*time.Second, "the first rows reported", func() bool { return reported() == first })
	// More rows, and the signal at once: some of them are in the batch
	// being collected.
	_, err = p.stdin.WriteString(strings.Join(rows[first:], "\n") + "\n")
	require.NoError(t, err)
	assert.Equal(t, exitOK, p.stop(t, syscall.SIGINT, 30*time.Second))

	lines := parseLines(t, p.stdout.String())
	read := reported()
	assert.GreaterOrEqual(t, read, first)
	assert.LessOrEqual(t, read, first+more)
	ref := newReference()
	for _, row := range rows[:read] {
		var user int64
		var activity string
		_, err := fmt.Sscanf(strings.Replace(row, ",", " ", 1), "%d %s", &user, &activity)
		require.NoError(t, err)
		ref.add(user, activity)
	}
	last := lines[len(lines)-1]
	require.NotNil(t, last.Threshold)
	assert.Equal(t, float64(ref.quantile(95, 100)), *last.Threshold, "the last batch counts every row read")
	require.NotEmpty(t, last.Popular)
	assert.Equal(t, ref.above(*last.Threshold), popularOf(last))
	assert.Contains(t, p.stderr.String(), "msg=stopped")
}

// The default command stopped with SIGTERM: the pipeline finishes its
// batch, the producer and the broker stop, and the exit is 0.
func TestSignalStopsTheEmbeddedBroker(t *testing.T) {
	p := start(t, "-listen", "127.0.0.1:0", "-interval", "300ms", "-json")
	waitFor(t, 30*time.Second, "popular users", func() bool {
		for _, l := range parseLines(t, strings.Join(p.stdout.lines(), "\n")) {
			if len(l.Popular) > 0 {
				return true
			}
		}
		return false
	})
	assert.Equal(t, exitOK, p.stop(t, syscall.SIGTERM, 30*time.Second))
	assert.True(t, strings.HasSuffix(p.stdout.String(), "]}\n"), "the last line is whole")
	assert.Contains(t, p.stderr.String(), "msg=stopped")
	assert.NotContains(t, p.stderr.String(), "level=ERROR")
}

// A second SIGINT ends the process at once, while the first (and a copy of
// it that follows within signalRepeat) waits for a
// batch whose output cannot be delivered, even when the process started
// with SIGINT ignored, as a shell script's background job does (where
// Go's default handling, once the first signal is handled, ignores it).
func TestSecondSignalExitsAtOnce(t *testing.T) {
	b := start(t, "broker", "-listen", "127.0.0.1:0")
	waitFor(t, 30*time.Second, "the broker's address", func() bool { return len(b.stdout.lines()) > 0 })
	addr := b.stdout.lines()[0]
	require.Equal(t, exitOK, runMain(t, t.Context(), "", "produce", "-brokers", addr, "-count", "100", "-rate", "0").code)
	p := startIgnoringSIGINT(t, "-brokers", addr, "-checkpoint", t.TempDir(), "-interval", "300ms",
		"-threshold-topic", "missing", "-output-retry", "1m")
	waitFor(t, 30*time.Second, "the output retried", func() bool {
		return strings.Contains(p.stderr.String(), "output failed; retrying")
	})
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
	// timeout(1) sends its signal to the process and to its group: the
	// copy, a moment later, is not a second signal.
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
	// ProcessState stays nil until Wait, exited or not: the process
	// shows it still runs by retrying on.
	retries := func() int { return strings.Count(p.stderr.String(), "output failed; retrying") }
	n := retries()
	waitFor(t, 30*time.Second, "the first signal and its copy to wait for the batch, retrying on", func() bool {
		return retries() > n
	})
	assert.NotEqual(t, exitOK, p.stop(t, syscall.SIGINT, 10*time.Second))
	assert.Equal(t, exitOK, b.stop(t, syscall.SIGINT, 30*time.Second))
}

// The broker command serves other processes until SIGINT, and keeps its
// records in -data-dir across a restart.
func TestBrokerCommand(t *testing.T) {
	dir := t.TempDir()
	startBroker := func() (*process, string) {
		p := start(t, "broker", "-listen", "127.0.0.1:0", "-partitions", "3", "-data-dir", dir)
		waitFor(t, 30*time.Second, "the broker's address", func() bool { return len(p.stdout.lines()) > 0 })
		return p, p.stdout.lines()[0]
	}
	b, addr := startBroker()
	r := runMain(t, t.Context(), "", "produce", "-brokers", addr, "-count", "100", "-rate", "0")
	require.Equal(t, exitOK, r.code)
	assert.Equal(t, exitOK, b.stop(t, syscall.SIGINT, 30*time.Second))

	_, addr = startBroker()
	stdout, _, stop := runInBackground(t, "-brokers", addr, "-json", "-interval", "300ms", "-checkpoint", t.TempDir())
	waitFor(t, time.Minute, "the records produced before the restart", func() bool {
		read := 0
		for _, l := range parseLines(t, strings.Join(stdout.lines(), "\n")) {
			read += l.Records
		}
		return read == 100
	})
	res := stop()
	assert.Equal(t, exitOK, res.code)
	assert.Contains(t, res.stderr, `partitions="[0 1 2]"`, "-partitions sets the partitions of messages")
}

// produce stopped with SIGTERM while the brokers take connections and
// never answer: the batch it cannot deliver ends at once, not after the
// pipeline's drain timeout (30s), and the exit says nothing was sent.
func TestSignalStopsProduceBeforeTheBrokersAnswer(t *testing.T) {
	addr, _ := kafkatest.SilentBrokers(t)
	p := start(t, "produce", "-brokers", addr, "-connect-timeout", "1m", "-count", "10")
	waitFor(t, 30*time.Second, "the producer started", func() bool {
		return strings.Contains(p.stderr.String(), `msg="producing events"`)
	})
	time.Sleep(300 * time.Millisecond) // its first batch waits for the brokers
	assert.Equal(t, exitFailure, p.stop(t, syscall.SIGTERM, 5*time.Second))
	assert.Contains(t, p.stderr.String(), "popularusers produce: stream: batch 1: to(source#1): kafka sink messages: connect to ["+addr+"]: stopped before the brokers answered")
}
