package stream

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A partition dropped, then restored before the state's next batch (as
// when it is lost and gained back between two batches the state does not
// see, under a window that slides by more than one), is listed once among
// the state's partitions, not twice: a checkpoint would go through it
// twice.
func TestStateRestoredAfterADropListsItsPartitionOnce(t *testing.T) {
	p := NewPipeline()
	totals := UpdateStateByKey(Keyed(From(p, &onePair{})), func(_ int, vs []int, s int, _ bool) (int, bool) {
		return s + len(vs), true
	})
	ForEachBatch(totals, func(context.Context, *Batch[Pair[int, int]]) error { return nil })
	op := p.stateful[0].(*stateOp[int, int, int])
	entry := func(partition int32, k int) Entry {
		key, err := op.keyCodec.Append(nil, k)
		require.NoError(t, err)
		value, err := op.stateCodec.Append(nil, 1)
		require.NoError(t, err)
		return Entry{Op: op.name(), Partition: partition, Key: key, Value: value}
	}
	for _, e := range []Entry{entry(1, 10), entry(2, 20)} {
		require.NoError(t, op.restore(e, 1, 1))
	}
	op.restored()
	require.Equal(t, []int32{1, 2}, op.ids)
	require.NoError(t, op.dropPartitions([]int32{1}))
	assert.Equal(t, []int32{2}, op.ids, "after the drop")
	require.NoError(t, op.restore(entry(1, 10), 1, 3))
	op.restored()
	assert.Equal(t, []int32{1, 2}, op.ids, "after the restore")
}

// The operators that keep state in the Store, the stateful ones then the
// windows, are listed once as Run starts, not again at every checkpoint,
// restore and batch.
func TestStoresAreListedAsRunStarts(t *testing.T) {
	p := NewPipeline()
	in := Keyed(From(p, &onePair{}))
	nop := func(context.Context, *Batch[Pair[int, int]]) error { return nil }
	ForEachBatch(Window(in, 2, 1).Named("window"), nop)
	ForEachBatch(UpdateStateByKey(in, func(_ int, vs []int, s int, _ bool) (int, bool) {
		return s + len(vs), true
	}).Named("totals"), nop)
	require.NoError(t, p.validate())
	var names []string
	for _, s := range p.stores() {
		names = append(names, s.name())
	}
	assert.Equal(t, []string{"totals", "window"}, names)
	assert.Zero(t, testing.AllocsPerRun(100, func() { _ = p.stores() }))
}
