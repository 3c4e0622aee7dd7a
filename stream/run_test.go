package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// background is an endless source with a background goroutine, as a Kafka
// consumer has: Run feeds a channel that Poll reads.
type background struct {
	ch      chan int
	runErr  error
	failAt  int
	mu      sync.Mutex
	commits int
	next    int
}

func newBackground() *background { return &background{ch: make(chan int, 16)} }

func (b *background) Run(ctx context.Context) error {
	for i := 1; ; i++ {
		if b.runErr != nil && i == b.failAt {
			return b.runErr
		}
		select {
		case <-ctx.Done():
			return nil
		case b.ch <- i:
		}
	}
}

func (b *background) Poll(ctx context.Context, buf []stream.Record[int]) (int, error) {
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case v := <-b.ch:
		buf[0] = rec(v, 0, int64(v))
		b.mu.Lock()
		b.next = v + 1
		b.mu.Unlock()
		return 1, nil
	}
}

func (b *background) Commit(_ context.Context, offsets []stream.Offset) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.commits++
	return nil
}

func TestCancelFinishesTheBatchAndLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t)
	src := newBackground()
	p := stream.NewPipeline(stream.Interval(time.Hour), stream.MaxRecords(50), stream.Parallelism(4))
	ctx, cancel := context.WithCancel(context.Background())
	var total atomic.Int64
	var batches atomic.Int64
	stream.ForEachBatch(stream.Map(stream.From(p, src), func(v int) int { return v }), func(_ context.Context, b *stream.Batch[int]) error {
		total.Add(int64(b.Len()))
		if batches.Add(1) == 5 {
			cancel() // mid-run, between batches
		}
		return nil
	})
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	select {
	case err := <-done:
		require.NoError(t, err, "a cancelled run returns nil")
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	assert.Equal(t, int64(5), batches.Load())
	assert.Equal(t, int64(250), total.Load())
	assert.Equal(t, 5, src.commits, "every batch processed is committed")
}

func TestCancelWhileCollectingCutsTheBatch(t *testing.T) {
	defer goleak.VerifyNone(t)
	gen, err := source.NewGenerator(source.GeneratorConfig{Seed: 1, Rate: 2000})
	require.NoError(t, err)
	p := stream.NewPipeline(stream.Interval(time.Hour), stream.MaxRecords(0))
	mem := sink.NewMemory[score.Event]()
	stream.To(stream.From(p, gen), mem)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.NoError(t, p.Run(ctx))
	require.Len(t, mem.Batches(), 1, "the batch being collected is cut and output")
	assert.Greater(t, len(mem.Values()), 50)
}

func TestIntervalCutsBatches(t *testing.T) {
	gen, err := source.NewGenerator(source.GeneratorConfig{Seed: 1, Rate: 5000, Count: 1500})
	require.NoError(t, err)
	p := stream.NewPipeline(stream.Interval(50*time.Millisecond), stream.MaxRecords(0))
	mem := sink.NewMemory[score.Event]()
	stream.To(stream.From(p, gen), mem)
	require.NoError(t, p.Run(context.Background()))
	bs := mem.Batches()
	assert.GreaterOrEqual(t, len(bs), 3, "300 ms of events cut every 50 ms")
	n := 0
	for i, b := range bs {
		n += len(b.Values)
		assert.Equal(t, len(b.Values), b.Info.Records)
		if i > 0 {
			assert.False(t, b.Info.Time.Before(bs[i-1].Info.Time))
		}
	}
	assert.Equal(t, 1500, n)
}

func TestEndOfSourceEndsRunWithoutEmptyBatch(t *testing.T) {
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(5))
	mem := sink.NewMemory[int]()
	stream.To(stream.From(p, source.NewSlice("n", ints(10), 1)), mem)
	require.NoError(t, p.Run(context.Background()))
	assert.Len(t, mem.Batches(), 2)

	p = stream.NewPipeline()
	mem = sink.NewMemory[int]()
	stream.To(stream.From(p, source.NewSlice("n", []int{}, 1)), mem)
	require.NoError(t, p.Run(context.Background()))
	assert.Len(t, mem.Batches(), 1, "an empty source still makes one (empty) batch")
}

