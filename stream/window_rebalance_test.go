package stream_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

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
			src := regainedPartition()
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

// Window drops the batches' records of a lost partition too.
func TestWindowOfRecordsDropsLostPartition(t *testing.T) {
	src := losingPartition1()
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

// keys maps a stream of pairs to their keys: a stream that is not Keyed.
func keys(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
	return stream.Map(s, func(kv stream.Pair[int, int]) int { return kv.Key })
}

// graphsInSourcePartitions are streams that are not Keyed but whose
// partitions are still the source's, each value in the partition of the
// record it came from.
var graphsInSourcePartitions = map[string]func(*stream.Stream[stream.Pair[int, int]]) *stream.Stream[int]{
	"map": keys,
	"filter": func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
		return stream.Filter(keys(s), func(int) bool { return true })
	},
	"flatMap": func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
		return stream.FlatMap(keys(s), func(dst []int, k int) []int { return append(dst, k) })
	},
	"mapPartitions": func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
		return stream.MapPartitions(keys(s), func(p *stream.Partition[int]) ([]int, error) { return p.Values, nil })
	},
	"window": func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
		return stream.Window(keys(s), 1, 1)
	},
	"transform declared keyed": func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
		// Keyed says that the Transform kept the source's partitions.
		same := func(b *stream.Batch[stream.Pair[int, int]]) (*stream.Batch[stream.Pair[int, int]], error) {
			return b, nil
		}
		return keys(stream.Keyed(stream.Transform(s, same)))
	},
}

// A window of a stream that is not Keyed, but whose partitions are the
// source's, drops a lost partition's values too: the process no longer
// owns it, and must not go on giving results of it beside its new owner.
func TestWindowNotKeyedDropsLostPartition(t *testing.T) {
	for name, graph := range graphsInSourcePartitions {
		t.Run(name, func(t *testing.T) {
			src := losingPartition1()
			p := stream.NewPipeline(stream.Interval(2 * time.Millisecond))
			c := collect(stream.Window(graph(stream.From(p, src)), 3, 1))
			run(t, p)
			got := c.values()
			require.Len(t, got, 2)
			assert.Equal(t, []int{10, 11}, sorted(got[0]))
			assert.Equal(t, []int{10, 10}, sorted(got[1]), "partition 1 lost: its values leave the window")
		})
	}
}

// A window of a stream that is not Keyed counts the records of a
// partition lost and assigned again once: the batches not committed
// before it was lost (CommitInterval) are read again.
func TestWindowNotKeyedOfRegainedPartitionCountsRecordsOnce(t *testing.T) {
	src := regainedPartition()
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.CommitInterval(time.Hour))
	c := collect(stream.Window(keys(stream.From(p, src)), 4, 1))
	run(t, p)
	got := c.values()
	require.Len(t, got, 4)
	for i, vs := range got {
		assert.LessOrEqual(t, len(vs), 3, "batch %d: 3 records, at offsets 0 to 2", i+1)
	}
}

// movedGraphs are windows of streams whose partitions are not the
// source's: made by a hash of the keys, or mixing the source's partitions.
var movedGraphs = map[string]struct {
	op    string
	build func(*stream.Stream[stream.Pair[int, int]]) *stream.Stream[int]
}{
	"reduceByKeyAndWindow of partitionByKey": {"ReduceByKeyAndWindow", func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
		return keys(stream.ReduceByKeyAndWindow(stream.PartitionByKey(stream.Keyed(s), 2), plus, windowInverses["inverse"], 3, 1).Named("windowed"))
	}},
	"window of partitionByKey": {"Window", func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
		return keys(stream.Window(stream.PartitionByKey(s, 2), 3, 1).Named("windowed"))
	}},
	"window of keyed map of partitionByKey": {"Window", func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
		// Keyed asserts the keys are together, not that the partitions
		// are the source's again: they are still PartitionByKey's.
		same := stream.Map(stream.PartitionByKey(s, 2), func(kv stream.Pair[int, int]) stream.Pair[int, int] { return kv })
		return keys(stream.Window(stream.Keyed(same), 3, 1).Named("windowed"))
	}},
	"reduceByKeyAndWindow of keyed map of reduceByKey": {"ReduceByKeyAndWindow", func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
		same := stream.Map(stream.ReduceByKey(s, plus), func(kv stream.Pair[int, int]) stream.Pair[int, int] { return kv })
		return keys(stream.ReduceByKeyAndWindow(stream.Keyed(same), plus, nil, 3, 1).Named("windowed"))
	}},
	"window of reduce": {"Window", func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
		return stream.Window(stream.Reduce(keys(s), plus), 3, 1).Named("windowed")
	}},
	"window of transform": {"Window", func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[int] {
		return stream.Window(stream.Transform(keys(s), func(b *stream.Batch[int]) (*stream.Batch[int], error) {
			all := slices.Collect(b.All())
			return &stream.Batch[int]{Partitions: []stream.Partition[int]{{ID: 0, Values: all}}}, nil
		}), 3, 1).Named("windowed")
	}},
}

