package stream

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// onePair yields one pair, then ends.
type onePair struct{ done bool }

func (s *onePair) Poll(_ context.Context, buf []Record[Pair[int, int]]) (int, error) {
	if s.done {
		return 0, io.EOF
	}
	s.done = true
	buf[0] = Record[Pair[int, int]]{Value: KV(1, 1), Origin: Origin{Source: "one", Partition: 3}}
	return 1, nil
}

// A panic of Observe's newObserver, made as a batch first holds a
// partition, fails the batch naming the partition, and leaves the state's
// lock free: the panic runs through it.
func TestPanicInNewObserverUnlocksTheState(t *testing.T) {
	p := NewPipeline(Interval(0), MaxRecords(1))
	totals := UpdateStateByKey(Keyed(From(p, &onePair{})), func(_ int, vs []int, s int, _ bool) (int, bool) {
		return s + len(vs), true
	}, Observe(func(int32) StateObserver[int, int] { panic("bad observer") }))
	ForEachBatch(totals, func(context.Context, *Batch[Pair[int, int]]) error { return nil })
	err := p.Run(context.Background())
	var pe *PanicError
	require.ErrorAs(t, err, &pe)
	var part *PartitionError
	if assert.ErrorAs(t, err, &part) {
		assert.Equal(t, int32(3), part.Partition)
	}
	op := p.stateful[0].(*stateOp[int, int, int])
	if assert.True(t, op.mu.TryLock(), "the state is left locked") {
		op.mu.Unlock()
	}
}

// restoreCounter is a RestoreHook that counts its calls, and panics if
// told to.
type restoreCounter struct {
	panics bool
	calls  int
}

func (*restoreCounter) BatchDone(BatchStats) {}

func (h *restoreCounter) RestoreProgress(RestoreStats) {
	h.calls++
	if h.panics {
		panic("bad hook")
	}
}

// A RestoreHook that panics as it is told of a restore's progress is not
// told of its end, which the panic made: the panic is in the error once.
// The other hooks are told.
func TestRestoreHookThatPanickedIsNotToldOfTheEnd(t *testing.T) {
	bad, other := &restoreCounter{panics: true}, &restoreCounter{}
	p := NewPipeline(WithHook(bad), WithHook(other))
	// The progress is told every 4096 entries, once restoreProgressEvery
	// has passed since the last time, here long before.
	prog := restoreProgress{p: p, stats: RestoreStats{Entries: 4095}}
	err := prog.add()
	var pe *PanicError
	require.ErrorAs(t, err, &pe)
	herr := prog.done(err)
	assert.Equal(t, 1, bad.calls, "calls of the hook that panicked")
	assert.Equal(t, 1, other.calls, "calls of the other hook: the end, not the progress")
	assert.Equal(t, 1, strings.Count(errors.Join(err, herr).Error(), "panic: bad hook"))
}