type failingPoll struct{ n int }

func (f *failingPoll) Poll(_ context.Context, buf []stream.Record[int]) (int, error) {
	f.n++
	if f.n == 3 {
		return 0, errors.New("connection reset")
	}
	buf[0] = rec(f.n, 0, int64(f.n))
	return 1, nil
}

// failingAtDeadline fails once, as its batch's deadline passes, then ends.
type failingAtDeadline struct{ n int }

func (f *failingAtDeadline) Poll(ctx context.Context, buf []stream.Record[int]) (int, error) {
	f.n++
	switch f.n {
	case 1:
		buf[0] = rec(1, 0, 0)
		return 1, nil
	case 2:
		<-ctx.Done()
		return 0, errors.New("connection reset")
	}
	return 0, io.EOF
}

func TestSourceErrors(t *testing.T) {
	t.Run("poll at the deadline", func(t *testing.T) {
		defer goleak.VerifyNone(t)
		p := stream.NewPipeline(stream.Interval(20 * time.Millisecond))
		stream.To(stream.From(p, &failingAtDeadline{}), sink.NewMemory[int]())
		err := p.Run(context.Background())
		assert.EqualError(t, err, "stream: poll source: connection reset")
	})
	t.Run("poll", func(t *testing.T) {
		defer goleak.VerifyNone(t)
		p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(1))
		mem := sink.NewMemory[int]()
		stream.To(stream.From(p, &failingPoll{}), mem)
		err := p.Run(context.Background())
		assert.EqualError(t, err, "stream: poll source: connection reset")
		assert.Equal(t, []int{1, 2}, mem.Values())
	})
	t.Run("runner", func(t *testing.T) {
		defer goleak.VerifyNone(t)
		src := newBackground()
		src.runErr, src.failAt = errors.New("brokers unreachable"), 30
		p := stream.NewPipeline(stream.Interval(time.Hour), stream.MaxRecords(0))
		mem := sink.NewMemory[int]()
		stream.To(stream.From(p, src), mem)
		done := make(chan error)
		go func() { done <- p.Run(context.Background()) }()
		select {
		case err := <-done:
			assert.EqualError(t, err, "stream: source: brokers unreachable")
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not stop on the runner's error")
		}
		assert.Empty(t, mem.Batches(), "the batch in progress is abandoned")
		assert.Zero(t, src.commits)
	})
}

// slowSink writes once release is closed; entered, if not nil, is called
// as a write starts.
type slowSink struct {
	release chan struct{}
	entered func()
}

func (s slowSink) Write(ctx context.Context, _ *stream.Batch[int]) error {
	if s.entered != nil {
		s.entered()
	}
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestDrainTimeoutAbandonsAStuckBatch(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(10), stream.DrainTimeout(50*time.Millisecond))
	src := source.NewSlice("n", ints(100), 1)
	stream.To(stream.From(p, src), slowSink{release: make(chan struct{})})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := p.Run(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "batch not finished 50ms after cancellation")
	assert.Empty(t, src.Committed())
}

func TestDrainTimeoutZeroFinishesTheBatch(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(10), stream.DrainTimeout(0))
	src := source.NewSlice("n", ints(100), 1)
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	stream.To(stream.From(p, src), slowSink{release: release, entered: func() {
		once.Do(func() {
			// Cancelled while the first batch is being written.
			cancel()
			time.AfterFunc(100*time.Millisecond, func() { close(release) })
		})
	}})
	require.NoError(t, p.Run(ctx))
	assert.Equal(t, []stream.Offset{{Source: "n", Partition: 0, Next: 10}}, src.Committed())
}