// A window of partitions that are not the source's cannot tell a lost
// source partition's values from the others: it would go on giving
// results of them beside their new owner, and count twice what it reads
// again when the partition comes back. Under an Assigner source Run
// refuses it at start, naming the operator and what to do, as it
// refuses state in hashed partitions; without one, it runs.
func TestAssignerNeedsWindowsInTheSourcePartitions(t *testing.T) {
	chunks := func() [][]stream.Record[stream.Pair[int, int]] {
		return [][]stream.Record[stream.Pair[int, int]]{{pair1(10, 0, 0), pair1(11, 1, 0)}, {pair1(12, 1, 1)}}
	}
	for name, g := range movedGraphs {
		t.Run(name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			src := &assigning{scripted: scripted[stream.Pair[int, int]]{chunks: chunks()}, plan: [][]int32{{0, 1}, {1}}}
			p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(2))
			collect(g.build(stream.From(p, src)))
			err := p.Run(context.Background())
			require.Error(t, err)
			assert.Contains(t, err.Error(), "stream: windowed: "+g.op+" of partitions that are not the source's")
			assert.Contains(t, err.Error(), "is an Assigner")
			assert.Contains(t, err.Error(), "ReduceByKey(Window(s, length, slide), f)", "what to do")
			assert.Empty(t, src.Commits(), "nothing read")

			plain := &scripted[stream.Pair[int, int]]{chunks: chunks()}
			p = stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(2))
			c := collect(g.build(stream.From(p, plain)))
			run(t, p)
			assert.Len(t, c.all(), 2, "without an Assigner the window runs")
		})
	}
}

// What the refusal proposes, the window before the values move, drops a
// lost partition's values.
func TestWindowBeforeReduceByKeyDropsLostPartition(t *testing.T) {
	src := losingPartition1()
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(2))
	c := collect(stream.ReduceByKey(stream.Window(stream.From(p, src), 3, 1), plus))
	run(t, p)
	got := c.all()
	require.Len(t, got, 2)
	assert.Equal(t, map[int]int{10: 1, 11: 1}, stateMap(got[0]))
	assert.Equal(t, map[int]int{10: 2}, stateMap(got[1]), "partition 1 lost: its key leaves the window")
}

// ReduceByKeyAndWindow of a stream that is not Keyed, under an Assigner
// source, keeps the window in the source's partitions, and combines the
// keys across them as it slides: a lost partition's values leave the
// window, also those of keys other partitions hold too, and a partition
// lost and assigned again counts its records once.
func TestReduceByKeyAndWindowNotKeyedUnderAnAssigner(t *testing.T) {
	for name, inv := range windowInverses {
		t.Run(name+" drops a lost partition", func(t *testing.T) {
			defer goleak.VerifyNone(t)
			src := &assigning{
				scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
					{pair1(10, 0, 0), pair1(10, 1, 0), pair1(11, 1, 1)},
					{pair1(10, 0, 1)}, // partition 1 lost before this batch
					{pair1(11, 0, 2)},
				}},
				plan: [][]int32{{0, 1}, {0}},
			}
			p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(2))
			c := collect(stream.ReduceByKeyAndWindow(stream.From(p, src), plus, inv, 3, 1))
			run(t, p)
			got := c.all()
			require.Len(t, got, 3)
			assert.Equal(t, map[int]int{10: 2, 11: 1}, stateMap(got[0]))
			assert.Equal(t, map[int]int{10: 2}, stateMap(got[1]), "partition 1 lost: its values leave the window")
			assert.Equal(t, map[int]int{10: 2, 11: 1}, stateMap(got[2]))
			for _, b := range got {
				assert.Equal(t, len(stateMap(b)), b.Len(), "batch %d: a key once", b.Info.ID)
			}
		})
		t.Run(name+" counts a regained partition once", func(t *testing.T) {
			defer goleak.VerifyNone(t)
			src := &assigning{
				scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
					{pair1(1, 0, 0), pair1(1, 1, 0)}, // committed: the first batch is
					{pair1(1, 0, 1)},                 // held back by the interval
					{pair1(1, 1, 1)},                 // partition 0 lost: offset 1 is not committed
					{pair1(1, 0, 1), pair1(1, 0, 2)}, // assigned again: read from offset 1
				}},
				plan: [][]int32{{0, 1}, {0, 1}, {1}, {0, 1}},
			}
			p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.CommitInterval(time.Hour), stream.Parallelism(2))
			c := collect(stream.ReduceByKeyAndWindow(stream.From(p, src), plus, inv, 4, 1))
			run(t, p)
			got := c.all()
			require.Len(t, got, 4)
			assert.Equal(t, map[int]int{1: 2}, stateMap(got[2]), "partition 0 lost: its records leave the window")
			assert.Equal(t, map[int]int{1: 4}, stateMap(got[3]), "partition 0's offsets 1 and 2 (0, committed before it was lost, is in no window), partition 1's 0 and 1")
		})
	}
}

