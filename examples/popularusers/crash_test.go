package main

import (
	"context"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/checkpoint"
)

// expectedTotals replays what "produce -seed seed" wrote: the same
// generator, the same events.
func expectedTotals(t *testing.T, seed uint64, start, users, count int64) map[int64]int64 {
	t.Helper()
	gen, err := source.NewGenerator(source.GeneratorConfig{Name: "producer", Seed: seed, Start: start, Users: users, Count: count})
	require.NoError(t, err)
	table := score.Default()
	totals := map[int64]int64{}
	buf := make([]stream.Record[score.Event], 4096)
	for {
		n, err := gen.Poll(context.Background(), buf)
		for _, r := range buf[:n] {
			s, ok := table.ScoreString(r.Value.Activity)
			require.True(t, ok)
			totals[r.Value.UserID] += s
		}
		if err == io.EOF {
			return totals
		}
		require.NoError(t, err)
	}
}

// checkpointed reads the totals and offsets a checkpoint directory holds.
func checkpointed(t *testing.T, dir string) (map[int64]int64, int64) {
	t.Helper()
	store, err := checkpoint.Open(dir)
	require.NoError(t, err)
	defer store.Close()
	return restoredTotals(t, store, nil, true)
}

// restoredTotals restores the totals of store's partitions (nil: all), as
// a pipeline does, and returns them by user with the sum of the input
// offsets they reflect. With unique, a user restored twice fails t; else
// the last entry of a user wins.
func restoredTotals(t *testing.T, store stream.Store, partitions []int32, unique bool) (map[int64]int64, int64) {
	t.Helper()
	codec := stream.CodecFor[int64]()
	totals := map[int64]int64{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	offsets, err := store.Restore(ctx, partitions, func(e stream.Entry) error {
		require.Equal(t, "totals", e.Op)
		k, err := codec.Decode(e.Key)
		require.NoError(t, err)
		if e.Deleted {
			delete(totals, k)
			return nil
		}
		v, err := codec.Decode(e.Value)
		require.NoError(t, err)
		if _, dup := totals[k]; dup && unique {
			require.Fail(t, "a user twice in the state", "user %d", k)
		}
		totals[k] = v
		return nil
	})
	require.NoError(t, err)
	var read int64
	for _, o := range offsets {
		read += o.Next
	}
	return totals, read
}

// kill kills p with SIGKILL and waits for it to end.
func (p *process) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	p.cmd.Wait() //nolint:errcheck // killed on purpose
}

// requireKilledMidway checks, once the producer of events is done, that
// the kills of a crash test came while events were still to count and
// that the runs between them made progress: progress holds what was
// durably counted after each kill.
func requireKilledMidway(t *testing.T, produced <-chan result, progress []int64, events int64) {
	t.Helper()
	r := <-produced
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Less(t, progress[len(progress)-1], events, "the last kill came before the end")
	require.Greater(t, progress[len(progress)-1], progress[0], "the killed runs made progress")
}

// produceEvents runs "produce" in the background: count events of users
// first..first+users with seed, at rate per second. It returns the
// command's result, when it is done, and the exact totals of its events.
func produceEvents(t *testing.T, addr string, seed, first, users, count, rate int64) (<-chan result, map[int64]int64) {
	t.Helper()
	done := make(chan result, 1)
	go func() {
		done <- runMain(t, context.Background(), "", "produce", "-brokers", addr, "-count", strconv.FormatInt(count, 10),
			"-rate", strconv.FormatInt(rate, 10), "-start", strconv.FormatInt(first, 10), "-users", strconv.FormatInt(users, 10),
			"-seed", strconv.FormatInt(seed, 10))
	}()
	return done, expectedTotals(t, uint64(seed), first, users, count)
}

// The pipeline against a standalone broker, killed with SIGKILL at random
// moments and restarted each time with its checkpoint, ends with every
// user's total exact: no event lost, none counted twice, because the state
// and the offsets it reflects are restored together.
func TestCrashesKeepTotalsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts processes")
	}
	dir := t.TempDir()
	b := start(t, "broker", "-listen", "127.0.0.1:0", "-partitions", "4", "-data-dir", filepath.Join(dir, "broker"))
	waitFor(t, 30*time.Second, "the broker's address", func() bool { return len(b.stdout.lines()) > 0 })
	addr := b.stdout.lines()[0]

	// The events come in while the pipeline runs, is killed and restarts.
	const seed, first, users, events, rate = 7, 1000, 300, 30_000, 3000
	produced, want := produceEvents(t, addr, seed, first, users, events, rate)

	ckpt := filepath.Join(dir, "checkpoint")
	// Batches of 100 ms, committed and checkpointed every 200 ms or so: a
	// kill may come between a batch and its checkpoint, and each run lives
	// long enough to checkpoint some.
	args := []string{"-brokers", addr, "-checkpoint", ckpt, "-json", "-interval", "100ms", "-batch-records", "200", "-sketch", "exact", "-commit-interval", "200ms"}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	var progress []int64
	for kill := 1; kill <= 6; kill++ {
		p := start(t, args...)
		time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond) // at any moment: restore, join, batch, checkpoint
		p.kill(t)
		_, read := checkpointed(t, ckpt)
		t.Logf("kill %d after %d events in this run: %d events checkpointed", kill, recordsOf(t, p), read)
		progress = append(progress, read)
	}
	requireKilledMidway(t, produced, progress, events)

	p := start(t, args...)
	// Done when this run has read at least the events the checkpoint did
	// not hold, and then found nothing more for three batches in a row.
	waitFor(t, 2*time.Minute, "every event", func() bool {
		lines := parseLines(t, strings.Join(p.stdout.lines(), "\n"))
		if len(lines) < 3 || int64(sumRecords(lines)) < events-progress[len(progress)-1] {
			return false
		}
		for _, l := range lines[len(lines)-3:] {
			if l.Records != 0 {
				return false
			}
		}
		return true
	})
	assert.Equal(t, exitOK, p.stop(t, syscall.SIGTERM, 30*time.Second))
	got, read := checkpointed(t, ckpt)
	assert.Equal(t, int64(events), read, "the checkpoint reflects every event")
	assert.Equal(t, want, got, "every user's total is exact")
}
