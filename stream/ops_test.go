package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

var shapes = []struct {
	name        string
	partitions  int
	parallelism int
}{
	{"1 partition", 1, 1},
	{"4 partitions serial", 4, 1},
	{"4 partitions parallel", 4, 4},
	{"7 partitions on 3", 7, 3},
}

func TestStatelessOperators(t *testing.T) {
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			src := source.NewSlice("nums", ints(1000), sh.partitions)
			p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(100), stream.Parallelism(sh.parallelism))
			in := stream.From(p, src)
			doubled := stream.Map(in, func(v int) int { return 2 * v })
			even := stream.Filter(in, func(v int) bool { return v%2 == 0 })
			words := stream.FlatMap(in, func(dst []string, v int) []string {
				for range v % 3 {
					dst = append(dst, strconv.Itoa(v))
				}
				return dst
			})
			parsed := stream.MapErr(stream.Map(in, strconv.Itoa), strconv.Atoi)
			sums := stream.MapPartitions(in, func(p *stream.Partition[int]) ([]int, error) {
				s := 0
				for _, v := range p.Values {
					s += v
				}
				return []int{s}, nil
			})
			reversed := stream.Transform(in, func(b *stream.Batch[int]) (*stream.Batch[string], error) {
				all := slices.Collect(b.All())
				slices.Reverse(all)
				out := make([]string, len(all))
				for i, v := range all {
					out[i] = fmt.Sprint(v)
				}
				return &stream.Batch[string]{Partitions: []stream.Partition[string]{{ID: 0, Values: out}}}, nil
			})
			cd, ce, cw, cp, cs, cr := collect(doubled), collect(even), collect(words), collect(parsed), collect(sums), collect(reversed)
			run(t, p)

			require.Len(t, cd.all(), 10, "1000 records cut every 100")
			for i, b := range cd.all() {
				assert.Equal(t, int64(i+1), b.Info.ID)
				assert.Equal(t, 100, b.Info.Records)
				assert.Equal(t, min(sh.partitions, 100), len(b.Partitions))
				want := make([]int, 0, 100)
				for v := i*100 + 1; v <= (i+1)*100; v++ {
					want = append(want, 2*v)
				}
				assert.Equal(t, want, sorted(slices.Collect(b.All())))
				for _, part := range b.Partitions {
					require.Len(t, part.Origins, len(part.Values), "map keeps origins")
					for k, v := range part.Values {
						o := part.Origins[k]
						assert.Equal(t, part.ID, o.Partition)
						assert.Equal(t, v/2-1, int(o.Offset)*sh.partitions+int(o.Partition), "origin names the input value")
					}
				}
			}
			var evens, flat, back []int
			for _, vs := range ce.values() {
				evens = append(evens, vs...)
			}
			for _, vs := range cw.values() {
				for _, w := range vs {
					n, _ := strconv.Atoi(w)
					flat = append(flat, n)
				}
			}
			for _, vs := range cp.values() {
				back = append(back, vs...)
			}
			var wantEven, wantFlat []int
			for v := 1; v <= 1000; v++ {
				if v%2 == 0 {
					wantEven = append(wantEven, v)
				}
				for range v % 3 {
					wantFlat = append(wantFlat, v)
				}
			}
			assert.Equal(t, wantEven, sorted(evens))
			assert.Equal(t, wantFlat, sorted(flat))
			assert.Equal(t, ints(1000), sorted(back))
			for _, b := range ce.all() {
				for _, part := range b.Partitions {
					for k, v := range part.Values {
						assert.Equal(t, v-1, int(part.Origins[k].Offset)*sh.partitions+int(part.ID), "filter keeps each value's origin")
					}
				}
			}
			for _, b := range cw.all() {
				for _, part := range b.Partitions {
					require.Len(t, part.Origins, len(part.Values), "flatMap gives each output its input's origin")
					for k, w := range part.Values {
						n, _ := strconv.Atoi(w)
						assert.Equal(t, n-1, int(part.Origins[k].Offset)*sh.partitions+int(part.ID))
					}
				}
			}
			for i, vs := range cs.values() {
				total := 0
				for _, s := range vs {
					total += s
				}
				assert.Equal(t, (i*100+1+(i+1)*100)*50, total, "partition sums add up to the batch sum")
				assert.Len(t, vs, min(sh.partitions, 100), "one value per partition")
			}
			for i, vs := range cr.values() {
				require.Len(t, vs, 100)
				assert.Equal(t, cd.all()[i].Info, cr.all()[i].Info, "transform keeps the batch info")
			}
			var committed int64
			for _, o := range src.Committed() {
				committed += o.Next
			}
			assert.Equal(t, int64(1000), committed, "every offset committed")
		})
	}
}