func TestRunMisuse(t *testing.T) {
	t.Run("no source", func(t *testing.T) {
		assert.ErrorContains(t, stream.NewPipeline().Run(context.Background()), "no source")
	})
	t.Run("no output", func(t *testing.T) {
		p := stream.NewPipeline()
		stream.From(p, source.NewSlice("n", ints(1), 1))
		assert.ErrorContains(t, p.Run(context.Background()), "no output")
	})
	t.Run("two sources", func(t *testing.T) {
		p := stream.NewPipeline()
		stream.To(stream.From(p, source.NewSlice("a", ints(1), 1)), sink.NewMemory[int]())
		stream.To(stream.From(p, source.NewSlice("b", ints(1), 1)), sink.NewMemory[int]())
		assert.ErrorContains(t, p.Run(context.Background()), "two sources")
	})
	t.Run("twice", func(t *testing.T) {
		p := stream.NewPipeline()
		stream.To(stream.From(p, source.NewSlice("a", ints(1), 1)), sink.NewMemory[int]())
		require.NoError(t, p.Run(context.Background()))
		assert.ErrorContains(t, p.Run(context.Background()), "Run called twice")
	})
	t.Run("bad options", func(t *testing.T) {
		for _, o := range []stream.Option{stream.Interval(-1), stream.MaxRecords(-1), stream.Parallelism(0)} {
			p := stream.NewPipeline(o)
			stream.To(stream.From(p, source.NewSlice("a", ints(1), 1)), sink.NewMemory[int]())
			assert.Error(t, p.Run(context.Background()))
		}
		p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(0))
		stream.To(stream.From(p, source.NewSlice("a", ints(1), 1)), sink.NewMemory[int]())
		assert.ErrorContains(t, p.Run(context.Background()), "never be cut")
	})
}

// runCounting is an Assigner source with background work that counts
// the times it was started.
type runCounting struct {
	assigning
	runs atomic.Int32
}

func (r *runCounting) Run(ctx context.Context) error {
	r.runs.Add(1)
	<-ctx.Done()
	return nil
}

// A Run that fails before it starts, the pipeline or its options being
// invalid, starts nothing, not even the source's background work, and
// leaves the pipeline as it was: a second Run fails the same way instead
// of as a second Run, and a pipeline whose graph was completed since
// runs. Once a Run has started, another is refused.
func TestRunFailingValidationStartsNothingAndMayBeCalledAgain(t *testing.T) {
	pipeline := func(opts ...stream.Option) (*stream.Pipeline, *runCounting, *stream.Stream[stream.Pair[int, int]]) {
		src := &runCounting{assigning: assigning{
			scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{{pair1(1, 0, 0)}}},
			plan:     [][]int32{{0}},
		}}
		p := stream.NewPipeline(append([]stream.Option{stream.Interval(2 * time.Millisecond)}, opts...)...)
		return p, src, stream.Keyed(stream.From(p, src))
	}
	for _, c := range []struct {
		name  string
		build func() (*stream.Pipeline, *runCounting)
		err   string
	}{
		{"no output", func() (*stream.Pipeline, *runCounting) {
			p, src, _ := pipeline()
			return p, src
		}, "no output"},
		{"bad option", func() (*stream.Pipeline, *runCounting) {
			p, src, in := pipeline(stream.Parallelism(0))
			collect(in)
			return p, src
		}, "parallelism 0"},
		{"a failure with no consumer", func() (*stream.Pipeline, *runCounting) {
			p, src, in := pipeline()
			ok, _ := stream.TryMap(in, func(kv stream.Pair[int, int]) (int, error) { return kv.Value, nil })
			collect(ok)
			return p, src
		}, "no consumer"},
		{"state in hashed partitions", func() (*stream.Pipeline, *runCounting) {
			p, src, in := pipeline()
			collect(stream.UpdateStateByKey(stream.PartitionByKey(in, 2), sum).Named("totals"))
			return p, src
		}, "the source's partitions are assigned"},
		{"two stateful operators of one name", func() (*stream.Pipeline, *runCounting) {
			p, src, in := pipeline(stream.WithStore(newMemStore()))
			collect(stream.UpdateStateByKey(in, sum).Named("totals"))
			collect(stream.UpdateStateByKey(in, sum).Named("totals"))
			return p, src
		}, "two stateful operators are named"},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			p, src := c.build()
			first := p.Run(context.Background())
			require.ErrorContains(t, first, c.err)
			assert.Zero(t, src.runs.Load(), "the source was started")
			second := p.Run(context.Background())
			require.Error(t, second)
			assert.Equal(t, first.Error(), second.Error(), "the second Run fails as the first")
			assert.Zero(t, src.runs.Load(), "the source was started")
			assert.Empty(t, src.Commits())
		})
	}
	t.Run("completed after a failed Run", func(t *testing.T) {
		defer goleak.VerifyNone(t)
		p, src, in := pipeline()
		require.ErrorContains(t, p.Run(context.Background()), "no output")
		c := collect(in)
		require.NoError(t, p.Run(context.Background()))
		assert.Equal(t, [][]stream.Pair[int, int]{{stream.KV(1, 1)}}, c.values())
		assert.Equal(t, int32(1), src.runs.Load(), "the source is started once")
		assert.ErrorContains(t, p.Run(context.Background()), "Run called twice")
	})
}

