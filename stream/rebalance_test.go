package stream_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream"
)

// An Assigner source's state is restored as its partitions are assigned,
// in the first batch: a run cancelled during that restore ends at once,
// with nil and nothing output or committed, as a run whose whole state is
// restored before its first batch does.
func TestCancelWhileRestoringAssignedPartitionsEndsTheRun(t *testing.T) {
	store := slowStore{restoring: make(chan struct{})}
	src := &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{{pair1(1, 0, 0)}}},
		plan:     [][]int32{{0}},
	}
	p := stream.NewPipeline(stream.Interval(time.Millisecond), stream.WithStore(store), stream.DrainTimeout(time.Minute))
	var batches atomic.Int64
	stream.ForEachBatch(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum).Named("st"),
		func(context.Context, *stream.Batch[stream.Pair[int, int]]) error {
			batches.Add(1)
			return nil
		})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-store.restoring
	require.NoError(t, cancelled(t, cancel, done))
	assert.Zero(t, batches.Load())
	assert.Empty(t, src.Commits())
}

// blockOn restores partition block until its context is done, the others
// from its memStore.
type blockOn struct {
	*memStore
	block     int32
	restoring chan struct{}
}

func (s blockOn) Restore(ctx context.Context, partitions []int32, put func(stream.Entry) error) ([]stream.Offset, error) {
	if slices.Contains(partitions, s.block) {
		close(s.restoring)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.memStore.Restore(ctx, partitions, put)
}

// A run cancelled while it restores a partition gained many batches in
// ends there, with the batch that gained it dropped, and commits what the
// batches before it read.
func TestCancelWhileRestoringAGainedPartitionCommitsTheBatchesBefore(t *testing.T) {
	store := blockOn{memStore: newMemStore(), block: 1, restoring: make(chan struct{})}
	src := &feeding{recs: []stream.Record[stream.Pair[int, int]]{pair1(1, 0, 0)}, assigned: []int32{0}}
	var batches atomic.Int64
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store), stream.CommitInterval(time.Hour),
		stream.DrainTimeout(time.Minute), stream.WithHook(hookFunc(func(stream.BatchStats) { batches.Add(1) })))
	c := collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum).Named("st"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for batches.Load() < 1 { // the first batch is committed
		time.Sleep(time.Millisecond)
	}
	src.mu.Lock()
	src.recs = append(src.recs, pair1(1, 0, 1)) // held back
	src.mu.Unlock()
	for n := batches.Load(); batches.Load() < n+3; {
		time.Sleep(time.Millisecond)
	}
	src.mu.Lock()
	src.assigned = []int32{0, 1}
	src.recs = append(src.recs, pair1(2, 1, 0))
	src.mu.Unlock()
	<-store.restoring
	require.NoError(t, cancelled(t, cancel, done))
	for _, b := range c.all() {
		assert.NotContains(t, stateMap(b), 2, "batch %d: the batch that gained partition 1 is not processed", b.Info.ID)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	committed := map[int32]int64{}
	for _, cs := range src.commits {
		for _, o := range cs {
			committed[o.Partition] = max(committed[o.Partition], o.Next)
		}
	}
	assert.Equal(t, map[int32]int64{0: 2}, committed, "what the batches before read, and nothing of partition 1")
	assert.Equal(t, map[string]stream.Offset{"test/0": {Source: "test", Partition: 0, Next: 2}}, store.offsets)
}

// A partition lost and gained again is restored anew: what the run read of
// it before, below the offsets its state was restored to, is not taken
// for where the input ended. Here the partition comes back at the offset
// its state had counted up to, and the input ends there.
func TestInputEndingAfterAPartitionCameBackAtItsRestoredOffset(t *testing.T) {
	store := newMemStore()
	first := &scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
		{pair1(1, 0, 0), pair1(1, 0, 1), pair1(1, 0, 2)},
	}}
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
	collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, first)), sum).Named("st"))
	run(t, p)
	require.Equal(t, stream.Offset{Source: "test", Partition: 0, Next: 3}, store.offsets["test/0"])

	// The committed offset was older than the checkpoint's: the run
	// reads partition 0 from 0, loses it, and gets it back from the
	// offset its first batch committed, 3, where the input ends.
	src := &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
			{pair1(1, 0, 0)},
			{},
			{},
			{}, // the input ends at the batch after the third
		}},
		plan: [][]int32{{0}, {}, {0}},
	}
	p = stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
	c := collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum).Named("st"))
	require.NoError(t, p.Run(context.Background()))
	got := c.all()
	require.NotEmpty(t, got)
	assert.Equal(t, map[int]int{1: 3}, stateMap(got[len(got)-1]))
	assert.Equal(t, []stream.Offset{{Source: "test", Partition: 0, Next: 3}}, src.Commits()[0], "the first batch committed what the state had counted")
}
