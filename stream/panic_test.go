package stream_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/stream"
)

// panicHook panics in the calls named by its fields.
type panicHook struct {
	batchDone, finalCommit, restore bool
}

func (h *panicHook) BatchDone(s stream.BatchStats) {
	if h.batchDone && s.Info.ID == 2 {
		panic("bad hook")
	}
}

func (h *panicHook) FinalCommit(stream.CommitStats) {
	if h.finalCommit {
		panic("bad hook")
	}
}

func (h *panicHook) RestoreProgress(stream.RestoreStats) {
	if h.restore {
		panic("bad hook")
	}
}

// panicCodec is the default codec of ints, but for a panic in Append or
// Decode.
type panicCodec struct {
	stream.Codec[int]
	append, decode bool
}

func (c panicCodec) Append(dst []byte, v int) ([]byte, error) {
	if c.append {
		panic("bad codec")
	}
	return c.Codec.Append(dst, v)
}

func (c panicCodec) Decode(b []byte) (int, error) {
	if c.decode {
		panic("bad codec")
	}
	return c.Codec.Decode(b)
}

// panicObserver panics when a key is removed, or on any change.
type panicObserver struct{ any bool }

func (o panicObserver) Changed(_, _ int, _ bool, _ int, hasCur bool) {
	if o.any || !hasCur {
		panic("bad observer")
	}
}

// checkpoints counts a Store's checkpoints.
type checkpoints struct {
	*memStore
	n int
}

func (c *checkpoints) Checkpoint(ctx context.Context, ch *stream.Changes) error {
	c.n++
	return c.memStore.Checkpoint(ctx, ch)
}

// filledStore returns a Store holding the state of keys 1 and 2 of
// totals, in partitions 0 and 1.
func filledStore(t *testing.T) *memStore {
	store := newMemStore()
	src := &scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{{pair1(1, 0, 0), pair1(2, 1, 0)}}}
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
	collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum).Named("totals"))
	run(t, p)
	require.Len(t, store.entries, 2)
	return store
}