type stats struct{ got []stream.BatchStats }

func (s *stats) BatchDone(b stream.BatchStats) {
	// The slices are the engine's until the call returns.
	b.Inputs, b.Outputs, b.State = slices.Clone(b.Inputs), slices.Clone(b.Outputs), slices.Clone(b.State)
	s.got = append(s.got, b)
}

func TestHookSeesEveryBatch(t *testing.T) {
	h := &stats{}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(30), stream.WithHook(h))
	stream.To(stream.From(p, source.NewSlice("n", ints(100), 2)), sink.NewMemory[int]())
	require.NoError(t, p.Run(context.Background()))
	require.Len(t, h.got, 4)
	for i, s := range h.got {
		assert.Equal(t, int64(i+1), s.Info.ID)
		assert.Equal(t, 2, s.Partitions)
		assert.GreaterOrEqual(t, s.Processing, time.Duration(0))
	}
	assert.Equal(t, 10, h.got[3].Info.Records)
}

// cutter asks for a cut after every 3 records.
type cutter struct{ n int }

func (c *cutter) Poll(_ context.Context, buf []stream.Record[int]) (int, error) {
	if c.n == 9 {
		return 0, io.EOF
	}
	c.n++
	buf[0] = rec(c.n, 0, int64(c.n))
	if c.n%3 == 0 {
		return 1, stream.ErrCut
	}
	return 1, nil
}

func TestSourceCanCutTheBatch(t *testing.T) {
	p := stream.NewPipeline(stream.Interval(time.Hour), stream.MaxRecords(0))
	mem := sink.NewMemory[int]()
	stream.To(stream.From(p, &cutter{}), mem)
	require.NoError(t, p.Run(context.Background()))
	var sizes []int
	for _, b := range mem.Batches() {
		sizes = append(sizes, len(b.Values))
	}
	assert.Equal(t, []int{3, 3, 3}, sizes)
}

// lagging is a slice source that says how far behind the pipeline is: the
// records of a partition after the last commit.
type lagging struct {
	*source.Slice[int]
	total [2]int64
}

func (l *lagging) Lag(partition int32) (int64, bool) {
	if partition > 1 {
		return 0, false
	}
	var next int64
	for _, o := range l.Committed() {
		if o.Partition == partition {
			next = o.Next
		}
	}
	return l.total[partition] - next, true
}