func TestTryMapSplitsFailures(t *testing.T) {
	lines := []string{"1", "2", "x", "4", "", "6"}
	src := source.NewSlice("lines", lines, 2)
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(3))
	ok, failed := stream.TryMap(stream.From(p, src), strconv.Atoi)
	good := sink.NewMemory[int]()
	bad := sink.NewMemory[stream.Failure[string]]()
	stream.To(ok, good)
	stream.To(failed, bad)
	run(t, p)

	assert.Equal(t, []int{1, 2, 4, 6}, sorted(good.Values()))
	fails := bad.Values()
	require.Len(t, fails, 2)
	slices.SortFunc(fails, func(a, b stream.Failure[string]) int { return int(a.Origin.Offset) - int(b.Origin.Offset) })
	assert.Equal(t, "x", fails[0].Value)
	assert.Equal(t, stream.Origin{Source: "lines", Partition: 0, Offset: 1}, fails[0].Origin)
	assert.Equal(t, "", fails[1].Value)
	assert.Equal(t, stream.Origin{Source: "lines", Partition: 0, Offset: 2}, fails[1].Origin)
	var ne *strconv.NumError
	assert.ErrorAs(t, fails[0].Err, &ne)
	assert.Len(t, good.Batches(), 2, "each batch of ok has a batch of failed")
	assert.Len(t, bad.Batches(), 2)
}

func TestTryMapWithoutFailureConsumerFailsAtStart(t *testing.T) {
	p := stream.NewPipeline()
	ok, _ := stream.TryMap(stream.From(p, source.NewSlice("s", []string{"1"}, 1)), strconv.Atoi)
	stream.To(ok, sink.NewMemory[int]())
	err := p.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tryMap.failed")
	assert.Contains(t, err.Error(), "no consumer")
}

func TestReduce(t *testing.T) {
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(250), stream.Parallelism(sh.parallelism))
			sums := collect(stream.Reduce(stream.From(p, source.NewSlice("n", ints(1000), sh.partitions)), func(a, b int) int { return a + b }))
			run(t, p)
			got := sums.values()
			require.Len(t, got, 4)
			for i, vs := range got {
				lo, hi := i*250+1, (i+1)*250
				assert.Equal(t, []int{(lo + hi) * 250 / 2}, vs)
			}
		})
	}
}

func TestReduceOfEmptyBatchHasNoValue(t *testing.T) {
	src := &scripted[int]{chunks: [][]stream.Record[int]{{}, {rec(5, 0, 0)}}}
	p := stream.NewPipeline(stream.Interval(5e6))
	sums := collect(stream.Reduce(stream.From(p, src), func(a, b int) int { return a + b }))
	run(t, p)
	assert.Equal(t, [][]int{nil, {5}}, sums.values())
}