// A panic in a function of the user's that runs on Run's goroutine
// outside a stage (a hook, OnRebalance, a state codec or observer during
// a checkpoint, a restore or a rebalance) fails the run as a panic in a
// stage does: Run returns it as a *PanicError, naming what panicked,
// commits and checkpoints nothing after it, and leaves no goroutine,
// instead of the panic crashing the process.
func TestPanicOutsideAStageFailsTheRun(t *testing.T) {
	chunks := func() [][]stream.Record[stream.Pair[int, int]] {
		return [][]stream.Record[stream.Pair[int, int]]{
			{pair1(1, 0, 0), pair1(2, 1, 0)},
			{pair1(1, 0, 1), pair1(2, 1, 1)},
			{pair1(1, 0, 2)},
			{}, // the input ends with a batch of none: what batch 3 read is committed as Run ends
		}
	}
	type setup struct {
		opts    []stream.Option
		state   []stream.StateOption
		plan    [][]int32 // the assignment before each batch; nil: no Assigner
		store   *memStore // nil: none, or with a store option, an empty one
		durable bool
	}
	observe := func(o stream.StateObserver[int, int]) stream.StateOption {
		return stream.Observe(func(int32) stream.StateObserver[int, int] { return o })
	}
	cases := []struct {
		name    string
		setup   func(t *testing.T) setup
		want    string // in the error
		commits int    // before the panic
	}{
		{"BatchDone", func(*testing.T) setup {
			return setup{opts: []stream.Option{stream.WithHook(&panicHook{batchDone: true})}}
		}, "stream: batch 2: hook *stream_test.panicHook: panic: bad hook", 2},
		{"FinalCommit", func(*testing.T) setup {
			return setup{opts: []stream.Option{stream.CommitInterval(time.Hour), stream.WithHook(&panicHook{finalCommit: true})}}
		}, "stream: final commit after batch 3 done, then hook *stream_test.panicHook: panic: bad hook", 2},
		{"RestoreProgress", func(*testing.T) setup {
			return setup{opts: []stream.Option{stream.WithHook(&panicHook{restore: true})}, durable: true}
		}, "hook *stream_test.panicHook: panic: bad hook", 0},
		{"RestoreProgress of gained partitions", func(*testing.T) setup {
			return setup{opts: []stream.Option{stream.WithHook(&panicHook{restore: true})}, durable: true, plan: [][]int32{{0, 1}}}
		}, "hook *stream_test.panicHook: panic: bad hook", 0},
		{"OnRebalance", func(*testing.T) setup {
			return setup{opts: []stream.Option{stream.OnRebalance(func(context.Context, []int32, []int32) error { panic("bad rebalance") })}, plan: [][]int32{{0, 1}}}
		}, "stream: rebalance (lost [], gained [0 1]): OnRebalance: panic: bad rebalance", 0},
		{"key codec at a checkpoint", func(*testing.T) setup {
			return setup{state: []stream.StateOption{stream.Codecs[int, int](panicCodec{Codec: stream.CodecFor[int](), append: true}, stream.CodecFor[int]())}, durable: true}
		}, "stream: batch 1: checkpoint: totals: panic: bad codec", 0},
		{"state codec at a restore", func(t *testing.T) setup {
			return setup{state: []stream.StateOption{stream.Codecs[int, int](stream.CodecFor[int](), panicCodec{Codec: stream.CodecFor[int](), decode: true})}, store: filledStore(t)}
		}, "totals: partition 0: panic: bad codec", 0},
		{"state codec at a restore of gained partitions", func(t *testing.T) setup {
			return setup{state: []stream.StateOption{stream.Codecs[int, int](stream.CodecFor[int](), panicCodec{Codec: stream.CodecFor[int](), decode: true})}, store: filledStore(t), plan: [][]int32{{0, 1}}}
		}, "totals: partition 0: panic: bad codec", 0},
		{"observer at a rebalance", func(*testing.T) setup {
			return setup{state: []stream.StateOption{observe(panicObserver{})}, plan: [][]int32{{0, 1}, {0}}}
		}, "stream: rebalance (lost [1], gained []): totals: partition 1: panic: bad observer", 1},
		{"observer as the run ends", func(*testing.T) setup {
			// Partition 1 is lost after the last batch, which
			// CommitInterval held back.
			return setup{opts: []stream.Option{stream.CommitInterval(time.Hour)}, state: []stream.StateOption{observe(panicObserver{})}, plan: [][]int32{{0, 1}, {0, 1}, {0, 1}, {0}}}
		}, "stream: partitions lost as the run ends ([1]): totals: partition 1: panic: bad observer", 1},
		{"observer at a restore", func(t *testing.T) setup {
			return setup{state: []stream.StateOption{observe(panicObserver{any: true})}, store: filledStore(t)}
		}, "totals: partition 0: panic: bad observer", 0},
		{"new observer at a restore", func(t *testing.T) setup {
			return setup{state: []stream.StateOption{stream.Observe(func(int32) stream.StateObserver[int, int] { panic("bad observer") })}, store: filledStore(t)}
		}, "totals: partition 0: panic: bad observer", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			s := c.setup(t)
			var (
				src  stream.Source[stream.Pair[int, int]]
				sc   *scripted[stream.Pair[int, int]]
				opts = append([]stream.Option{stream.Interval(2 * time.Millisecond), stream.Parallelism(2)}, s.opts...)
			)
			if s.plan != nil {
				a := &assigning{scripted: scripted[stream.Pair[int, int]]{chunks: chunks()}, plan: s.plan}
				src, sc = a, &a.scripted
			} else {
				sc = &scripted[stream.Pair[int, int]]{chunks: chunks()}
				src = sc
			}
			var store *checkpoints
			if s.store != nil || s.durable {
				store = &checkpoints{memStore: s.store}
				if store.memStore == nil {
					store.memStore = newMemStore()
				}
				opts = append(opts, stream.WithStore(store))
			}
			p := stream.NewPipeline(opts...)
			collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum, s.state...).Named("totals"))
			err := p.Run(context.Background())
			var pe *stream.PanicError
			require.ErrorAs(t, err, &pe)
			assert.ErrorContains(t, err, c.want)
			assert.Contains(t, string(pe.Stack), "panic_test.go", "the stack of the panic")
			assert.Len(t, sc.Commits(), c.commits, "commits")
			if store != nil {
				assert.Equal(t, c.commits, store.n, "checkpoints")
			}
		})
	}
}

// panicSource is an assigning source that panics in the methods its
// fields name, on their first call; Poll with the value of poll.
type panicSource struct {
	*assigning
	poll                    any
	assignment, lag, commit bool
}

func (s *panicSource) Poll(ctx context.Context, buf []stream.Record[stream.Pair[int, int]]) (int, error) {
	if s.poll != nil {
		panic(s.poll)
	}
	return s.assigning.Poll(ctx, buf)
}

func (s *panicSource) Assignment() []int32 {
	if s.assignment {
		panic("bad source")
	}
	return s.assigning.Assignment()
}

func (s *panicSource) Lag(int32) (int64, bool) {
	if s.lag {
		panic("bad source")
	}
	return 0, false
}

