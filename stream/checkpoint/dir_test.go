package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/checkpoint"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// log is a source over a fixed log of pairs in 2 partitions, like a Kafka
// topic: it starts at the committed offsets, and can fail after some
// records, as a crashed process would stop.
type log struct {
	recs       [2][]stream.Pair[int64, int64]
	next       [2]int64
	committed  [2]int64
	failAfter  int // records to deliver before failing; 0: never
	failCommit bool
	given      int
}

var errCrash = errors.New("crash")

func newLog(n int, seed uint64) *log {
	rng := rand.New(rand.NewPCG(seed, 1))
	l := &log{}
	for range n {
		k := 1000 + rng.Int64N(200)
		l.recs[k%2] = append(l.recs[k%2], stream.KV(k, 1+rng.Int64N(3)))
	}
	return l
}

// restart returns a new run of the log from its committed offsets.
func (l *log) restart(failAfter int) *log {
	return &log{recs: l.recs, next: l.committed, committed: l.committed, failAfter: failAfter}
}

func (l *log) Poll(_ context.Context, buf []stream.Record[stream.Pair[int64, int64]]) (int, error) {
	n := 0
	for p := range 2 {
		for n < len(buf) && l.next[p] < int64(len(l.recs[p])) {
			if l.failAfter > 0 && l.given == l.failAfter {
				return n, errCrash
			}
			buf[n] = stream.Record[stream.Pair[int64, int64]]{Value: l.recs[p][l.next[p]], Origin: stream.Origin{Source: "log", Partition: int32(p), Offset: l.next[p]}}
			l.next[p]++
			l.given++
			n++
		}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (l *log) Commit(_ context.Context, offsets []stream.Offset) error {
	if l.failCommit {
		return errCrash
	}
	for _, o := range offsets {
		l.committed[o.Partition] = max(l.committed[o.Partition], o.Next)
	}
	return nil
}

func (l *log) totals() map[int64]int64 {
	out := map[int64]int64{}
	for _, p := range l.recs {
		for _, kv := range p {
			out[kv.Key] += kv.Value
		}
	}
	return out
}

func sum(_ int64, vs []int64, s int64, _ bool) (int64, bool) {
	for _, v := range vs {
		s += v
	}
	return s, true
}

type result struct {
	last  map[int64]int64
	owner map[int64]int32
}

// runTotals runs the running-totals pipeline over src with the store in
// dir and returns the state after the last batch.
func runTotals(t *testing.T, src stream.Source[stream.Pair[int64, int64]], dir string, keyed bool, opts ...stream.Option) (result, error) {
	t.Helper()
	store, err := checkpoint.Open(dir)
	require.NoError(t, err)
	defer store.Close()
	p := stream.NewPipeline(append([]stream.Option{stream.Interval(0), stream.MaxRecords(37), stream.WithStore(store)}, opts...)...)
	in := stream.From(p, src)
	if keyed {
		in = stream.Keyed(in)
	}
	totals := stream.UpdateStateByKey(in, sum).Named("totals")
	var res result
	stream.ForEachBatch(totals, func(_ context.Context, b *stream.Batch[stream.Pair[int64, int64]]) error {
		res = result{last: map[int64]int64{}, owner: map[int64]int32{}}
		for _, part := range b.Partitions {
			for _, kv := range part.Values {
				if _, dup := res.owner[kv.Key]; dup {
					t.Errorf("key %d in two partitions", kv.Key)
				}
				res.last[kv.Key] = kv.Value
				res.owner[kv.Key] = part.ID
			}
		}
		return nil
	})
	return res, p.Run(context.Background())
}

func TestRestartAfterCrashCountsEveryRecordOnce(t *testing.T) {
	for _, keyed := range []bool{true, false} {
		t.Run(map[bool]string{true: "keyed", false: "shuffled"}[keyed], func(t *testing.T) {
			dir := t.TempDir()
			l := newLog(2000, 1)
			src := l.restart(0)
			src.failAfter = 700
			_, err := runTotals(t, src, dir, keyed)
			require.ErrorIs(t, err, errCrash)
			l.committed = src.committed
			require.NotZero(t, l.committed[0]+l.committed[1], "some batches were committed before the crash")

			// Crash between the checkpoint and the commit: the checkpoint
			// is ahead of the source's committed offsets.
			src = l.restart(1300)
			src.failCommit = true
			_, err = runTotals(t, src, dir, keyed)
			require.ErrorIs(t, err, errCrash)

			res, err := runTotals(t, l.restart(0), dir, keyed)
			require.NoError(t, err)
			assert.Equal(t, l.totals(), res.last, "no record lost, none counted twice")
		})
	}
}

func TestRestoreUnderAnotherParallelism(t *testing.T) {
	dir := t.TempDir()
	l := newLog(1000, 2)
	src := l.restart(500)
	_, err := runTotals(t, src, dir, false, stream.Parallelism(2))
	require.ErrorIs(t, err, errCrash)
	l.committed = src.committed
	res, err := runTotals(t, l.restart(0), dir, false, stream.Parallelism(5))
	require.NoError(t, err)
	assert.Equal(t, l.totals(), res.last)
	parts := map[int32]bool{}
	for _, p := range res.owner {
		parts[p] = true
	}
	assert.Len(t, parts, 5, "restored keys spread over the new partitions")

	// Each key is stored once, in its new partition: the old places were
	// deleted by the first checkpoint after the move.
	store, err := checkpoint.Open(dir)
	require.NoError(t, err)
	defer store.Close()
	seen := map[string]int32{}
	_, err = store.Restore(context.Background(), nil, func(e stream.Entry) error {
		_, dup := seen[string(e.Key)]
		assert.False(t, dup, "key %x stored in partitions %d and %d", e.Key, seen[string(e.Key)], e.Partition)
		seen[string(e.Key)] = e.Partition
		return nil
	})
	require.NoError(t, err)
	assert.Len(t, seen, len(res.last))
}

func TestCompactionKeepsTheState(t *testing.T) {
	dir := t.TempDir()
	store, err := checkpoint.Open(dir)
	require.NoError(t, err)
	ctx := context.Background()
	want := map[string]string{}
	rng := rand.New(rand.NewPCG(5, 5))
	for batch := int64(1); batch <= 300; batch++ {
		c := &stream.Changes{Batch: stream.Info{ID: batch}, Offsets: []stream.Offset{{Source: "s", Partition: 0, Next: batch * 10}}}
		for range 200 {
			k := string(rune('a'+rng.IntN(26))) + string(rune('a'+rng.IntN(26)))
			if rng.IntN(10) == 0 {
				c.Entries = append(c.Entries, stream.Entry{Op: "op", Key: []byte(k), Deleted: true})
				delete(want, k)
				continue
			}
			v := make([]byte, 1000) // big values: the chain is compacted often
			v[0] = byte(rng.IntN(256))
			c.Entries = append(c.Entries, stream.Entry{Op: "op", Key: []byte(k), Value: v})
			want[k] = string(v)
		}
		require.NoError(t, store.Checkpoint(ctx, c))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.ckpt"))
	assert.Less(t, len(files), 150, "deltas were merged into snapshots")

	require.NoError(t, store.Close())
	reopened, err := checkpoint.Open(dir)
	require.NoError(t, err)
	defer reopened.Close()
	got := map[string]string{}
	offsets, err := reopened.Restore(ctx, nil, func(e stream.Entry) error {
		got[string(e.Key)] = string(e.Value)
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.Equal(t, []stream.Offset{{Source: "s", Partition: 0, Next: 3000}}, offsets)
}

func TestRestoreSomePartitions(t *testing.T) {
	store, err := checkpoint.Open(t.TempDir())
	require.NoError(t, err)
	defer store.Close()
	require.NoError(t, store.Checkpoint(context.Background(), &stream.Changes{Entries: []stream.Entry{
		{Op: "a", Partition: 0, Key: []byte("x"), Value: []byte("1")},
		{Op: "a", Partition: 1, Key: []byte("y"), Value: []byte("2")},
		{Op: "a", Partition: 2, Key: []byte("z"), Value: []byte("3")},
	}}))
	var keys []string
	_, err = store.Restore(context.Background(), []int32{0, 2}, func(e stream.Entry) error {
		keys = append(keys, string(e.Key))
		return nil
	})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"x", "z"}, keys)
}

func TestCorruptCheckpointIsAnErrorNamingTheFile(t *testing.T) {
	make := func(t *testing.T) string {
		dir := t.TempDir()
		l := newLog(300, 3)
		_, err := runTotals(t, l.restart(0), dir, true)
		require.NoError(t, err)
		return dir
	}
	t.Run("flipped byte in a delta", func(t *testing.T) {
		dir := make(t)
		files, _ := filepath.Glob(filepath.Join(dir, "delta-*.ckpt"))
		require.NotEmpty(t, files)
		data, err := os.ReadFile(files[0])
		require.NoError(t, err)
		data[len(data)/2] ^= 0x40
		require.NoError(t, os.WriteFile(files[0], data, 0o644))
		_, err = runTotals(t, newLog(10, 9).restart(0), dir, true)
		require.ErrorIs(t, err, checkpoint.ErrCorrupt)
		assert.ErrorContains(t, err, files[0])
		assert.ErrorContains(t, err, "checksum")
	})
	t.Run("other version", func(t *testing.T) {
		dir := make(t)
		path := filepath.Join(dir, "MANIFEST")
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		data[4] = 9
		require.NoError(t, os.WriteFile(path, data, 0o644))
		_, err = checkpoint.Open(dir)
		require.ErrorIs(t, err, checkpoint.ErrVersion)
		assert.ErrorContains(t, err, path)
	})
	t.Run("missing file", func(t *testing.T) {
		dir := make(t)
		files, _ := filepath.Glob(filepath.Join(dir, "delta-*.ckpt"))
		require.NoError(t, os.Remove(files[0]))
		_, err := checkpoint.Open(dir)
		assert.ErrorContains(t, err, "missing")
	})
	t.Run("renamed operator", func(t *testing.T) {
		dir := make(t)
		store, err := checkpoint.Open(dir)
		require.NoError(t, err)
		defer store.Close()
		p := stream.NewPipeline(stream.WithStore(store))
		s := stream.UpdateStateByKey(stream.Keyed(stream.From(p, newLog(10, 1).restart(0))), sum).Named("renamed")
		stream.ForEachBatch(s, func(context.Context, *stream.Batch[stream.Pair[int64, int64]]) error { return nil })
		err = p.Run(context.Background())
		assert.ErrorContains(t, err, `operator named "totals", which this pipeline has not`)
	})
	t.Run("discard starts anew", func(t *testing.T) {
		dir := make(t)
		require.NoError(t, checkpoint.Discard(dir))
		l := newLog(50, 4)
		res, err := runTotals(t, l.restart(0), dir, true)
		require.NoError(t, err)
		assert.Equal(t, l.totals(), res.last)
	})
}

func TestDeletedKeysStayDeleted(t *testing.T) {
	dir := t.TempDir()
	run := func(vals []stream.Pair[int64, int64]) map[int64]int64 {
		store, err := checkpoint.Open(dir)
		require.NoError(t, err)
		defer store.Close()
		p := stream.NewPipeline(stream.WithStore(store), stream.Interval(0), stream.MaxRecords(1))
		l := &log{}
		l.recs[0] = vals
		s := stream.UpdateStateByKey(stream.Keyed(stream.From(p, l)), func(_ int64, vs []int64, s int64, _ bool) (int64, bool) {
			for _, v := range vs {
				s += v
			}
			return s, s != 0 // a total of 0 drops the key
		}).Named("totals")
		last := map[int64]int64{}
		stream.ForEachBatch(s, func(_ context.Context, b *stream.Batch[stream.Pair[int64, int64]]) error {
			clear(last)
			for kv := range b.All() {
				last[kv.Key] = kv.Value
			}
			return nil
		})
		require.NoError(t, p.Run(context.Background()))
		return last
	}
	assert.Equal(t, map[int64]int64{2: 5}, run([]stream.Pair[int64, int64]{stream.KV[int64, int64](1, 3), stream.KV[int64, int64](2, 5), stream.KV[int64, int64](1, -3)}))
	// The new log starts at offset 0 again, below the checkpoint: a record
	// at offset 3 is the first new one.
	got := run([]stream.Pair[int64, int64]{{}, {}, {}, stream.KV[int64, int64](3, 1)})
	assert.Equal(t, map[int64]int64{2: 5, 3: 1}, got, "key 1 was deleted, and stays so after restore")
}

// restoreWatch is a hook that keeps what it is told of restores.
type restoreWatch struct{ got []stream.RestoreStats }

func (w *restoreWatch) BatchDone(stream.BatchStats) {}

func (w *restoreWatch) RestoreProgress(s stream.RestoreStats) { w.got = append(w.got, s) }

func TestRestoreHookSeesTheRestore(t *testing.T) {
	dir := t.TempDir()
	l := newLog(1000, 3)
	src := l.restart(0)
	first, err := runTotals(t, src, dir, true)
	require.NoError(t, err)
	l.committed = src.committed

	w := &restoreWatch{}
	_, err = runTotals(t, l.restart(0), dir, true, stream.WithHook(w))
	require.NoError(t, err)
	require.NotEmpty(t, w.got)
	end := w.got[len(w.got)-1]
	assert.True(t, end.Done)
	assert.NoError(t, end.Err)
	assert.Equal(t, int64(len(first.last)), end.Entries, "one entry per key checkpointed")
	assert.Positive(t, end.Elapsed)
}

func TestLongLoadLogsItsProgress(t *testing.T) {
	defer checkpoint.SetLoadProgressEvery(0)()
	dir := t.TempDir()
	d, err := checkpoint.Open(dir)
	require.NoError(t, err)
	_, err = d.Restore(context.Background(), nil, func(stream.Entry) error { return nil })
	require.NoError(t, err)
	c := &stream.Changes{Batch: stream.Info{ID: 1}}
	for k := range 200_000 {
		c.Entries = append(c.Entries, stream.Entry{Op: "totals", Key: []byte(strconv.Itoa(k)), Value: []byte("1")})
	}
	require.NoError(t, d.Checkpoint(context.Background(), c))
	require.NoError(t, d.Close())

	var logs strings.Builder
	d, err = checkpoint.Open(dir, checkpoint.Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	require.NoError(t, err)
	defer d.Close()
	n := 0
	_, err = d.Restore(context.Background(), nil, func(stream.Entry) error { n++; return nil })
	require.NoError(t, err)
	assert.Equal(t, 200_000, n)
	assert.Regexp(t, `msg="reading checkpoint" dir=\S+ entries=65535 elapsed=\S+ done=\d+\.\d% eta=\S+`, logs.String())
	assert.Equal(t, 3, strings.Count(logs.String(), `msg="reading checkpoint"`), "a line every 65,536 entries at most, and when it is time")
}

// checkpoints writes n checkpoints to dir, each of a few keys (one of them
// over a MiB every tenth time, so that the chain is compacted), the last
// with its offsets at n, and returns the keys' last values.
func checkpoints(t *testing.T, dir string, n int) map[string]string {
	t.Helper()
	d, err := checkpoint.Open(dir)
	require.NoError(t, err)
	defer d.Close()
	want := map[string]string{}
	for i := 1; i <= n; i++ {
		c := &stream.Changes{Batch: stream.Info{ID: int64(i)}, Offsets: []stream.Offset{{Source: "s", Next: int64(i)}}}
		for k := range 3 {
			key := "k" + strconv.Itoa((i+k)%7)
			v := strconv.Itoa(i)
			if i%10 == 0 && k == 0 {
				v = strings.Repeat(v, 1<<20/len(v)+1)
			}
			c.Entries = append(c.Entries, stream.Entry{Op: "op", Key: []byte(key), Value: []byte(v)})
			want[key] = v
		}
		require.NoError(t, d.Checkpoint(context.Background(), c))
	}
	return want
}

// restored returns what Open and Restore of dir give.
func restored(t *testing.T, dir string) (map[string]string, []stream.Offset, error) {
	t.Helper()
	d, err := checkpoint.Open(dir)
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	got := map[string]string{}
	offsets, err := d.Restore(context.Background(), nil, func(e stream.Entry) error {
		got[string(e.Key)] = string(e.Value)
		return nil
	})
	return got, offsets, err
}

// Files a crash left behind (a temporary file, a file renamed before its
// MANIFEST, old files a compaction did not get to remove) are removed at
// the next Open, and by Discard, which also takes a directory whose name
// has glob characters.
func TestFilesLeftBehindAreRemoved(t *testing.T) {
	for _, name := range []string{"ckpt", "ckpt[1]", "ckpt[x", `ckpt\1`, "ckpt*"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), name)
			want := checkpoints(t, dir, 25)
			stray := []string{"snap-000000000099.ckpt.tmp", "delta-000000000000.ckpt", "snap-000000000001.ckpt", "MANIFEST.tmp"}
			for _, s := range stray {
				require.NoError(t, os.WriteFile(filepath.Join(dir, s), []byte("left behind"), 0o644))
			}
			got, offsets, err := restored(t, dir)
			require.NoError(t, err)
			assert.Equal(t, want, got)
			assert.Equal(t, []stream.Offset{{Source: "s", Next: 25}}, offsets)
			for _, s := range stray {
				assert.NoFileExists(t, filepath.Join(dir, s), "removed at Open")
			}
			for _, s := range stray {
				require.NoError(t, os.WriteFile(filepath.Join(dir, s), []byte("left behind"), 0o644))
			}
			require.NoError(t, checkpoint.Discard(dir))
			left, err := os.ReadDir(dir)
			require.NoError(t, err)
			var names []string
			for _, e := range left {
				names = append(names, e.Name())
			}
			assert.Equal(t, lockFiles, names, "Discard removes every checkpoint file, and leaves the lock's")
		})
	}
}

