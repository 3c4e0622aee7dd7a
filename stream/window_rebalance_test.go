package stream_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream"
)

// plus is the reduction of the window tests.
func plus(a, b int) int { return a + b }

// windowInverses are ReduceByKeyAndWindow's two ways, with the inverse of plus.
var windowInverses = map[string]func(int, int) int{
	"recompute": nil,
	"inverse":   func(a, b int) int { return a - b },
}

// A partition an Assigner source loses takes its windowed values with it:
// the windows of the batches after the loss hold none of its keys.
func TestWindowDropsLostPartition(t *testing.T) {
	for name, inv := range windowInverses {
		t.Run(name, func(t *testing.T) {
			src := &assigning{
				scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
					{pair1(10, 0, 0), pair1(11, 1, 0)},
					{pair1(10, 0, 1)}, // partition 1 lost before this batch
					{pair1(10, 0, 2)},
				}},
				plan: [][]int32{{0, 1}, {0}, {0}},
			}
			p := stream.NewPipeline(stream.Interval(2 * time.Millisecond))
			c := collect(stream.ReduceByKeyAndWindow(stream.Keyed(stream.From(p, src)), plus, inv, 3, 1))
			run(t, p)
			got := c.all()
			require.Len(t, got, 3)
			assert.Equal(t, map[int]int{10: 1, 11: 1}, stateMap(got[0]))
			assert.Equal(t, map[int]int{10: 2}, stateMap(got[1]), "partition 1 lost: its key leaves the window")
			assert.Equal(t, map[int]int{10: 3}, stateMap(got[2]))
		})
	}
}

// A partition lost and assigned again is read again from its committed
// offset; the batches not committed before it was lost (CommitInterval)
// must not stay in the window, or their records count twice.
func TestWindowOfRegainedPartitionCountsRecordsOnce(t *testing.T) {
	for name, inv := range windowInverses {
		t.Run(name, func(t *testing.T) {
			src := &assigning{
				scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
					{pair1(1, 0, 0)},                 // committed: the first batch is
					{pair1(1, 0, 1)},                 // held back by the interval
					{},                               // partition 0 lost: offset 1 is not committed
					{pair1(1, 0, 1), pair1(1, 0, 2)}, // assigned again: read from offset 1
				}},
				plan: [][]int32{{0}, {0}, {}, {0}},
			}
			p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.CommitInterval(time.Hour))
			c := collect(stream.ReduceByKeyAndWindow(stream.Keyed(stream.From(p, src)), plus, inv, 4, 1))
			run(t, p)
			got := c.all()
			require.Len(t, got, 4)
			for _, b := range got {
				assert.LessOrEqual(t, stateMap(b)[1], 3, "batch %d: key 1 has 3 records, at offsets 0 to 2", b.Info.ID)
			}
		})
	}
}

// A window of keys placed by hash holds no source partition of its own:
// a lost source partition drops none of its values.
func TestHashedWindowKeepsValuesOnRebalance(t *testing.T) {
	var chunk []stream.Record[stream.Pair[int, int]]
	for k := range 20 {
		chunk = append(chunk, pair1(k, 0, int64(k)))
	}
	src := &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{chunk, {pair1(100, 0, 20)}}},
		plan:     [][]int32{{0, 1, 2, 3}, {0}},
	}
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(4))
	c := collect(stream.ReduceByKeyAndWindow(stream.From(p, src), plus, windowInverses["inverse"], 2, 1))
	run(t, p)
	got := c.all()
	require.Len(t, got, 2)
	assert.Len(t, stateMap(got[1]), 21, "the keys of partition 0 stay in the window")
}

// Window drops the batches' records of a lost partition too.
func TestWindowOfRecordsDropsLostPartition(t *testing.T) {
	src := &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
			{pair1(10, 0, 0), pair1(11, 1, 0)},
			{pair1(10, 0, 1)}, // partition 1 lost before this batch
		}},
		plan: [][]int32{{0, 1}, {0}},
	}
	p := stream.NewPipeline(stream.Interval(2 * time.Millisecond))
	c := collect(stream.Window(stream.Keyed(stream.From(p, src)), 3, 1))
	run(t, p)
	got := c.all()
	require.Len(t, got, 2)
	var parts []int32
	for _, part := range got[1].Partitions {
		if len(part.Values) > 0 {
			parts = append(parts, part.ID)
		}
	}
	assert.Equal(t, []int32{0}, parts, "partition 1 lost: its records leave the window")
	assert.Equal(t, 2, got[1].Len())
}
