package stream_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// counting yields records 1..n of partition 0, one a Poll, cutting the
// batch with ErrCut after the records in cutAfter, and journals its
// commits.
type counting struct {
	n, next  int
	cutAfter map[int]bool
	block    bool // after n, wait for the end of the run instead of ending
	j        *journal
}

func (c *counting) Poll(ctx context.Context, buf []stream.Record[int]) (int, error) {
	if c.next == c.n {
		if c.block {
			<-ctx.Done()
			return 0, ctx.Err()
		}
		return 0, io.EOF
	}
	c.next++
	buf[0] = rec(c.next, 0, int64(c.next))
	if c.cutAfter[c.next] {
		return 1, stream.ErrCut
	}
	return 1, nil
}

func (c *counting) Commit(_ context.Context, offsets []stream.Offset) error {
	c.j.add("commit %d", offsets[0].Next)
	return nil
}

// flushing is a Flusher sink that journals its writes and flushes, and
// fails a flush when told.
type flushing struct {
	j    *journal
	fail error
}

func (f *flushing) Write(_ context.Context, b *stream.Batch[int]) error {
	f.j.add("write %v", slices.Collect(b.All()))
	return nil
}

func (f *flushing) Flush(context.Context) error {
	f.j.add("flush")
	return f.fail
}

func TestFlusherIsFlushedBeforeEveryCommit(t *testing.T) {
	j := &journal{}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2))
	stream.To(stream.From(p, &counting{n: 4, j: j}), &flushing{j: j})
	require.NoError(t, p.Run(context.Background()))
	assert.Equal(t, []string{
		"write [1 2]", "flush", "commit 3",
		"write [3 4]", "flush", "commit 5",
	}, j.events)
}

// With a commit interval longer than the run, batches are committed: the
// first, when the source cuts one, and when the input ends; the sink is
// flushed before each commit, after the writes of every batch the commit
// covers.
func TestCommitIntervalCommitsLessOften(t *testing.T) {
	j := &journal{}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2), stream.CommitInterval(time.Hour))
	src := &counting{n: 11, cutAfter: map[int]bool{5: true}, j: j}
	stream.To(stream.From(p, src), &flushing{j: j})
	require.NoError(t, p.Run(context.Background()))
	assert.Equal(t, []string{
		"write [1 2]", "flush", "commit 3", // the first batch
		"write [3 4]", "write [5]", "flush", "commit 6", // cut by the source
		"write [6 7]", "write [8 9]", "write [10 11]", "flush", "commit 12", // the input ended
	}, j.events)
}

// Batches run back to back are committed once per interval, not each.
func TestCommitIntervalCommitsOncePerInterval(t *testing.T) {
	j := &journal{}
	var mu sync.Mutex
	var committed, batches int
	var lastCommitted bool
	hook := hookFunc(func(s stream.BatchStats) {
		mu.Lock()
		defer mu.Unlock()
		batches++
		lastCommitted = s.Commit > 0 || s.Flush > 0
		if lastCommitted {
			committed++
		}
		time.Sleep(2 * time.Millisecond) // a batch takes at least this
	})
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(1), stream.CommitInterval(50*time.Millisecond), stream.WithHook(hook))
	stream.To(stream.From(p, &counting{n: 200, j: j}), &flushing{j: j})
	start := time.Now()
	require.NoError(t, p.Run(context.Background()))
	took := time.Since(start)
	commits, last := 0, ""
	for _, e := range j.events {
		if len(e) > 6 && e[:6] == "commit" {
			commits++
			last = e
		}
	}
	assert.Equal(t, 200, batches)
	assert.Equal(t, "commit 201", last, "everything read is committed at the end")
	// The last batch is cut on its count; unless its interval was over
	// then, the end of the input, found after it, commits it without a
	// batch of its own.
	end := 1
	if lastCommitted {
		end = 0
	}
	assert.Equal(t, commits, committed+end, "the batches committed are those whose stats say so")
	// The first batch, at most one commit per interval after it, and the
	// last one.
	assert.LessOrEqual(t, commits, int(took/(50*time.Millisecond))+2)
	assert.GreaterOrEqual(t, commits, 2)
	assert.Equal(t, "commit 201", j.events[len(j.events)-1], "the last batch is committed")
}