// A MANIFEST missing beside files only a MANIFEST commits is an error
// naming it, not an empty state; beside the first checkpoint's delta
// alone, or with the MANIFEST's temporary file (a crash before or as the
// first MANIFEST was written), it is an empty state.
func TestMissingManifest(t *testing.T) {
	dir := t.TempDir()
	checkpoints(t, dir, 25)
	require.NoError(t, os.Remove(filepath.Join(dir, "MANIFEST")))
	_, _, err := restored(t, dir)
	require.ErrorIs(t, err, checkpoint.ErrCorrupt)
	assert.Contains(t, err.Error(), filepath.Join(dir, "MANIFEST")+" is missing")

	first := t.TempDir()
	checkpoints(t, first, 1)
	require.NoError(t, os.Remove(filepath.Join(first, "MANIFEST")))
	got, offsets, err := restored(t, first)
	require.NoError(t, err)
	assert.Empty(t, got)
	assert.Empty(t, offsets)

	// A crash as the first MANIFEST was written: its temporary file, part
	// written, beside the first delta. Nothing was committed either.
	first = t.TempDir()
	checkpoints(t, first, 1)
	m := filepath.Join(first, "MANIFEST")
	data, err := os.ReadFile(m)
	require.NoError(t, err)
	require.NoError(t, os.Remove(m))
	require.NoError(t, os.WriteFile(m+".tmp", data[:len(data)/2], 0o644))
	got, offsets, err = restored(t, first)
	require.NoError(t, err, "a crash before the commit point leaves a directory that opens")
	assert.Empty(t, got)
	assert.Empty(t, offsets)
	assert.NoFileExists(t, m+".tmp", "removed at Open")
}