func TestPartitionByKeyAndReduceByKey(t *testing.T) {
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			words := strings.Fields(strings.Repeat("a b c a b a d e f g a ", 50))
			p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(110), stream.Parallelism(sh.parallelism))
			pairs := stream.Map(stream.From(p, source.NewSlice("w", words, sh.partitions)), func(w string) stream.Pair[string, int] { return stream.KV(w, 1) })
			parted := collect(stream.PartitionByKey(pairs, 5))
			counts := collect(stream.ReduceByKey(pairs, func(a, b int) int { return a + b }))
			run(t, p)

			for _, b := range parted.all() {
				require.Len(t, b.Partitions, 5)
				owner := map[string]int32{}
				for _, part := range b.Partitions {
					for _, kv := range part.Values {
						if prev, ok := owner[kv.Key]; ok {
							assert.Equal(t, prev, part.ID, "key %q in two partitions", kv.Key)
						}
						owner[kv.Key] = part.ID
					}
				}
				assert.Equal(t, 110, b.Len())
			}
			require.Len(t, counts.all(), 5)
			for _, b := range counts.all() {
				got := map[string]int{}
				for kv := range b.All() {
					_, dup := got[kv.Key]
					assert.False(t, dup, "key %q reduced twice in one batch", kv.Key)
					got[kv.Key] = kv.Value
				}
				assert.Equal(t, map[string]int{"a": 40, "b": 20, "c": 10, "d": 10, "e": 10, "f": 10, "g": 10}, got)
			}
		})
	}
}

func TestPartitionByKeyIsStableAcrossPipelines(t *testing.T) {
	owners := func() map[int64]int32 {
		p := stream.NewPipeline(stream.Interval(0))
		keys := make([]int64, 1000)
		for i := range keys {
			keys[i] = int64(i)
		}
		in := stream.Map(stream.From(p, source.NewSlice("k", keys, 3)), func(k int64) stream.Pair[int64, int] { return stream.KV(k, 0) })
		c := collect(stream.PartitionByKey(in, 8))
		run(t, p)
		out := map[int64]int32{}
		for _, part := range c.all()[0].Partitions {
			for _, kv := range part.Values {
				out[kv.Key] = part.ID
			}
		}
		return out
	}
	a, b := owners(), owners()
	assert.Equal(t, a, b)
	perPartition := map[int32]int{}
	for _, id := range a {
		perPartition[id]++
	}
	assert.Len(t, perPartition, 8)
	for id, n := range perPartition {
		assert.InDelta(t, 125, n, 60, "partition %d gets a fair share", id)
	}
}

func TestKeyedReduceStaysInSourcePartitions(t *testing.T) {
	// A source partitioned by key: partition = key mod 4.
	var recs []stream.Record[stream.Pair[int, int]]
	for i := range 400 {
		k := i % 20
		recs = append(recs, rec(stream.KV(k, 1), int32(k%4), int64(i)))
	}
	src := &scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{recs}}
	p := stream.NewPipeline(stream.Interval(1e7))
	counts := collect(stream.ReduceByKey(stream.Keyed(stream.From(p, src)), func(a, b int) int { return a + b }))
	run(t, p)
	b := counts.all()[0]
	require.Len(t, b.Partitions, 4)
	for _, part := range b.Partitions {
		assert.Len(t, part.Values, 5)
		for _, kv := range part.Values {
			assert.Equal(t, part.ID, int32(kv.Key%4), "keyed: no shuffle")
			assert.Equal(t, 20, kv.Value)
		}
	}
}

func TestErrorInOnePartitionStopsRun(t *testing.T) {
	src := source.NewSlice("nums", ints(1000), 4)
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(100), stream.Parallelism(4))
	boom := errors.New("boom")
	out := stream.MapErr(stream.From(p, src), func(v int) (int, error) {
		if v == 542 {
			return 0, boom
		}
		return v, nil
	}).Named("check")
	var later int
	stream.ForEachBatch(out, func(context.Context, *stream.Batch[int]) error { later++; return nil })
	err := p.Run(context.Background())
	require.ErrorIs(t, err, boom)
	var se *stream.StageError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "check", se.Stage)
	assert.Equal(t, int64(6), se.Batch)
	var re *stream.RecordError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, stream.Origin{Source: "nums", Partition: 1, Offset: 135}, re.Origin)
	var pe *stream.PartitionError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, int32(1), pe.Partition)
	assert.Contains(t, err.Error(), "batch 6: check: partition 1: record nums/1@135: boom")
	assert.Equal(t, 5, later, "the failed batch's outputs did not run")
	var committed int64
	for _, o := range src.Committed() {
		committed += o.Next
	}
	assert.Equal(t, int64(500), committed, "the failed batch is not committed")
}