// A Flush that fails stops the run before the commit, naming the output.
func TestFailedFlushIsNotCommitted(t *testing.T) {
	j := &journal{}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2))
	boom := errors.New("broker said no")
	stream.To(stream.From(p, &counting{n: 4, j: j}).Named("out"), &flushing{j: j, fail: boom})
	err := p.Run(context.Background())
	require.ErrorIs(t, err, boom)
	assert.Contains(t, err.Error(), "to(out)")
	assert.Equal(t, []string{"write [1 2]", "flush"}, j.events)
}

// A run cancelled while it waits for records, after batches that were not
// committed, commits what they read.
func TestCancelCommitsWhatTheIntervalHeldBack(t *testing.T) {
	j := &journal{}
	src := &counting{n: 4, j: j, block: true}
	second := make(chan struct{})
	hook := hookFunc(func(s stream.BatchStats) {
		if s.Info.ID == 2 {
			close(second)
		}
	})
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2), stream.CommitInterval(time.Hour), stream.WithHook(hook))
	stream.To(stream.From(p, src), &flushing{j: j})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- p.Run(ctx) }()
	<-second // the run now waits for records that do not come
	assert.Equal(t, []string{"write [1 2]", "flush", "commit 3", "write [3 4]"}, j.events, "the second batch is held back")
	cancel()
	require.NoError(t, <-errc)
	assert.Equal(t, []string{"write [1 2]", "flush", "commit 3", "write [3 4]", "flush", "commit 5"}, j.events)
}

// A run cancelled once a batch is done (here by a hook), with records
// still to read, commits what the batches held back read, and reads no
// more.
func TestCancelAfterABatchCommitsWhatTheIntervalHeldBack(t *testing.T) {
	j := &journal{}
	ctx, cancel := context.WithCancel(context.Background())
	hook := hookFunc(func(s stream.BatchStats) {
		if s.Info.ID == 2 {
			cancel()
		}
	})
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2), stream.CommitInterval(time.Hour), stream.WithHook(hook))
	stream.To(stream.From(p, &counting{n: 10, j: j}), &flushing{j: j})
	require.NoError(t, p.Run(ctx))
	assert.Equal(t, []string{"write [1 2]", "flush", "commit 3", "write [3 4]", "flush", "commit 5"}, j.events)
}

func TestCommitIntervalMisuse(t *testing.T) {
	for name, opts := range map[string][]stream.Option{
		"negative":       {stream.CommitInterval(-time.Second)},
		"in transaction": {stream.CommitInterval(time.Second), stream.WithTransaction(&journalTxn{j: &journal{}})},
	} {
		t.Run(name, func(t *testing.T) {
			p := stream.NewPipeline(opts...)
			stream.ForEachBatch(stream.From(p, &counting{n: 1, j: &journal{}}), func(context.Context, *stream.Batch[int]) error { return nil })
			assert.ErrorContains(t, p.Run(context.Background()), "commit interval")
		})
	}
}

// hookFunc is a stream.Hook.
type hookFunc func(stream.BatchStats)

func (f hookFunc) BatchDone(s stream.BatchStats) { f(s) }

// idleAfter gives its records in the first Poll, then none, without end.
type idleAfter struct {
	first []stream.Record[stream.Pair[int, int]]
	gave  bool
}

func (s *idleAfter) Poll(ctx context.Context, buf []stream.Record[stream.Pair[int, int]]) (int, error) {
	if !s.gave {
		s.gave = true
		return copy(buf, s.first), nil
	}
	<-ctx.Done()
	return 0, ctx.Err()
}