// A compaction that fails does not fail the checkpoint it follows, which
// is committed: the chain stays, and a later checkpoint compacts it.
func TestFailedCompactionKeepsTheCheckpoint(t *testing.T) {
	dir := t.TempDir()
	d, err := checkpoint.Open(dir)
	require.NoError(t, err)
	// The snapshot's temporary file cannot be written: a directory is there.
	require.NoError(t, os.Mkdir(filepath.Join(dir, "snap-000000000002.ckpt.tmp"), 0o755))
	big := strings.Repeat("7", 4<<20) // over the delta size that compacts
	c := &stream.Changes{Batch: stream.Info{ID: 1}, Offsets: []stream.Offset{{Source: "s", Next: 10}},
		Entries: []stream.Entry{{Op: "op", Key: []byte("k"), Value: []byte(big)}}}
	require.NoError(t, d.Checkpoint(context.Background(), c), "the checkpoint is committed")
	require.NoError(t, d.Close())
	require.NoError(t, os.Remove(filepath.Join(dir, "snap-000000000002.ckpt.tmp")))
	got, offsets, err := restored(t, dir)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"k": big}, got)
	assert.Equal(t, []stream.Offset{{Source: "s", Next: 10}}, offsets)
}

// One Dir holds a directory from Open to Close: a second Open, and a
// Discard, fail naming it, and leave its checkpoint as it is; after Close,
// the directory opens again with the checkpoint. Open with Reset discards
// the checkpoint once it holds the directory.
func TestOneDirHoldsTheDirectory(t *testing.T) {
	if len(lockFiles) == 0 {
		t.Skip("no directory lock on " + runtime.GOOS)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	want := checkpoints(t, dir, 3)
	d, err := checkpoint.Open(dir)
	require.NoError(t, err)

	_, err = checkpoint.Open(dir)
	require.ErrorIs(t, err, checkpoint.ErrInUse)
	assert.ErrorContains(t, err, dir)
	_, err = checkpoint.Open(dir, checkpoint.Reset())
	require.ErrorIs(t, err, checkpoint.ErrInUse)
	err = checkpoint.Discard(dir)
	require.ErrorIs(t, err, checkpoint.ErrInUse)
	assert.ErrorContains(t, err, dir)

	got := map[string]string{}
	_, err = d.Restore(context.Background(), nil, func(e stream.Entry) error {
		got[string(e.Key)] = string(e.Value)
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, want, got, "the holder's checkpoint is left as it was")

	require.NoError(t, d.Close())
	require.NoError(t, d.Close(), "a second Close does nothing")
	_, err = d.Restore(context.Background(), nil, func(stream.Entry) error { return nil })
	require.ErrorIs(t, err, checkpoint.ErrClosed)
	require.ErrorIs(t, d.Checkpoint(context.Background(), &stream.Changes{}), checkpoint.ErrClosed)

	got, _, err = restored(t, dir)
	require.NoError(t, err)
	assert.Equal(t, want, got, "opened again after Close")

	d, err = checkpoint.Open(dir, checkpoint.Reset())
	require.NoError(t, err)
	defer d.Close()
	n := 0
	offsets, err := d.Restore(context.Background(), nil, func(stream.Entry) error { n++; return nil })
	require.NoError(t, err)
	assert.Zero(t, n, "Reset starts from an empty state")
	assert.Empty(t, offsets)
}

// An Open that fails releases the directory: it opens once the cause is
// gone.
func TestFailedOpenReleasesTheDirectory(t *testing.T) {
	dir := t.TempDir()
	checkpoints(t, dir, 3)
	manifest := filepath.Join(dir, "MANIFEST")
	good, err := os.ReadFile(manifest)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(manifest, []byte("SLCK\x01M"), 0o644))
	_, err = checkpoint.Open(dir)
	require.ErrorIs(t, err, checkpoint.ErrCorrupt)
	require.NoError(t, os.WriteFile(manifest, good, 0o644))
	d, err := checkpoint.Open(dir)
	require.NoError(t, err)
	require.NoError(t, d.Close())
}

// Open makes the directory and its missing parents.
func TestOpenMakesTheDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "ckpt")
	want := checkpoints(t, dir, 2)
	got, _, err := restored(t, dir)
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