func TestOutputErrorStopsRunBeforeCommit(t *testing.T) {
	src := source.NewSlice("nums", ints(100), 2)
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(10))
	in := stream.From(p, src)
	n := 0
	stream.ForEachPartition(in, func(_ context.Context, info stream.Info, part *stream.Partition[int]) error {
		if info.ID == 3 && part.ID == 1 {
			return errors.New("disk full")
		}
		return nil
	})
	stream.ForEachBatch(in, func(context.Context, *stream.Batch[int]) error { n++; return nil })
	err := p.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "batch 3: forEachPartition(source#1): partition 1: disk full")
	assert.Equal(t, 2, n)
	assert.Equal(t, []stream.Offset{{Source: "nums", Partition: 0, Next: 10}, {Source: "nums", Partition: 1, Next: 10}}, src.Committed())
}

func TestBroadcastGivesEveryPartitionTheBatchValue(t *testing.T) {
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(10), stream.Parallelism(3))
	in := stream.From(p, source.NewSlice("n", ints(30), 3))
	mean := stream.Map(stream.Reduce(stream.Map(in, func(v int) [2]int { return [2]int{v, 1} }),
		func(a, b [2]int) [2]int { return [2]int{a[0] + b[0], a[1] + b[1]} }),
		func(s [2]int) float64 { return float64(s[0]) / float64(s[1]) })
	above := collect(stream.Broadcast(in, mean, func(part *stream.Partition[int], m float64, ok bool) ([]int, error) {
		require.True(t, ok)
		var out []int
		for _, v := range part.Values {
			if float64(v) > m {
				out = append(out, v)
			}
		}
		return out, nil
	}))
	run(t, p)
	got := above.values()
	require.Len(t, got, 3)
	for i, vs := range got {
		var want []int
		for v := i*10 + 6; v <= i*10+10; v++ { // above the batch mean i*10+5.5
			want = append(want, v)
		}
		assert.Equal(t, want, sorted(vs))
	}
}

func TestBroadcastRejectsASideWithManyValues(t *testing.T) {
	p := stream.NewPipeline()
	in := stream.From(p, source.NewSlice("n", ints(3), 1))
	collect(stream.Broadcast(in, in, func(*stream.Partition[int], int, bool) ([]int, error) { return nil, nil }))
	assert.ErrorContains(t, p.Run(context.Background()), "holds more than one value")
}

// A side stream with no batch this time (a window between its slides)
// holds no value: f runs with ok false, and the values of s go on.
func TestBroadcastWithASideWithoutABatch(t *testing.T) {
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(1))
	in := stream.From(p, source.NewSlice("n", ints(4), 1))
	side := stream.Reduce(stream.Window(in, 2, 2), func(a, b int) int { return a + b })
	var oks []bool
	out := stream.Broadcast(in, side, func(part *stream.Partition[int], _ int, ok bool) ([]int, error) {
		oks = append(oks, ok)
		return slices.Clone(part.Values), nil
	})
	c := collect(out)
	run(t, p)
	assert.Equal(t, [][]int{{1}, {2}, {3}, {4}}, c.values(), "every value of s goes on")
	assert.Equal(t, []bool{false, true, false, true}, oks, "a value every other batch, as the window slides")
}

// PartitionByKey into many partitions from a small batch keeps buffers
// of the size of the batch, not room ahead in every bucket: 4 input
// partitions into 100,000 held 6.4 million pairs (100 MB) of room.
func TestPartitionByKeyIntoManyPartitionsHoldsLittle(t *testing.T) {
	const parts = 100_000
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(40), stream.Parallelism(2))
	vals := make([]stream.Pair[int, int], 40)
	for i := range vals {
		vals[i] = stream.KV(i, i)
	}
	src := source.NewSlice("n", vals, 4)
	var held uint64
	stream.ForEachBatch(stream.PartitionByKey(stream.From(p, src), parts), func(_ context.Context, b *stream.Batch[stream.Pair[int, int]]) error {
		assert.Len(t, b.Partitions, parts)
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		held = max(held, m.HeapAlloc)
		return nil
	})
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	require.NoError(t, p.Run(context.Background()))
	grown := int64(held) - int64(before.HeapAlloc)
	// The 100,000 output partitions and 400,000 bucket slice headers
	// take about 14 MB.
	assert.Less(t, grown, int64(40<<20), "heap grown by %d MB", grown>>20)
}

