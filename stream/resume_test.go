package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/checkpoint"
)

// resumeLines is a file of 1000 lines "k,v" over 10 keys, every key in
// every batch of 50 lines.
func resumeLines() (string, map[int]int) {
	var sb strings.Builder
	want := map[int]int{}
	for i := range 1000 {
		k, v := i%10, i%7+1
		fmt.Fprintf(&sb, "%d,%d\n", k, v)
		want[k] += v
	}
	return sb.String(), want
}

// runFile runs a file's pairs, 50 lines a batch, through graph on the store
// in dir; its first output fails at batch crash (0: never), as a process
// killed there. It returns how many batches ran.
func runFile(t *testing.T, dir, lines string, crash int64, graph func(*stream.Stream[intPair])) (int, error) {
	t.Helper()
	store, err := checkpoint.Open(dir)
	require.NoError(t, err)
	defer func() { require.NoError(t, store.Close()) }()
	f, err := source.NewFile("events", strings.NewReader(lines), source.Partitions(2))
	require.NoError(t, err)
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(50), stream.WithStore(store))
	in := stream.Map(stream.From(p, f), func(line []byte) intPair {
		k, v, _ := strings.Cut(string(line), ",")
		ki, err1 := strconv.Atoi(k)
		vi, err2 := strconv.Atoi(v)
		require.NoError(t, errors.Join(err1, err2))
		return stream.KV(ki, vi)
	})
	batches := 0
	stream.ForEachBatch(in, func(_ context.Context, b *stream.Batch[intPair]) error {
		if b.Info.ID == crash {
			return errWindowCrash
		}
		batches++
		return nil
	})
	graph(in)
	return batches, p.Run(context.Background())
}

// A file run again on its checkpoint resumes after its last checkpointed
// line: the lines the state counted are skipped without making batches,
// so that a rerun of a finished file leaves the state and its TTLs as they
// were, and a run restarted after a crash ends with the totals of a run
// that did not stop.
func TestFileResumedFromACheckpointRunsNoBatchOfSkippedLines(t *testing.T) {
	lines, want := resumeLines()
	var last map[int]int
	totals := func(in *stream.Stream[intPair]) {
		st := stream.UpdateStateByKey(stream.Keyed(in), sum, stream.TTLBatches(5)).Named("totals")
		stream.ForEachBatch(st, func(_ context.Context, b *stream.Batch[intPair]) error {
			last = stateMap(b)
			return nil
		})
	}
	t.Run("rerun of a finished file", func(t *testing.T) {
		dir := t.TempDir()
		n, err := runFile(t, dir, lines, 0, totals)
		require.NoError(t, err)
		require.Equal(t, 20, n)
		require.Equal(t, want, last)
		for run := range 2 {
			last = nil
			n, err := runFile(t, dir, lines, 0, totals)
			require.NoError(t, err)
			assert.Zero(t, n, "run %d: batches of lines already counted", run+2)
		}
		// A file grown by a line (of partition 0, as key 0 is): its batch
		// sees the totals kept.
		grown := lines + "0,100\n"
		want := maps.Clone(want)
		want[0] += 100
		n, err = runFile(t, dir, grown, 0, totals)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		assert.Equal(t, want, last, "the totals kept through the reruns")
	})
	t.Run("restart after a crash", func(t *testing.T) {
		dir := t.TempDir()
		_, err := runFile(t, dir, lines, 15, totals)
		require.ErrorIs(t, err, errWindowCrash)
		last = nil
		n, err := runFile(t, dir, lines, 0, totals)
		require.NoError(t, err)
		assert.Equal(t, 6, n, "the batches after the checkpoint of batch 14")
		assert.Equal(t, want, last)
	})
}

// The windows of a file restarted after a crash are those of a run that
// did not stop, at the same batches, and a rerun of the finished file
// emits none.
func TestFileResumedFromACheckpointKeepsItsWindowsInStep(t *testing.T) {
	lines, _ := resumeLines()
	var got map[int]string // by the batch's position in the whole file
	from := 0
	windows := func(in *stream.Stream[intPair]) {
		w := stream.ReduceByKeyAndWindow(in, plus, windowInverses["inverse"], 4, 2).Named("win")
		stream.ForEachBatch(w, func(_ context.Context, b *stream.Batch[intPair]) error {
			got[from+int(b.Info.ID)] = windowSums(b)
			return nil
		})
	}
	got = map[int]string{}
	_, err := runFile(t, t.TempDir(), lines, 0, windows)
	require.NoError(t, err)
	want := got
	require.Len(t, want, 10)

	dir := t.TempDir()
	got = map[int]string{}
	_, err = runFile(t, dir, lines, 9, windows)
	require.ErrorIs(t, err, errWindowCrash)
	from = 8
	_, err = runFile(t, dir, lines, 0, windows)
	require.NoError(t, err)
	assert.Equal(t, want, got, "the windows of the run restarted")

	got = map[int]string{}
	_, err = runFile(t, dir, lines, 0, windows)
	require.NoError(t, err)
	assert.Empty(t, got, "windows of a rerun of the finished file")
}