// windowsOfPairs sum the values of each key over a window of a stream
// that is not Keyed, in the ways an Assigner source allows.
var windowsOfPairs = map[string]func(s *stream.Stream[stream.Pair[int, int]], length, slide int) *stream.Stream[stream.Pair[int, int]]{
	"recompute": func(s *stream.Stream[stream.Pair[int, int]], length, slide int) *stream.Stream[stream.Pair[int, int]] {
		return stream.ReduceByKeyAndWindow(s, plus, nil, length, slide)
	},
	"inverse": func(s *stream.Stream[stream.Pair[int, int]], length, slide int) *stream.Stream[stream.Pair[int, int]] {
		return stream.ReduceByKeyAndWindow(s, plus, windowInverses["inverse"], length, slide)
	},
	"window of a map, then reduceByKey": func(s *stream.Stream[stream.Pair[int, int]], length, slide int) *stream.Stream[stream.Pair[int, int]] {
		same := stream.Map(s, func(kv stream.Pair[int, int]) stream.Pair[int, int] { return kv })
		return stream.ReduceByKey(stream.Window(same, length, slide), plus)
	},
}

// ReduceByKeyAndWindow of a stream that is not Keyed, and ReduceByKey of
// a Window of it, under an Assigner source whose partitions are lost and
// gained at random batches, match a brute-force window over the same
// records: at every slide, each key's sum over the records of the last
// length batches, but those of a partition lost since they were read; a
// key none of them holds is left out. With and without an inverse, with
// values that sum to zero, empty batches and slides above 1.
func TestReduceByKeyAndWindowNotKeyedMatchesAModelUnderRebalances(t *testing.T) {
	const parts = 3
	for seed := range uint64(40) {
		for name, build := range windowsOfPairs {
			rng := rand.New(rand.NewPCG(seed, 7))
			length, slide := 1+rng.IntN(4), 1+rng.IntN(3)
			batches := 6 + rng.IntN(8)
			var (
				chunks [][]stream.Record[stream.Pair[int, int]]
				plan   [][]int32
				offs   [parts]int64
				window [][]stream.Record[stream.Pair[int, int]] // the model's, by batch
				want   []map[int]int
				before []int32
			)
			for b := 1; b <= batches; b++ {
				var now []int32
				for q := range int32(parts) {
					if rng.IntN(4) > 0 {
						now = append(now, q)
					}
				}
				plan = append(plan, now)
				for i, recs := range window { // the lost partitions leave
					window[i] = slices.DeleteFunc(slices.Clone(recs), func(r stream.Record[stream.Pair[int, int]]) bool {
						return slices.Contains(before, r.Origin.Partition) && !slices.Contains(now, r.Origin.Partition)
					})
				}
				before = now
				var chunk, kept []stream.Record[stream.Pair[int, int]]
				n := rng.IntN(6)
				if b == batches {
					n++ // a last batch with no record would not be cut
				}
				for range n {
					q := int32(rng.IntN(parts))
					r := rec(stream.KV(rng.IntN(5), rng.IntN(5)-2), q, offs[q])
					offs[q]++
					chunk = append(chunk, r)
					if slices.Contains(now, q) { // the others are dropped, unread
						kept = append(kept, r)
					}
				}
				chunks = append(chunks, chunk)
				window = append(window, kept)
				if len(window) > length {
					window = window[1:]
				}
				if b%slide == 0 {
					m := map[int]int{}
					for _, recs := range window {
						for _, r := range recs {
							m[r.Value.Key] += r.Value.Value
						}
					}
					want = append(want, m)
				}
			}
			t.Run(fmt.Sprintf("%s/seed %d length %d slide %d", name, seed, length, slide), func(t *testing.T) {
				src := &assigning{scripted: scripted[stream.Pair[int, int]]{chunks: chunks}, plan: plan}
				p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(2))
				c := collect(build(stream.From(p, src), length, slide))
				run(t, p)
				got := c.all()
				require.Len(t, got, len(want))
				for i, b := range got {
					assert.Equal(t, want[i], stateMap(b), "batch %d", b.Info.ID)
					assert.Equal(t, len(stateMap(b)), b.Len(), "batch %d: a key once", b.Info.ID)
				}
			})
		}
	}
}

// regainedPartition is a source of key 1 in partition 0, which it loses
// before the third batch and is assigned again before the fourth, read
// again from its committed offset: with CommitInterval, the second
// batch's offset 1 was not committed.
func regainedPartition() *assigning {
	return &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
			{pair1(1, 0, 0)},                 // committed: the first batch is
			{pair1(1, 0, 1)},                 // held back by the interval
			{},                               // partition 0 lost: offset 1 is not committed
			{pair1(1, 0, 1), pair1(1, 0, 2)}, // assigned again: read from offset 1
		}},
		plan: [][]int32{{0}, {0}, {}, {0}},
	}
}

// losingPartition1 is a source of keys 10 (partition 0) and 11
// (partition 1), which loses partition 1 before the second batch.
func losingPartition1() *assigning {
	return &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
			{pair1(10, 0, 0), pair1(11, 1, 0)},
			{pair1(10, 0, 1)}, // partition 1 lost before this batch
		}},
		plan: [][]int32{{0, 1}, {0}},
	}
}