// smallCheckpoints writes to d the checkpoints from to to, each of 10
// keys of a few bytes (one of them deleted every other time), with its
// offsets at its number, and keeps the keys' last values in want.
func smallCheckpoints(t *testing.T, d *checkpoint.Dir, from, to int, want map[string]string) {
	t.Helper()
	for i := from; i <= to; i++ {
		c := &stream.Changes{Batch: stream.Info{ID: int64(i)}, Offsets: []stream.Offset{{Source: "s", Next: int64(i)}}}
		for k := range 10 {
			key, v := "k"+strconv.Itoa(k), strconv.Itoa(i*k)
			if k == 9 && i%2 == 1 {
				c.Entries = append(c.Entries, stream.Entry{Op: "op", Key: []byte(key), Deleted: true})
				delete(want, key)
				continue
			}
			c.Entries = append(c.Entries, stream.Entry{Op: "op", Key: []byte(key), Value: []byte(v)})
			want[key] = v
		}
		require.NoError(t, d.Checkpoint(context.Background(), c))
	}
}

// checkpointFiles returns the names of dir's checkpoint files.
func checkpointFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.ckpt"))
	require.NoError(t, err)
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	return files
}

// Deltas far smaller than the snapshot's bytes are merged all the same
// once the chain holds MaxChain files: the directory never holds more.
func TestSmallDeltasAreMergedByCount(t *testing.T) {
	dir := t.TempDir()
	d, err := checkpoint.Open(dir)
	require.NoError(t, err)
	defer d.Close()
	want := map[string]string{}
	const n = 2*checkpoint.MaxChain + 50
	most := 0
	for i := 1; i <= n; i++ {
		smallCheckpoints(t, d, i, i, want)
		most = max(most, len(checkpointFiles(t, dir)))
	}
	assert.Equal(t, checkpoint.MaxChain, most, "the chain reaches MaxChain files, and no more")
	// The merges came at checkpoints MaxChain+1 and 2*MaxChain+1.
	assert.Equal(t, 50, len(checkpointFiles(t, dir)), "a snapshot and the 49 deltas after it")
	require.NoError(t, d.Close())

	got, offsets, err := restored(t, dir)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.Equal(t, []stream.Offset{{Source: "s", Next: n}}, offsets)
}