// A run cancelled after batches that CommitInterval held back checkpoints
// their state as it ends, even when they read nothing: here the expiry of
// a TTL, which would otherwise come back with the next restore.
func TestCancelCheckpointsTheStateOfEmptyBatchesHeldBack(t *testing.T) {
	store := newMemStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hook := hookFunc(func(s stream.BatchStats) {
		if s.Info.ID == 5 {
			cancel() // between batches: the run ends with nothing pending
		}
	})
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.CommitInterval(time.Hour), stream.WithStore(store), stream.WithHook(hook))
	src := &idleAfter{first: []stream.Record[stream.Pair[int, int]]{pair1(1, 0, 0), pair1(2, 0, 1)}}
	c := collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum, stream.TTLBatches(2)).Named("st"))
	require.NoError(t, p.Run(ctx))
	got := c.all()
	require.GreaterOrEqual(t, len(got), 5)
	assert.Empty(t, stateMap(got[len(got)-1]), "the keys expired")
	assert.Empty(t, store.entries, "their expiry was checkpointed")
}

// A stream named after outputs were added to it names them: in the
// batch's stats, in a flush's error and in an output's error.
func TestStreamNamedAfterItsOutputs(t *testing.T) {
	j := &journal{}
	var names []string
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2), stream.WithHook(hookFunc(func(s stream.BatchStats) {
		for _, o := range s.Outputs {
			names = append(names, o.Name)
		}
	})))
	in := stream.From(p, &counting{n: 4, j: j})
	stream.ForEachBatch(in, func(context.Context, *stream.Batch[int]) error { return nil })
	stream.To(in, &flushing{j: j})
	in.Named("events")
	require.NoError(t, p.Run(context.Background()))
	assert.Equal(t, []string{"forEachBatch(events)", "to(events)", "forEachBatch(events)", "to(events)"}, names)

	p = stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2))
	in = stream.From(p, &counting{n: 4, j: j})
	boom := errors.New("broker said no")
	stream.To(in, &flushing{j: j, fail: boom})
	in.Named("events")
	err := p.Run(context.Background())
	require.ErrorIs(t, err, boom)
	assert.Contains(t, err.Error(), "stream: to(events): batch 1: flush")

	p = stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2))
	in = stream.From(p, &counting{n: 4, j: j})
	stream.ForEachBatch(in, func(context.Context, *stream.Batch[int]) error { return boom })
	in.Named("later")
	err = p.Run(context.Background())
	require.ErrorIs(t, err, boom)
	var se *stream.StageError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "forEachBatch(later)", se.Stage)
}

// endHook journals the batches and the final commit it is told of, and
// cancels the run after batch cancelAt.
type endHook struct {
	j        *journal
	cancelAt int64
	cancel   context.CancelFunc
	final    []stream.CommitStats
}

func (h *endHook) BatchDone(s stream.BatchStats) {
	h.j.add("batch %d", s.Info.ID)
	if s.Info.ID == h.cancelAt {
		h.cancel()
	}
}

func (h *endHook) FinalCommit(s stream.CommitStats) {
	h.j.add("final commit after batch %d", s.Batch.ID)
	s.Inputs, s.State = slices.Clone(s.Inputs), slices.Clone(s.State)
	h.final = append(h.final, s)
}