// FlatMap takes the values f returns, each with the origin of the value it
// came from, whether f appends them to dst, appends them to dst[:0], or
// returns a slice of its own.
func TestFlatMapTakesWhatFReturns(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(dst []string, v string) []string
	}{
		{"appended to dst", func(dst []string, v string) []string { return append(dst, strings.Fields(v)...) }},
		{"appended to dst[:0]", func(dst []string, v string) []string { return append(dst[:0], strings.Fields(v)...) }},
		{"a slice of its own", func(_ []string, v string) []string { return strings.Fields(v) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := []string{"a b", "c", "d e f", "", "g", "h i", "j"}
			p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(5))
			c := collect(stream.FlatMap(stream.From(p, source.NewSlice("lines", lines, 1)), tc.f))
			run(t, p)
			var got []string
			for _, b := range c.all() {
				for _, part := range b.Partitions {
					require.Len(t, part.Origins, len(part.Values))
					for k, w := range part.Values {
						got = append(got, w+"@"+strconv.FormatInt(part.Origins[k].Offset, 10))
					}
				}
			}
			assert.Equal(t, []string{"a@0", "b@0", "c@1", "d@2", "e@2", "f@2", "g@4", "h@5", "i@5", "j@6"}, got)
		})
	}
}

// A side stream of another pipeline, which the run of s does not compute,
// makes Run fail at start, naming Broadcast, and leaves the other
// pipeline as it was.
func TestBroadcastRejectsASideOfAnotherPipeline(t *testing.T) {
	other := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(10))
	total := stream.Reduce(stream.From(other, source.NewSlice("m", ints(10), 2)), func(a, b int) int { return a + b })
	totals := collect(total)

	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(10))
	in := stream.From(p, source.NewSlice("n", ints(10), 2))
	collect(stream.Broadcast(in, total, func(part *stream.Partition[int], _ int, _ bool) ([]int, error) {
		return part.Values, nil
	}))
	err := p.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Broadcast")
	assert.Contains(t, err.Error(), "another pipeline")

	run(t, other)
	assert.Equal(t, [][]int{{55}}, totals.values())
}

