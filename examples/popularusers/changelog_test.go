package main

import (
	"context"
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

	"github.com/sluicehq/sluice/sink/changelog"
)

// changelogged reads the totals and offsets a changelog topic holds, as a
// pipeline without a group would restore them (partitions nil), or the
// given partitions as a group member does.
func changelogged(t *testing.T, addr, topic string, partitions []int32) (map[int64]int64, int64) {
	t.Helper()
	store, err := changelog.NewKafka(changelog.Config{Brokers: []string{addr}, Topic: topic, RestoreTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer store.Close()
	// A key written by several checkpoints: the last wins.
	return restoredTotals(t, store, partitions, false)
}

// startStandaloneBroker starts "popularusers broker" on a free port, with a
// data directory as one would run it, and returns its address.
func startStandaloneBroker(t *testing.T) string {
	t.Helper()
	b := start(t, "broker", "-listen", "127.0.0.1:0", "-partitions", "4", "-data-dir", t.TempDir())
	waitFor(t, 30*time.Second, "the broker's address", func() bool { return len(b.stdout.lines()) > 0 })
	return b.stdout.lines()[0]
}

// recordsOf sums the records of a -json run's batches so far.
func recordsOf(t *testing.T, p *process) int {
	return sumRecords(parseLines(t, strings.Join(p.stdout.lines(), "\n")))
}

// sumRecords sums the records of batches. A condition on a run's batches
// reads its output once and sums those: a second read may hold a batch
// more than the first.
func sumRecords(lines []batchLine) int {
	n := 0
	for _, l := range lines {
		n += l.Records
	}
	return n
}

// runUntilAll runs the pipeline with args until it has counted users users
// and then found nothing more to read for ten batches in a row, and stops
// it with SIGTERM.
func runUntilAll(t *testing.T, users int, args ...string) {
	t.Helper()
	runUntilAllIn(t, "", users, args...)
}

// runUntilAllIn is runUntilAll in the working directory dir.
func runUntilAllIn(t *testing.T, dir string, users int, args ...string) {
	t.Helper()
	const idle = 10 // an empty batch or two may be a slow fetch on a busy host
	p := startIn(t, dir, args...)
	waitFor(t, 2*time.Minute, "every event", func() bool {
		lines := parseLines(t, strings.Join(p.stdout.lines(), "\n"))
		if len(lines) < idle || lines[len(lines)-1].Users != users || sumRecords(lines) == 0 {
			return false
		}
		for _, l := range lines[len(lines)-idle:] {
			if l.Records != 0 {
				return false
			}
		}
		return true
	})
	assert.Equal(t, exitOK, p.stop(t, syscall.SIGTERM, 30*time.Second))
}

// With -state changelog, the pipeline killed with SIGKILL in the middle of
// its batches and restarted each time ends with every user's total exact:
// the totals and the offsets they reflect are restored together from the
// Kafka topic, by whichever process reads the partitions.
func TestChangelogCrashesKeepTotalsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts processes")
	}
	addr := startStandaloneBroker(t)
	const seed, first, users, events, rate = 11, 1000, 200, 30_000, 2000
	produced, want := produceEvents(t, addr, seed, first, users, events, rate)

	const topic = "crashes-totals-changelog"
	// Batches of 100 ms, committed every 200 ms or so: a kill may come
	// between a batch and its commit.
	args := []string{"-brokers", addr, "-group", "crashes", "-state", "changelog", "-changelog-topic", topic,
		"-json", "-interval", "100ms", "-batch-records", "200", "-sketch", "exact", "-commit-interval", "200ms"}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 5))
	var progress []int64
	for kill := 1; kill <= 2; kill++ {
		p := start(t, args...)
		// Killed once it is counting: restoring, joining and waiting for
		// the last killed member's session to expire come first.
		waitFor(t, time.Minute, "the first records of the run", func() bool { return recordsOf(t, p) > 0 })
		time.Sleep(time.Duration(250+rng.IntN(300)) * time.Millisecond)
		p.kill(t)
		_, read := changelogged(t, addr, topic, []int32{0, 1, 2, 3})
		t.Logf("kill %d after %d events in this run: %d events in the changelog", kill, recordsOf(t, p), read)
		progress = append(progress, read)
	}
	requireKilledMidway(t, produced, progress, events)

	runUntilAll(t, len(want), args...)
	got, read := changelogged(t, addr, topic, nil)
	assert.Equal(t, int64(events), read, "the changelog reflects every event")
	assert.Equal(t, want, got, "every user's total is exact")
}

// The same events counted with -state dir and with -state changelog (two
// groups) give the same totals, and the changelog alone restores them: the
// changelog pipeline, run in an empty working directory (where the default
// -checkpoint would be), leaves it empty, and restarted goes on from its
// totals.
func TestChangelogRestoresTheCheckpointedState(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	addr := startStandaloneBroker(t)
	const seed, first, users, events = 13, 1000, 150, 5000
	produce := func(seed, count int) {
		r := runMain(t, context.Background(), "", "produce", "-brokers", addr, "-count", strconv.Itoa(count),
			"-rate", "0", "-start", strconv.Itoa(first), "-users", strconv.Itoa(users), "-seed", strconv.Itoa(seed))
		require.Equal(t, exitOK, r.code, r.stderr)
	}
	produce(seed, events)
	want := expectedTotals(t, seed, first, users, events)
	common := []string{"-brokers", addr, "-json", "-interval", "100ms", "-batch-records", "500", "-sketch", "exact"}

	dir := filepath.Join(t.TempDir(), "checkpoint")
	runUntilAll(t, len(want), append(common, "-group", "bydir", "-state", "dir", "-checkpoint", dir)...)
	const topic = "bylog-totals-changelog"
	wd := t.TempDir()
	runUntilAllIn(t, wd, len(want), append(common, "-group", "bylog", "-state", "changelog")...)

	fromDir, readDir := checkpointed(t, dir)
	fromLog, readLog := changelogged(t, addr, topic, nil)
	assert.Equal(t, want, fromDir)
	assert.Equal(t, fromDir, fromLog, "the changelog holds the state the checkpoint holds")
	assert.Equal(t, int64(events), readDir)
	assert.Equal(t, readDir, readLog, "and the same input offsets")

	// Nothing of -state changelog is on disk: the restarted run has only
	// the changelog to go on from.
	files, err := os.ReadDir(wd)
	require.NoError(t, err)
	assert.Empty(t, files, "the changelog pipeline wrote nothing in its working directory")
	const more = 2000
	produce(seed+1, more)
	for u, v := range expectedTotals(t, seed+1, first, users, more) {
		want[u] += v
	}
	runUntilAllIn(t, wd, len(want), append(common, "-group", "bylog", "-state", "changelog")...)
	got, read := changelogged(t, addr, topic, nil)
	assert.Equal(t, int64(events+more), read, "the restarted run skipped the events its restored totals count")
	assert.Equal(t, want, got, "and counted the new ones once")
}