// The records a restored state had counted are no batch, nor time: the
// intervals that read only those start again, and the first batch holds
// the first record not counted. Their offsets are committed all the same:
// with that batch, or, when the input ends with none, as Run ends, so that
// a source that records its progress does not read them again.
func TestRecordsAlreadyCountedAreCommittedWithoutABatch(t *testing.T) {
	store := newMemStore()
	first := &scripted[intPair]{chunks: [][]stream.Record[intPair]{{pair1(1, 0, 0), pair1(2, 0, 1)}}}
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
	collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, first)), sum).Named("st"))
	run(t, p)

	again := func(chunks ...[]stream.Record[intPair]) (*scripted[intPair], []*stream.Batch[intPair]) {
		src := &scripted[intPair]{chunks: chunks}
		p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
		c := collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum).Named("st"))
		run(t, p)
		return src, c.all()
	}
	src, got := again([]stream.Record[intPair]{pair1(1, 0, 0)}, []stream.Record[intPair]{pair1(2, 0, 1)}, []stream.Record[intPair]{pair1(3, 0, 2)})
	require.Len(t, got, 1, "one batch, of the record not counted")
	assert.Equal(t, int64(1), got[0].Info.ID)
	assert.Equal(t, 1, got[0].Info.Records)
	assert.Equal(t, map[int]int{1: 1, 2: 1, 3: 1}, stateMap(got[0]))
	assert.Equal(t, [][]stream.Offset{{{Source: "test", Partition: 0, Next: 3}}}, src.Commits())

	src, got = again([]stream.Record[intPair]{pair1(1, 0, 0), pair1(2, 0, 1)}, []stream.Record[intPair]{pair1(3, 0, 2)})
	assert.Empty(t, got, "no batch of records already counted")
	assert.Equal(t, [][]stream.Offset{{{Source: "test", Partition: 0, Next: 3}}}, src.Commits(), "their offsets committed as Run ends")
}

// zeroOffsets is a source of values whose offsets are all zero, as a
// channel's would be, that ends after them.
type zeroOffsets struct{ values []intPair }

func (s *zeroOffsets) Poll(_ context.Context, buf []stream.Record[intPair]) (int, error) {
	if len(s.values) == 0 {
		return 0, io.EOF
	}
	buf[0] = stream.Record[intPair]{Value: s.values[0], Origin: stream.Origin{Source: "chan"}}
	s.values = s.values[1:]
	return 1, nil
}

// The records a restored state skips are told: how many of each source
// partition, in BatchStats and, once, in the log; a source whose offsets
// are not stable across runs, all of whose records a restored run drops,
// is warned of.
func TestRecordsSkippedAsAlreadyCountedAreTold(t *testing.T) {
	t.Run("stats and log", func(t *testing.T) {
		store := newMemStore()
		first := &scripted[intPair]{chunks: [][]stream.Record[intPair]{{pair1(1, 0, 0), pair1(2, 0, 1)}}}
		p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
		collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, first)), sum).Named("st"))
		run(t, p)

		var logs bytes.Buffer
		var stats []stream.PartitionStats
		src := &scripted[intPair]{chunks: [][]stream.Record[intPair]{{pair1(1, 0, 0), pair1(2, 0, 1), pair1(3, 0, 2)}}}
		p = stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store),
			stream.Logger(slog.New(slog.NewTextHandler(&logs, nil))),
			stream.WithHook(hookFunc(func(s stream.BatchStats) { stats = append(stats, s.Inputs...) })))
		collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum).Named("st"))
		run(t, p)
		assert.Equal(t, []stream.PartitionStats{{Source: "test", Partition: 0, Records: 1, Skipped: 2, Lag: -1}}, stats)
		assert.Equal(t, 1, strings.Count(logs.String(), `level=INFO msg="records skipped as a restored state had counted them" source=test partition=0 records=2 below=2`), logs.String())
	})
	t.Run("offsets not stable", func(t *testing.T) {
		store := newMemStore()
		var logs bytes.Buffer
		var last map[int]int
		for range 2 {
			last = nil
			logs.Reset()
			p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2), stream.WithStore(store),
				stream.Logger(slog.New(slog.NewTextHandler(&logs, nil))))
			src := &zeroOffsets{values: []intPair{stream.KV(1, 1), stream.KV(2, 1), stream.KV(1, 1)}}
			st := stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum).Named("st")
			stream.ForEachBatch(st, func(_ context.Context, b *stream.Batch[intPair]) error {
				last = stateMap(b)
				return nil
			})
			run(t, p)
		}
		assert.Nil(t, last, "every record dropped")
		assert.Equal(t, 1, strings.Count(logs.String(), `level=WARN msg="more records skipped as a restored state had counted them than there are offsets below those restored`), logs.String())
		assert.Contains(t, logs.String(), `level=INFO msg="records skipped as a restored state had counted them" source=chan partition=0 records=3 below=1`)
	})
}

