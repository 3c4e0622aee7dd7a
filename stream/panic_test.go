package stream_test

import (
	"context"
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
		}, "hook *stream_test.panicHook: panic: bad hook", 2},
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