// The commit with which Run ends, of what batches held back by
// CommitInterval read, comes after the last batch's BatchDone: a
// FinalCommitHook is told of it, whether the source ended or the run was
// cancelled, and of no other. BatchDone is called as before.
func TestFinalCommitHookSeesTheCommitThatEndsTheRun(t *testing.T) {
	for _, c := range []struct {
		name     string
		n        int
		interval time.Duration
		cancelAt int64
		want     []string
	}{
		{"source ended", 4, time.Hour, 0, []string{
			"write [1 2]", "flush", "commit 3", "batch 1",
			"write [3 4]", "batch 2",
			"flush", "commit 5", "final commit after batch 2",
		}},
		{"cancelled after a batch", 10, time.Hour, 2, []string{
			"write [1 2]", "flush", "commit 3", "batch 1",
			"write [3 4]", "batch 2",
			"flush", "commit 5", "final commit after batch 2",
		}},
		{"nothing held back", 4, 0, 0, []string{
			"write [1 2]", "flush", "commit 3", "batch 1",
			"write [3 4]", "flush", "commit 5", "batch 2",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := &journal{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := &endHook{j: j, cancelAt: c.cancelAt, cancel: cancel}
			p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2), stream.CommitInterval(c.interval), stream.WithHook(h))
			stream.To(stream.From(p, &counting{n: c.n, j: j}), &flushing{j: j})
			require.NoError(t, p.Run(ctx))
			assert.Equal(t, c.want, j.events)
			if len(h.final) == 1 {
				f := h.final[0]
				assert.Equal(t, 2, f.Batch.Records, "the last batch's info")
				assert.Greater(t, f.Commit, time.Duration(0))
				assert.Greater(t, f.Flush, time.Duration(0))
				assert.Zero(t, f.Checkpoint, "no store")
				assert.Equal(t, []stream.PartitionStats{{Source: "test", Partition: 0, Lag: -1}}, f.Inputs)
			}
		})
	}
}

// A FinalCommitHook sees the lag after the commit with which Run ends:
// the last BatchDone saw it before, when the interval held its batch back.
func TestFinalCommitHookSeesTheLagAfterIt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &endHook{j: &journal{}, cancelAt: 2, cancel: cancel}
	lags := map[int64][]int64{}
	src := &lagging{Slice: source.NewSlice("n", ints(100), 2), total: [2]int64{50, 50}}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(30), stream.CommitInterval(time.Hour), stream.WithHook(h),
		stream.WithHook(hookFunc(func(s stream.BatchStats) {
			for _, in := range s.Inputs {
				lags[s.Info.ID] = append(lags[s.Info.ID], in.Lag)
			}
		})))
	stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[int]) error { return nil })
	require.NoError(t, p.Run(ctx))
	assert.Equal(t, map[int64][]int64{1: {35, 35}, 2: {35, 35}}, lags, "15 of 50 committed in each partition, then 30 read but held back")
	require.Len(t, h.final, 1)
	assert.Equal(t, []stream.PartitionStats{{Source: "n", Partition: 0, Lag: 20}, {Source: "n", Partition: 1, Lag: 20}}, h.final[0].Inputs,
		"30 of 50 committed as the run ends")
}

// The commit with which Run ends leaves out the partitions an Assigner
// source lost since the last batch, with their state: the
// FinalCommitHook is told of the offsets committed, the partitions
// assigned and the state left.
func TestFinalCommitHookLeavesOutPartitionsLostAsTheRunEnds(t *testing.T) {
	src := &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
			{pair1(1, 0, 0), pair1(2, 1, 0)}, // committed: the first batch is
			{pair1(1, 0, 1), pair1(2, 1, 1)}, // held back by the interval
			{},                               // the source ends, partition 1 lost
		}},
		plan: [][]int32{{0, 1}, {0, 1}, {0}},
	}
	h := &endHook{j: &journal{}}
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.CommitInterval(time.Hour), stream.WithHook(h))
	collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum).Named("totals"))
	run(t, p)
	commits := src.Commits()
	require.Len(t, commits, 2)
	assert.Equal(t, []stream.Offset{{Source: "test", Partition: 0, Next: 2}}, commits[1], "partition 1's held-back offset goes with it")
	require.Len(t, h.final, 1)
	f := h.final[0]
	assert.Equal(t, int64(2), f.Batch.ID)
	assert.Equal(t, []stream.PartitionStats{{Source: "test", Partition: 0, Lag: -1}}, f.Inputs)
	assert.Equal(t, []stream.StateStats{{Name: "totals", Keys: 1, Bytes: f.State[0].Bytes}}, f.State, "partition 1's key dropped")
}