// A nil function, sink or source given to an operator makes Run fail at
// start, naming the operator and the argument, instead of a nil-pointer
// panic as the graph is built or as the first batch runs.
func TestNilArgumentsFailRunAtStart(t *testing.T) {
	type kv = stream.Pair[int, int]
	in := func(p *stream.Pipeline) *stream.Stream[int] { return stream.From(p, source.NewSlice("n", ints(4), 2)) }
	pairs := func(p *stream.Pipeline) *stream.Stream[kv] {
		return stream.Keyed(stream.Map(in(p), func(v int) kv { return stream.KV(v, 1) }))
	}
	add := func(a, b int) int { return a + b }
	for _, tc := range []struct {
		want  string
		build func(p *stream.Pipeline)
	}{
		{"From: src is nil", func(p *stream.Pipeline) { collect(stream.From[int](p, nil)) }},
		{"Map: f is nil", func(p *stream.Pipeline) { collect(stream.Map[int, int](in(p), nil)) }},
		{"Filter: keep is nil", func(p *stream.Pipeline) { collect(stream.Filter(in(p), nil)) }},
		{"FlatMap: f is nil", func(p *stream.Pipeline) { collect(stream.FlatMap[int, int](in(p), nil)) }},
		{"MapErr: f is nil", func(p *stream.Pipeline) { collect(stream.MapErr[int, int](in(p), nil)) }},
		{"TryMap: f is nil", func(p *stream.Pipeline) {
			ok, failed := stream.TryMap[int, int](in(p), nil)
			collect(ok)
			collect(failed)
		}},
		{"MapPartitions: f is nil", func(p *stream.Pipeline) { collect(stream.MapPartitions[int, int](in(p), nil)) }},
		{"Transform: f is nil", func(p *stream.Pipeline) { collect(stream.Transform[int, int](in(p), nil)) }},
		{"Broadcast: side is nil", func(p *stream.Pipeline) {
			collect(stream.Broadcast(in(p), (*stream.Stream[int])(nil), func(part *stream.Partition[int], _ int, _ bool) ([]int, error) {
				return part.Values, nil
			}))
		}},
		{"Broadcast: f is nil", func(p *stream.Pipeline) {
			s := in(p)
			collect(stream.Broadcast[int, int, int](s, stream.Reduce(s, add), nil))
		}},
		{"Reduce: f is nil", func(p *stream.Pipeline) { collect(stream.Reduce(in(p), nil)) }},
		{"ReduceByKey: f is nil", func(p *stream.Pipeline) { collect(stream.ReduceByKey(pairs(p), nil)) }},
		{"UpdateStateByKey: update is nil", func(p *stream.Pipeline) {
			collect(stream.UpdateStateByKey[int, int, int](pairs(p), nil))
		}},
		{"ReduceByKeyAndWindow: f is nil", func(p *stream.Pipeline) {
			collect(stream.ReduceByKeyAndWindow(pairs(p), nil, nil, 2, 1))
		}},
		{"ReduceByKeyAndWindow: f is nil", func(p *stream.Pipeline) {
			collect(stream.ReduceByKeyAndWindow(pairs(p), nil, func(a, b int) int { return a - b }, 2, 1))
		}},
		{"ForEachBatch: f is nil", func(p *stream.Pipeline) { stream.ForEachBatch(in(p), nil) }},
		{"ForEachPartition: f is nil", func(p *stream.Pipeline) { stream.ForEachPartition(in(p), nil) }},
		{"To: sink is nil", func(p *stream.Pipeline) { stream.To(in(p), nil) }},
	} {
		t.Run(tc.want, func(t *testing.T) {
			p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2))
			require.NotPanics(t, func() { tc.build(p) })
			err := p.Run(context.Background())
			require.Error(t, err)
			assert.Equal(t, "stream: "+tc.want, err.Error())
		})
	}
}

// A panic of the function of an element-wise operator names the record
// it was given, as MapErr's errors do.
func TestElementwisePanicNamesTheRecord(t *testing.T) {
	boom := func(v int) int {
		if v == 7 {
			panic("boom " + strconv.Itoa(v))
		}
		return v
	}
	for _, tc := range []struct {
		op    string
		build func(in *stream.Stream[int]) *stream.Stream[int]
	}{
		{"map", func(in *stream.Stream[int]) *stream.Stream[int] { return stream.Map(in, boom) }},
		{"filter", func(in *stream.Stream[int]) *stream.Stream[int] {
			return stream.Filter(in, func(v int) bool { return boom(v)%2 == 0 })
		}},
		{"flatMap", func(in *stream.Stream[int]) *stream.Stream[int] {
			return stream.FlatMap(in, func(dst []int, v int) []int { return append(dst, boom(v)) })
		}},
		{"mapErr", func(in *stream.Stream[int]) *stream.Stream[int] {
			return stream.MapErr(in, func(v int) (int, error) { return boom(v), nil })
		}},
		{"tryMap", func(in *stream.Stream[int]) *stream.Stream[int] {
			ok, failed := stream.TryMap(in, func(v int) (int, error) { return boom(v), nil })
			collect(failed)
			return ok
		}},
	} {
		for _, par := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s on %d", tc.op, par), func(t *testing.T) {
				p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(10), stream.Parallelism(par))
				collect(tc.build(stream.From(p, source.NewSlice("nums", ints(10), 2))).Named("op"))
				err := p.Run(context.Background())
				require.Error(t, err)
				assert.Equal(t, "stream: batch 1: op: partition 0: record nums/0@3: panic: boom 7", err.Error())
				var re *stream.RecordError
				require.ErrorAs(t, err, &re)
				assert.Equal(t, stream.Origin{Source: "nums", Partition: 0, Offset: 3}, re.Origin)
				var pe *stream.PanicError
				require.ErrorAs(t, err, &pe)
				assert.Contains(t, string(pe.Stack), "ops_test.go", "the stack of the panic")
			})
		}
	}
}