func (s *panicSource) Commit(ctx context.Context, offsets []stream.Offset) error {
	if s.commit {
		panic("bad source")
	}
	return s.assigning.Commit(ctx, offsets)
}

// runnerSource is a panicSource that is a Runner, whose Run panics at
// once, once its context is done (late), or once trigger is closed.
type runnerSource struct {
	*panicSource
	late    bool
	trigger chan struct{}
}

func (s *runnerSource) Run(ctx context.Context) error {
	switch {
	case s.late:
		<-ctx.Done()
	case s.trigger != nil:
		<-s.trigger
	}
	panic("bad runner")
}

// panicStore is a memStore that panics in Restore or Checkpoint, and
// counts its checkpoints.
type panicStore struct {
	*memStore
	restore, checkpoint bool
	checkpoints         int
}

func (s *panicStore) Restore(ctx context.Context, partitions []int32, put func(stream.Entry) error) ([]stream.Offset, error) {
	if s.restore {
		panic("bad store")
	}
	return s.memStore.Restore(ctx, partitions, put)
}

func (s *panicStore) Checkpoint(ctx context.Context, c *stream.Changes) error {
	if s.checkpoint {
		panic("bad store")
	}
	s.checkpoints++
	return s.memStore.Checkpoint(ctx, c)
}

// panicSink panics in Write or Flush, or fails its Write.
type panicSink struct {
	write, flush bool
	fail         error
}

func (s *panicSink) Write(context.Context, *stream.Batch[stream.Pair[int, int]]) error {
	if s.write {
		panic("bad sink")
	}
	return s.fail
}

func (s *panicSink) Flush(context.Context) error {
	if s.flush {
		panic("bad sink")
	}
	return nil
}

// panicTxn panics in the methods its fields name, and counts the calls
// of Abort.
type panicTxn struct {
	begin, commit, abort bool
	aborts               int
}

func (t *panicTxn) Begin(context.Context) error {
	if t.begin {
		panic("bad transaction")
	}
	return nil
}

func (t *panicTxn) Commit(context.Context) error {
	if t.commit {
		panic("bad transaction")
	}
	return nil
}

func (t *panicTxn) Abort(context.Context) error {
	t.aborts++
	if t.abort {
		panic("bad transaction")
	}
	return nil
}

// nopHook makes Run gather BatchStats, and so ask a Lagger.
type nopHook struct{}

func (nopHook) BatchDone(stream.BatchStats) {}