func TestHookSeesInputsOutputsAndState(t *testing.T) {
	h := &stats{}
	src := &lagging{Slice: source.NewSlice("n", ints(100), 2), total: [2]int64{50, 50}}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(30), stream.Parallelism(2), stream.WithHook(h))
	in := stream.From(p, src)
	pairs := stream.Map(in, func(v int) stream.Pair[int, int] { return stream.KV(v%10, v) })
	totals := stream.UpdateStateByKey(pairs, sum).Named("totals")
	stream.To(totals, sink.NewMemory[stream.Pair[int, int]]())
	stream.ForEachBatch(totals, func(context.Context, *stream.Batch[stream.Pair[int, int]]) error { return nil })
	stream.ForEachBatch(totals, func(context.Context, *stream.Batch[stream.Pair[int, int]]) error { return nil })
	require.NoError(t, p.Run(context.Background()))

	require.Len(t, h.got, 4)
	var read, lag [2]int64
	for _, s := range h.got {
		n := 0
		for _, in := range s.Inputs {
			assert.Equal(t, "n", in.Source)
			n += in.Records
			read[in.Partition] += int64(in.Records)
			lag[in.Partition] = in.Lag
			assert.Equal(t, 50-read[in.Partition], in.Lag, "batch %d partition %d", s.Info.ID, in.Partition)
		}
		assert.Equal(t, s.Info.Records, n, "batch %d: the inputs' records add up", s.Info.ID)
		names := []string{}
		for _, o := range s.Outputs {
			names = append(names, o.Name)
			assert.GreaterOrEqual(t, o.Duration, time.Duration(0))
		}
		assert.Equal(t, []string{"to(totals)", "forEachBatch(totals)", "forEachBatch(totals)#2"}, names)
		assert.Equal(t, s.Info.Time, s.Scheduled, "no interval: scheduled at the cut")
		assert.Zero(t, s.SchedulingDelay())
		assert.Positive(t, s.Commit, "the slice source commits")
		assert.Zero(t, s.Checkpoint, "no store")
		require.Len(t, s.State, 1)
		assert.Equal(t, "totals", s.State[0].Name)
	}
	assert.Equal(t, [2]int64{50, 50}, read)
	assert.Equal(t, [2]int64{0, 0}, lag, "all read and committed")
	last := h.got[3].State[0]
	assert.Equal(t, 10, last.Keys, "keys 0..9")
	assert.GreaterOrEqual(t, last.Bytes, int64(10*16), "at least a key and a total per key")
}

// Records that change partition at every one, with IDs small, large and
// negative, are collected into their partitions in order, across batches.
func TestCollectInterleavedPartitions(t *testing.T) {
	ids := []int32{0, 3, -2, 1, 5000, 3, 0, 1023, 1024, -2}
	var chunks [][]stream.Record[int]
	want := map[int32][]int{}
	for b := range 3 {
		var chunk []stream.Record[int]
		for i := range 40 {
			id := ids[(i+b)%len(ids)]
			v := b*1000 + i
			chunk = append(chunk, rec(v, id, int64(v)))
			want[id] = append(want[id], v)
		}
		chunks = append(chunks, chunk)
	}
	p := stream.NewPipeline(stream.Interval(20*time.Millisecond), stream.MaxRecords(0))
	got := collect(stream.From(p, &scripted[int]{chunks: chunks}))
	run(t, p)
	have := map[int32][]int{}
	batches := got.all()
	require.Len(t, batches, 3)
	for _, b := range batches {
		for _, part := range b.Partitions {
			for i, v := range part.Values {
				assert.Equal(t, part.ID, part.Origins[i].Partition)
				have[part.ID] = append(have[part.ID], v)
			}
		}
	}
	assert.Equal(t, want, have)
}

// cancelled cancels a Run started with done for its result, and returns
// what it returned; it fails the test if Run has not returned 10 s later.
func cancelled(t *testing.T, cancel context.CancelFunc, done <-chan error) error {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run still going 10s after its cancellation")
		return nil
	}
}

// slowStore restores until its context is done.
type slowStore struct{ restoring chan struct{} }

func (s slowStore) Restore(ctx context.Context, _ []int32, _ func(stream.Entry) error) ([]stream.Offset, error) {
	close(s.restoring)
	<-ctx.Done()
	return nil, fmt.Errorf("restore: %w", ctx.Err())
}

func (slowStore) Checkpoint(context.Context, *stream.Changes) error {
	return errors.New("a batch was checkpointed")
}