// journalRestored is a journalStore that restores offsets.
type journalRestored struct {
	journalStore
	offsets []stream.Offset
}

func (s journalRestored) Restore(ctx context.Context, ps []int32, put func(stream.Entry) error) ([]stream.Offset, error) {
	_, err := s.journalStore.Restore(ctx, ps, put)
	return s.offsets, err
}

// With a transaction, the offsets of records already counted that Run
// commits as it ends, with no batch, are committed in one of their own.
func TestRecordsAlreadyCountedAreCommittedInATransaction(t *testing.T) {
	j := &journal{}
	store := journalRestored{journalStore{j}, []stream.Offset{{Source: "test", Partition: 0, Next: 2}}}
	src := journalSource{&scripted[int]{chunks: [][]stream.Record[int]{{rec(1, 0, 0), rec(2, 0, 1)}}}, j}
	p := stream.NewPipeline(stream.Interval(10*time.Millisecond), stream.WithStore(store), stream.WithTransaction(&journalTxn{j: j}))
	totals := stream.UpdateStateByKey(stream.Map(stream.From[int](p, src), func(v int) stream.Pair[int, int] { return stream.KV(v%2, v) }), sum).Named("sum")
	stream.ForEachBatch(totals, func(_ context.Context, b *stream.Batch[stream.Pair[int, int]]) error {
		j.add("write %d", b.Info.ID)
		return nil
	})
	run(t, p)
	assert.Equal(t, []string{"restore", "begin", "commit offsets [{test 0 2}]", "commit txn"}, j.events)
}

// idleCommits is an idleAfter that records what it is told to commit.
type idleCommits struct {
	idleAfter
	mu      sync.Mutex
	commits [][]stream.Offset
}

func (s *idleCommits) Commit(_ context.Context, offsets []stream.Offset) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commits = append(s.commits, slices.Clone(offsets))
	return nil
}

// An interval that read only records a restored state had counted starts
// again, but one that reads nothing after it is a batch, as every idle
// interval is: a source that goes idle after those records goes on
// cutting batches (which notice rebalances and commit what CommitInterval
// held back), and the first commits their offsets.
func TestIdleSourceAfterRecordsAlreadyCountedCutsBatches(t *testing.T) {
	store := newMemStore()
	first := &scripted[intPair]{chunks: [][]stream.Record[intPair]{{pair1(1, 0, 0), pair1(2, 0, 1)}}}
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
	collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, first)), sum).Named("st"))
	run(t, p)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var infos []stream.Info
	var inputs []stream.PartitionStats
	hook := hookFunc(func(s stream.BatchStats) {
		infos = append(infos, s.Info)
		inputs = append(inputs, s.Inputs...)
		cancel()
	})
	src := &idleCommits{idleAfter: idleAfter{first: []stream.Record[intPair]{pair1(1, 0, 0), pair1(2, 0, 1)}}}
	p = stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store), stream.WithHook(hook))
	collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum).Named("st"))
	require.NoError(t, p.Run(ctx))
	require.Len(t, infos, 1, "a batch cut while the source was idle")
	assert.Zero(t, infos[0].Records)
	assert.Equal(t, []stream.PartitionStats{{Source: "test", Partition: 0, Skipped: 2, Lag: -1}}, inputs)
	assert.Equal(t, [][]stream.Offset{{{Source: "test", Partition: 0, Next: 2}}}, src.commits, "committed with the batch")
}