// copyDir copies the files of dir into a new directory and returns it.
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	to := t.TempDir()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(to, e.Name()), data, 0o644))
	}
	return to
}

// A merge by count cut short at any point, by a crash or a power loss,
// leaves the checkpoint that started it: the directory opens with it,
// Open removes what the merge left behind, and the next checkpoint
// merges the chain again.
func TestMergeByCountCutShort(t *testing.T) {
	const n = checkpoint.MaxChain + 1 // the checkpoint that makes the chain too long
	before := t.TempDir()
	want := map[string]string{}
	d, err := checkpoint.Open(before)
	require.NoError(t, err)
	smallCheckpoints(t, d, 1, n-1, want)
	require.NoError(t, d.Close())

	// The merge that the checkpoint starts writes the next file: the
	// snapshot. Done in full, it leaves that snapshot alone.
	snap := fmt.Sprintf("snap-%012d.ckpt", n+1)
	merged := copyDir(t, before)
	d, err = checkpoint.Open(merged)
	require.NoError(t, err)
	smallCheckpoints(t, d, n, n, want)
	require.NoError(t, d.Close())
	require.Equal(t, 1, len(checkpointFiles(t, merged)), "the chain is merged")
	require.FileExists(t, filepath.Join(merged, snap))

	// Cut short before the snapshot is written: the checkpoint's delta is
	// committed, the chain is whole.
	committed := copyDir(t, before)
	d, err = checkpoint.Open(committed)
	require.NoError(t, err)
	require.NoError(t, os.Mkdir(filepath.Join(committed, snap+".tmp"), 0o755)) // the snapshot cannot be written
	smallCheckpoints(t, d, n, n, map[string]string{})
	require.NoError(t, d.Close())
	require.NoError(t, os.Remove(filepath.Join(committed, snap+".tmp")))
	deltas := checkpointFiles(t, committed)
	require.Len(t, deltas, n, "the merge failed")

	snapData, err := os.ReadFile(filepath.Join(merged, snap))
	require.NoError(t, err)
	manifest, err := os.ReadFile(filepath.Join(merged, "MANIFEST"))
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		from   string
		stray  map[string][]byte // files the merge left behind
		merged bool              // whether the MANIFEST names the snapshot
	}{
		{name: "as the snapshot was written", from: committed, stray: map[string][]byte{snap + ".tmp": snapData[:len(snapData)/2]}},
		{name: "before the snapshot's MANIFEST was written", from: committed, stray: map[string][]byte{snap: snapData}},
		{name: "as the snapshot's MANIFEST was written", from: committed, stray: map[string][]byte{snap: snapData, "MANIFEST.tmp": manifest[:len(manifest)/2]}},
		{name: "before the deltas were removed", from: merged, merged: true, stray: func() map[string][]byte {
			m := map[string][]byte{}
			for _, f := range deltas {
				data, err := os.ReadFile(filepath.Join(committed, f))
				require.NoError(t, err)
				m[f] = data
			}
			return m
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, tc.from)
			for name, data := range tc.stray {
				require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o644))
			}
			got, offsets, err := restored(t, dir)
			require.NoError(t, err)
			assert.Equal(t, want, got)
			assert.Equal(t, []stream.Offset{{Source: "s", Next: n}}, offsets)
			for name := range tc.stray {
				assert.NoFileExists(t, filepath.Join(dir, name), "removed at Open")
			}

			// The next checkpoint merges the chain, if the MANIFEST did not.
			d, err := checkpoint.Open(dir)
			require.NoError(t, err)
			defer d.Close()
			next := maps.Clone(want)
			smallCheckpoints(t, d, n+1, n+1, next)
			files := checkpointFiles(t, dir)
			if tc.merged {
				assert.Equal(t, []string{fmt.Sprintf("delta-%012d.ckpt", n+2), snap}, files)
			} else {
				assert.Equal(t, []string{fmt.Sprintf("snap-%012d.ckpt", n+2)}, files)
			}
			require.NoError(t, d.Close())
			got, offsets, err = restored(t, dir)
			require.NoError(t, err)
			assert.Equal(t, next, got)
			assert.Equal(t, []stream.Offset{{Source: "s", Next: n + 1}}, offsets)
		})
	}
}