// A run cancelled while it restores its state at the start (a long
// restore, brokers gone) ends at once, with nil and nothing output or
// committed, instead of waiting out its DrainTimeout as a batch would and
// failing.
func TestCancelWhileRestoringEndsTheRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	store := slowStore{restoring: make(chan struct{})}
	p := stream.NewPipeline(stream.Interval(time.Millisecond), stream.WithStore(store), stream.DrainTimeout(time.Minute))
	src := source.NewSlice("s", []stream.Pair[int, int]{{Key: 1, Value: 1}}, 1)
	var batches atomic.Int64
	stream.ForEachBatch(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), func(_ int, vs []int, s int, _ bool) (int, bool) {
		for _, v := range vs {
			s += v
		}
		return s, true
	}), func(context.Context, *stream.Batch[stream.Pair[int, int]]) error {
		batches.Add(1)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-store.restoring
	require.NoError(t, cancelled(t, cancel, done))
	assert.Zero(t, batches.Load())
}

// A panic in a function given to an operator or an output fails the
// batch: Run returns it as a *PanicError within a *StageError naming the
// stage (and the partition), with nothing committed, whether the
// partitions run on the run loop's goroutine or on workers (where it
// would crash the process), and no goroutine is left.
func TestPanicInAFunctionFailsTheBatch(t *testing.T) {
	for _, par := range []int{1, 3} {
		t.Run(fmt.Sprintf("parallelism %d", par), func(t *testing.T) {
			for _, where := range []string{"map", "output"} {
				defer goleak.VerifyNone(t)
				p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(100), stream.Parallelism(par))
				src := source.NewSlice("n", ints(100), 4)
				m := stream.Map(stream.From(p, src), func(v int) int {
					if where == "map" && v == 42 {
						panic("bad value")
					}
					return v
				}).Named("double")
				stream.ForEachBatch(m, func(_ context.Context, b *stream.Batch[int]) error {
					if where == "output" {
						panic(fmt.Errorf("wrapped: %w", io.ErrUnexpectedEOF))
					}
					return nil
				})
				err := p.Run(context.Background())
				var pe *stream.PanicError
				require.ErrorAs(t, err, &pe, where)
				assert.Contains(t, string(pe.Stack), "run_test.go", "%s: the stack of the panic", where)
				var se *stream.StageError
				require.ErrorAs(t, err, &se, where)
				if where == "map" {
					assert.Equal(t, "double", se.Stage)
					assert.Equal(t, "panic: bad value", pe.Error())
					var part *stream.PartitionError
					require.ErrorAs(t, err, &part)
					assert.Equal(t, int32((42-1)%4), part.Partition, "value 42, the 42nd, is in partition 41 mod 4")
				} else {
					assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "a panic with an error unwraps to it")
				}
				assert.Empty(t, src.Committed(), where)
			}
		})
	}
}

// emptyPolls is a source whose Poll returns at once with no record and no
// error, instead of blocking until it has one. It counts its Polls.
type emptyPolls struct{ polls atomic.Int64 }

func (s *emptyPolls) Poll(context.Context, []stream.Record[int]) (int, error) {
	s.polls.Add(1)
	return 0, nil
}

// A source that breaks Poll's contract by returning nothing at once does
// not make Run spin: after a few such Polls the engine waits between them,
// a little longer each time, and warns once, naming the source.
func TestPollReturningNothingAtOnceIsBackedOff(t *testing.T) {
	src := &emptyPolls{}
	var logs bytes.Buffer
	p := stream.NewPipeline(stream.Interval(20*time.Millisecond), stream.MaxRecords(0),
		stream.Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[int]) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.NoError(t, p.Run(ctx))
	// 200ms of waits of up to a few ms each, from the first batch on: a
	// spinning loop polls hundreds of thousands of times.
	assert.Less(t, src.polls.Load(), int64(2000))
	assert.Equal(t, 1, strings.Count(logs.String(), `level=WARN msg="source's Poll returned no record and no error at once`), logs.String())
	assert.Contains(t, logs.String(), `source=*stream_test.emptyPolls`)
}