// A panic in a method of an interface the user implements and the engine
// calls on Run's goroutine (the source's Poll, Assignment, Lag, Commit and
// Run, the Store's, a Flusher's, a Transaction's) fails the run as a panic
// of an operator's function does: Run returns it as a *PanicError naming
// what panicked, commits nothing after it and leaves no goroutine, instead
// of the panic crashing the process.
func TestPanicInAnInterfaceFailsTheRun(t *testing.T) {
	chunks := func() [][]stream.Record[stream.Pair[int, int]] {
		return [][]stream.Record[stream.Pair[int, int]]{
			{pair1(1, 0, 0), pair1(2, 1, 0)},
			{pair1(1, 0, 1), pair1(2, 1, 1)},
		}
	}
	cases := []struct {
		name    string
		src     func(s *panicSource) stream.Source[stream.Pair[int, int]]
		store   *panicStore
		sink    *panicSink
		txn     *panicTxn
		output  func(ctx context.Context, src stream.Source[stream.Pair[int, int]]) // run in the first batch
		want    string                                                              // in the error
		commits int                                                                 // before the panic
		aborts  int
	}{
		{name: "Poll", src: func(s *panicSource) stream.Source[stream.Pair[int, int]] { s.poll = "bad source"; return s },
			want: "stream: poll source: source *stream_test.panicSource: Poll: panic: bad source"},
		{name: "Poll with io.EOF", src: func(s *panicSource) stream.Source[stream.Pair[int, int]] { s.poll = io.EOF; return s },
			want: "stream: poll source: source *stream_test.panicSource: Poll: panic: EOF"},
		{name: "Poll with ErrCut", src: func(s *panicSource) stream.Source[stream.Pair[int, int]] { s.poll = stream.ErrCut; return s },
			want: "stream: poll source: source *stream_test.panicSource: Poll: panic: stream: cut the batch now"},
		{name: "Assignment", src: func(s *panicSource) stream.Source[stream.Pair[int, int]] { s.assignment = true; return s },
			want: "stream: source *stream_test.panicSource: Assignment: panic: bad source"},
		{name: "Lag", src: func(s *panicSource) stream.Source[stream.Pair[int, int]] { s.lag = true; return s },
			want: "stream: batch 1: source *stream_test.panicSource: Lag: panic: bad source", commits: 1},
		{name: "Commit", src: func(s *panicSource) stream.Source[stream.Pair[int, int]] { s.commit = true; return s },
			want: "stream: batch 1: commit: source *stream_test.panicSource: Commit: panic: bad source"},
		{name: "Run", src: func(s *panicSource) stream.Source[stream.Pair[int, int]] { return &runnerSource{panicSource: s} },
			want: "stream: source *stream_test.runnerSource: Run: panic: bad runner"},
		{name: "Run as the run ends", src: func(s *panicSource) stream.Source[stream.Pair[int, int]] {
			return &runnerSource{panicSource: s, late: true}
		}, want: "stream: source *stream_test.runnerSource: Run: panic: bad runner", commits: 2},
		{name: "Run as a batch is output", src: func(s *panicSource) stream.Source[stream.Pair[int, int]] {
			return &runnerSource{panicSource: s, trigger: make(chan struct{})}
		}, output: func(ctx context.Context, src stream.Source[stream.Pair[int, int]]) {
			// The output, which does not fail, returns once the
			// panic has stopped the batch's work.
			close(src.(*runnerSource).trigger)
			<-ctx.Done()
		}, store: &panicStore{}, want: "stream: source *stream_test.runnerSource: Run: panic: bad runner"},
		{name: "Store.Restore", store: &panicStore{restore: true},
			want: "stream: restore state: store *stream_test.panicStore: Restore: panic: bad store"},
		{name: "Store.Checkpoint", store: &panicStore{checkpoint: true},
			want: "stream: batch 1: checkpoint: store *stream_test.panicStore: Checkpoint: panic: bad store"},
		{name: "Sink.Write", sink: &panicSink{write: true},
			want: "stream: batch 1: to(totals): panic: bad sink"},
		{name: "Flusher.Flush", sink: &panicSink{flush: true},
			want: "stream: to(totals): batch 1: flush: sink *stream_test.panicSink: Flush: panic: bad sink"},
		{name: "Transaction.Begin", txn: &panicTxn{begin: true}, store: &panicStore{},
			want: "stream: batch 1: begin transaction: transaction *stream_test.panicTxn: Begin: panic: bad transaction", aborts: 1},
		{name: "Transaction.Commit", txn: &panicTxn{commit: true}, store: &panicStore{},
			want: "stream: batch 1: commit transaction: transaction *stream_test.panicTxn: Commit: panic: bad transaction", commits: 1, aborts: 1},
		{name: "Transaction.Abort", txn: &panicTxn{abort: true}, store: &panicStore{}, sink: &panicSink{fail: errors.New("write failed")},
			want: "stream: batch 1: abort transaction: transaction *stream_test.panicTxn: Abort: panic: bad transaction", aborts: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			ps := &panicSource{assigning: &assigning{scripted: scripted[stream.Pair[int, int]]{chunks: chunks()}, plan: [][]int32{{0, 1}}}}
			var src stream.Source[stream.Pair[int, int]] = ps
			if c.src != nil {
				src = c.src(ps)
			}
			opts := []stream.Option{stream.Interval(2 * time.Millisecond), stream.WithHook(nopHook{})}
			if c.store != nil {
				c.store.memStore = newMemStore()
				opts = append(opts, stream.WithStore(c.store))
			}
			if c.txn != nil {
				opts = append(opts, stream.WithTransaction(c.txn))
			}
			p := stream.NewPipeline(opts...)
			totals := stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum).Named("totals")
			if c.sink != nil {
				stream.To(totals, c.sink)
			}
			collect(totals)
			if c.output != nil {
				stream.ForEachBatch(totals, func(ctx context.Context, b *stream.Batch[stream.Pair[int, int]]) error {
					if b.Info.ID == 1 {
						c.output(ctx, src)
					}
					return nil
				})
			}
			err := p.Run(context.Background())
			var pe *stream.PanicError
			require.ErrorAs(t, err, &pe)
			assert.ErrorContains(t, err, c.want)
			assert.Equal(t, 1, strings.Count(err.Error(), "panic:"), "the panic once in %q", err)
			assert.Contains(t, string(pe.Stack), "panic_test.go", "the stack of the panic")
			assert.Len(t, ps.Commits(), c.commits, "commits")
			if c.txn != nil {
				assert.Equal(t, c.aborts, c.txn.aborts, "aborts")
			}
			if c.store != nil {
				assert.Equal(t, c.commits, c.store.checkpoints, "checkpoints")
			}
		})
	}
}