// A chain longer than MaxChain, as directories written before the bound
// hold and as compactions that keep failing leave, restores whole, and
// the next checkpoint merges it.
func TestChainPastTheBoundIsMergedByTheNextCheckpoint(t *testing.T) {
	const n = checkpoint.MaxChain + 50
	dir := t.TempDir()
	d, err := checkpoint.Open(dir)
	require.NoError(t, err)
	defer d.Close()
	// No snapshot can be written: every merge from the bound on fails.
	for seq := checkpoint.MaxChain + 1; seq <= 2*n; seq++ {
		require.NoError(t, os.Mkdir(filepath.Join(dir, fmt.Sprintf("snap-%012d.ckpt.tmp", seq)), 0o755))
	}
	want := map[string]string{}
	smallCheckpoints(t, d, 1, n, want)
	require.NoError(t, d.Close())
	require.Equal(t, n, len(checkpointFiles(t, dir)), "every merge failed")

	got, offsets, err := restored(t, dir) // Open removes the snapshots' blocked places
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.Equal(t, []stream.Offset{{Source: "s", Next: n}}, offsets)

	d, err = checkpoint.Open(dir)
	require.NoError(t, err)
	smallCheckpoints(t, d, n+1, n+1, want)
	require.NoError(t, d.Close())
	files := checkpointFiles(t, dir)
	assert.Equal(t, 1, len(files), "merged into a snapshot")
	got, offsets, err = restored(t, dir)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.Equal(t, []stream.Offset{{Source: "s", Next: n + 1}}, offsets)
}