// A Failure written as JSON, to a dead-letter file, has its error's
// message, not the error's fields (none, for most errors).
func TestFailureMarshalsItsErrorAsItsMessage(t *testing.T) {
	var buf strings.Builder
	p := stream.NewPipeline()
	_, failed := stream.TryMap(stream.From(p, source.NewSlice("in", [][]byte{[]byte("1"), []byte("x")}, 1)), func(b []byte) (int, error) {
		return strconv.Atoi(string(b))
	})
	dead := sink.NewJSONLines[stream.Failure[[]byte]]("dead", &buf)
	stream.To(failed, dead)
	run(t, p)
	require.NoError(t, dead.Close())
	assert.Equal(t, `{"Value":"eA==","Origin":{"Source":"in","Partition":0,"Offset":1},"Err":"strconv.Atoi: parsing \"x\": invalid syntax"}`+"\n", buf.String())

	b, err := json.Marshal(stream.Failure[int]{Value: 1})
	require.NoError(t, err)
	assert.JSONEq(t, `{"Value":1,"Origin":{"Source":"","Partition":0,"Offset":0},"Err":null}`, string(b), "no error")
}

// selfEncoded encodes itself, with a method of its pointer, as
// big.Int does.
type selfEncoded struct{ n int }

func (s *selfEncoded) MarshalJSON() ([]byte, error) { return []byte(strconv.Itoa(s.n)), nil }

// A Failure encodes its value as encoding/json would without its
// MarshalJSON: by the value's own method when the Failure is addressable
// (a batch's values, a pointer), and an error that is a nil pointer as
// null, without calling its Error.
func TestFailureMarshalsItsValueAndANilPointerErrorAsBefore(t *testing.T) {
	b, err := json.Marshal([]stream.Failure[selfEncoded]{{Value: selfEncoded{7}, Err: errors.New("bad")}})
	require.NoError(t, err)
	assert.JSONEq(t, `[{"Value":7,"Origin":{"Source":"","Partition":0,"Offset":0},"Err":"bad"}]`, string(b))

	var nilErr *strconv.NumError
	assert.NotPanics(t, func() { b, err = json.Marshal(stream.Failure[int]{Value: 1, Err: nilErr}) })
	require.NoError(t, err)
	assert.JSONEq(t, `{"Value":1,"Origin":{"Source":"","Partition":0,"Offset":0},"Err":null}`, string(b))
}

// The first mistake found as a graph is built is the one Run reports,
// whichever kind it is.
func TestRunReportsTheFirstGraphError(t *testing.T) {
	p := stream.NewPipeline()
	w := stream.Window(stream.From(p, source.NewSlice("a", []int{1}, 1)), 0, 1)
	stream.From(p, source.NewSlice("b", []int{2}, 1))
	stream.To(w, sink.NewMemory[int]())
	err := p.Run(context.Background())
	require.Error(t, err)
	assert.ErrorContains(t, err, "window of 0 batches sliding by 1")
}

// An option given nil where it needs a value fails Run at start, naming
// it, rather than panicking at the first batch or rebalance.
func TestNilOptionsFailRunAtStart(t *testing.T) {
	for name, opt := range map[string]stream.Option{
		"WithHook":    stream.WithHook(nil),
		"OnRebalance": stream.OnRebalance(nil),
	} {
		t.Run(name, func(t *testing.T) {
			p := stream.NewPipeline(opt)
			out := sink.NewMemory[int]()
			stream.To(stream.From(p, source.NewSlice("a", []int{1}, 1)), out)
			err := p.Run(context.Background())
			require.EqualError(t, err, "stream: "+name+": nil")
			assert.Empty(t, out.Batches(), "nothing ran")
		})
	}
}
