package stream_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

func sum(_ int, values []int, state int, _ bool) (int, bool) {
	for _, v := range values {
		state += v
	}
	return state, true
}

func stateMap(b *stream.Batch[stream.Pair[int, int]]) map[int]int {
	m := map[int]int{}
	for kv := range b.All() {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestUpdateStateByKeyRunningTotals(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n, keys, per = 5000, 300, 500
	pairs := make([]stream.Pair[int, int], n)
	for i := range pairs {
		pairs[i] = stream.KV(rng.IntN(keys), 1+rng.IntN(3))
	}
	for _, sh := range shapes {
		for _, reduced := range []bool{false, true} {
			t.Run(sh.name+map[bool]string{false: "", true: " after ReduceByKey"}[reduced], func(t *testing.T) {
				p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(per), stream.Parallelism(sh.parallelism))
				in := stream.From(p, source.NewSlice("p", pairs, sh.partitions))
				if reduced {
					in = stream.ReduceByKey(in, func(a, b int) int { return a + b })
				}
				c := collect(stream.UpdateStateByKey(in, sum))
				run(t, p)
				want := map[int]int{}
				got := c.all()
				require.Len(t, got, n/per)
				for i, b := range got {
					for _, kv := range pairs[i*per : (i+1)*per] {
						want[kv.Key] += kv.Value
					}
					assert.Equal(t, want, stateMap(b), "batch %d: the whole state", i+1)
					seen := map[int]int32{}
					for _, part := range b.Partitions {
						for _, kv := range part.Values {
							_, dup := seen[kv.Key]
							require.False(t, dup, "key %d twice in the state", kv.Key)
							seen[kv.Key] = part.ID
						}
					}
				}
			})
		}
	}
}

func TestUpdateStateByKeySeesValuesInOrderAndDropsKeys(t *testing.T) {
	// Batches of 4: key 1 gets [1 2], [3], ... in order; a key whose total
	// passes 10 is dropped, and starts again from nothing.
	var vals []stream.Pair[int, int]
	for i := 1; i <= 12; i++ {
		vals = append(vals, stream.KV(1, i), stream.KV(2, 1))
	}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(4))
	var calls [][]int
	var existed []bool
	c := collect(stream.UpdateStateByKey(stream.From(p, source.NewSlice("s", vals, 1)),
		func(k int, values []int, state int, exists bool) (int, bool) {
			if k == 1 {
				calls = append(calls, slices.Clone(values))
				existed = append(existed, exists)
			}
			for _, v := range values {
				state += v
			}
			return state, state <= 10
		}))
	run(t, p)
	assert.Equal(t, [][]int{{1, 2}, {3, 4}, {5, 6}, {7, 8}, {9, 10}, {11, 12}}, calls)
	assert.Equal(t, []bool{false, true, true, false, false, false}, existed, "dropped keys start again")
	got := c.all()
	require.Len(t, got, 6)
	assert.Equal(t, map[int]int{1: 3, 2: 2}, stateMap(got[0]))
	assert.Equal(t, map[int]int{1: 10, 2: 4}, stateMap(got[1]))
	assert.Equal(t, map[int]int{2: 6}, stateMap(got[2]), "key 1 dropped at 21")
	assert.Equal(t, map[int]int{2: 8}, stateMap(got[3]))
}

// Many keys per batch, some dropped, some new, some updated several times
// in a batch: after every batch the state is what a plain map computes,
// whatever the order in which the engine updates and removes keys.
func TestUpdateStateByKeyMatchesAModel(t *testing.T) {
	const batches, per, keys = 30, 500, 200
	rng := rand.New(rand.NewPCG(5, 6))
	var vals []stream.Pair[int, int]
	for range batches * per {
		v := 1 + rng.IntN(3)
		if rng.IntN(20) == 0 {
			v = -1
		}
		vals = append(vals, stream.KV(rng.IntN(keys), v))
	}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(per))
	c := collect(stream.UpdateStateByKey(stream.From(p, source.NewSlice("s", vals, 3)), dropNegative))
	run(t, p)
	got := c.all()
	require.Len(t, got, batches)
	model := map[int]int{}
	removed := 0
	for b := range batches {
		applyModel(model, vals[b*per:(b+1)*per], false, dropNegative, func(_ int, had, keep bool) {
			if had && !keep {
				removed++
			}
		})
		require.Equal(t, model, stateMap(got[b]), "batch %d", b+1)
	}
	assert.Greater(t, removed, batches, "keys dropped, several a batch")
}

// applyModel applies the values of one batch to model as UpdateStateByKey
// does: each key's values in the order they came (their sum, when
// reduced first), keys in the order they first came. changed, if not nil,
// is told whether each key had a state and keeps one. It returns the
// batch's values by key.
func applyModel(model map[int]int, chunk []stream.Pair[int, int], reduced bool,
	update func(int, []int, int, bool) (int, bool), changed func(k int, had, keep bool)) map[int][]int {
	var order []int
	grouped := map[int][]int{}
	for _, kv := range chunk {
		if _, ok := grouped[kv.Key]; !ok {
			order = append(order, kv.Key)
		}
		grouped[kv.Key] = append(grouped[kv.Key], kv.Value)
	}
	for _, k := range order {
		vs := grouped[k]
		if reduced {
			sum := 0
			for _, v := range vs {
				sum += v
			}
			vs = []int{sum}
		}
		old, had := model[k]
		nv, keep := update(k, vs, old, had)
		if keep {
			model[k] = nv
		} else {
			delete(model, k)
		}
		if changed != nil {
			changed(k, had, keep)
		}
	}
	return grouped
}

func TestUpdateStateByKeyTTLBatches(t *testing.T) {
	// Key k appears only in batch k (1..4); key 0 in every batch.
	chunks := make([][]stream.Record[stream.Pair[int, int]], 8)
	for b := range chunks {
		chunks[b] = append(chunks[b], rec(stream.KV(0, 1), 0, int64(2*b)))
		if b < 4 {
			chunks[b] = append(chunks[b], rec(stream.KV(b+1, 1), 0, int64(2*b+1)))
		}
	}
	src := &scripted[stream.Pair[int, int]]{chunks: chunks}
	p := stream.NewPipeline(stream.Interval(2 * time.Millisecond))
	c := collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum, stream.TTLBatches(2)))
	run(t, p)
	var keys [][]int
	for _, b := range c.all() {
		var ks []int
		for k := range stateMap(b) {
			ks = append(ks, k)
		}
		keys = append(keys, sorted(ks))
	}
	// A key updated in batch b may stay idle for 2 batches: gone in b+3.
	assert.Equal(t, [][]int{{0, 1}, {0, 1, 2}, {0, 1, 2, 3}, {0, 2, 3, 4}, {0, 3, 4}, {0, 4}, {0}, {0}}, keys)
}

func TestUpdateStateByKeyTTLDuration(t *testing.T) {
	const ttl = 60 * time.Millisecond
	chunks := make([][]stream.Record[stream.Pair[int, int]], 20)
	chunks[0] = append(chunks[0], rec(stream.KV(7, 1), 0, 0))
	for b := range chunks {
		chunks[b] = append(chunks[b], rec(stream.KV(0, 1), 0, int64(b+1)))
	}
	src := &scripted[stream.Pair[int, int]]{chunks: chunks}
	p := stream.NewPipeline(stream.Interval(10 * time.Millisecond))
	c := collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum, stream.TTL(ttl)))
	run(t, p)
	got := c.all()
	first := got[0].Info.Time
	gone := false
	for _, b := range got {
		_, has := stateMap(b)[7]
		age := b.Info.Time.Sub(first)
		if age <= ttl {
			assert.True(t, has, "key kept at age %v", age)
		} else {
			assert.False(t, has, "key dropped at age %v", age)
			gone = gone || !has
		}
	}
	assert.True(t, gone, "the run outlived the TTL")
}

func TestUpdateAllCallsIdleKeys(t *testing.T) {
	vals := []stream.Pair[int, int]{stream.KV(1, 5), stream.KV(2, 5), stream.KV(2, 1), stream.KV(2, 1)}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2))
	// Each batch without values, a key decays by 2 and is dropped at 0.
	c := collect(stream.UpdateStateByKey(stream.From(p, source.NewSlice("s", vals, 1)),
		func(_ int, values []int, state int, _ bool) (int, bool) {
			if len(values) == 0 {
				state -= 2
			}
			for _, v := range values {
				state += v
			}
			return state, state > 0
		}, stream.UpdateAll()))
	run(t, p)
	got := c.all()
	require.Len(t, got, 2)
	assert.Equal(t, map[int]int{1: 5, 2: 5}, stateMap(got[0]))
	assert.Equal(t, map[int]int{1: 3, 2: 7}, stateMap(got[1]))
}

// assigning is a source that owns a changing set of partitions.
type assigning struct {
	scripted[stream.Pair[int, int]]
	plan [][]int32 // assignment seen before each batch
	at   int
}

func (a *assigning) Assignment() []int32 {
	a.at++
	return a.plan[min(a.at, len(a.plan))-1]
}

func TestAssignerLosesAndGainsPartitions(t *testing.T) {
	r := func(k int, p int32, off int64) stream.Record[stream.Pair[int, int]] {
		return rec(stream.KV(k, 1), p, off)
	}
	src := &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
			{r(10, 0, 0), r(11, 1, 0), r(12, 2, 0)},
			{r(10, 0, 1), r(11, 1, 1), r(12, 2, 1)}, // partition 1 lost: its record is dropped
			{r(10, 0, 2), r(13, 3, 0)},
		}},
		plan: [][]int32{{0, 1, 2}, {0, 2}, {0, 2, 3}},
	}
	var changes [][2][]int32
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.OnRebalance(func(_ context.Context, lost, gained []int32) error {
		changes = append(changes, [2][]int32{lost, gained})
		return nil
	}))
	in := stream.Keyed(stream.From(p, src))
	c := collect(stream.UpdateStateByKey(in, sum))
	raw := collect(in)
	run(t, p)
	got := c.all()
	require.Len(t, got, 3)
	assert.Equal(t, map[int]int{10: 1, 11: 1, 12: 1}, stateMap(got[0]))
	assert.Equal(t, map[int]int{10: 2, 12: 2}, stateMap(got[1]), "state of the lost partition dropped")
	assert.Equal(t, map[int]int{10: 3, 12: 2, 13: 1}, stateMap(got[2]))
	assert.Equal(t, [][2][]int32{{nil, {0, 1, 2}}, {{1}, nil}, {nil, {3}}}, changes, "the first batch gains its partitions")
	var ids [][]int32
	for _, b := range raw.all() {
		var bs []int32
		for _, part := range b.Partitions {
			bs = append(bs, part.ID)
		}
		ids = append(ids, bs)
	}
	assert.Equal(t, [][]int32{{0, 1, 2}, {0, 2}, {0, 2, 3}}, ids, "a batch holds every assigned partition, even empty")
	assert.Equal(t, []stream.Offset{{Source: "test", Partition: 0, Next: 2}, {Source: "test", Partition: 2, Next: 2}}, src.Commits()[1],
		"the lost partition's record is not committed")
}

// pair1 is a record of key k with the value 1, from partition p at off.
func pair1(k int, p int32, off int64) stream.Record[stream.Pair[int, int]] {
	return rec(stream.KV(k, 1), p, off)
}

// A TTL counts from the batch that restores a key: the keys of a partition
// gained in a rebalance, many batches into a run, are kept, in the state
// and in the Store, instead of expiring in the batch that restores them.
func TestTTLKeepsStateRestoredInARebalance(t *testing.T) {
	for name, ttl := range map[string]stream.StateOption{
		"batches":  stream.TTLBatches(3),
		"duration": stream.TTL(5 * time.Millisecond),
	} {
		t.Run(name, func(t *testing.T) {
			store := newMemStore()
			// A first run saves keys 100 to 104 of partition 1.
			first := &scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
				{pair1(100, 1, 0), pair1(101, 1, 1), pair1(102, 1, 2), pair1(103, 1, 3), pair1(104, 1, 4)},
			}}
			p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
			collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, first)), sum, ttl).Named("st"))
			run(t, p)
			require.Len(t, store.entries, 5)

			// The second owns partition 0 for 5 batches, then gains 1 in
			// its last: with a TTL of 5ms, a later batch more than 5ms
			// after it would expire the keys restored, as it should.
			var chunks [][]stream.Record[stream.Pair[int, int]]
			for b := range 6 {
				chunks = append(chunks, []stream.Record[stream.Pair[int, int]]{pair1(0, 0, int64(b))})
			}
			src := &assigning{
				scripted: scripted[stream.Pair[int, int]]{chunks: chunks},
				plan:     [][]int32{{0}, {0}, {0}, {0}, {0}, {0, 1}},
			}
			p = stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
			c := collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum, ttl).Named("st"))
			run(t, p)
			got := c.all()
			require.Len(t, got, 6)
			assert.Equal(t, map[int]int{0: 6, 100: 1, 101: 1, 102: 1, 103: 1, 104: 1}, stateMap(got[5]),
				"batch 6 restores partition 1: its keys are there")
			assert.Len(t, store.entries, 6, "the store still holds partition 1's keys after the batch that restored them")
		})
	}
}

// Offsets of a partition read by batches that CommitInterval held back go
// with the partition's state when it is lost: neither committed nor
// checkpointed. The new owner restores the state the Store holds and reads
// again from the offsets it holds, so that every record counts once.
func TestLostPartitionOffsetsNotCheckpointedWithoutItsState(t *testing.T) {
	store := newMemStore()
	src := &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
			{pair1(1, 0, 0)},
			{pair1(1, 0, 1)}, // not committed: the interval holds it back
			{pair1(1, 0, 2)}, // partition 0 lost: dropped, not committed
		}},
		plan: [][]int32{{0}, {0}, {}},
	}
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store), stream.CommitInterval(time.Hour))
	collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), sum).Named("st"))
	run(t, p)
	for _, cs := range src.Commits() {
		for _, o := range cs {
			assert.LessOrEqual(t, o.Next, int64(1), "offset %v committed after the partition's state was dropped", o)
		}
	}

	// The new owner of partition 0 reads it again from the start.
	again := &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
			{pair1(1, 0, 0), pair1(1, 0, 1), pair1(1, 0, 2)},
		}},
		plan: [][]int32{{0}},
	}
	p = stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
	c := collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, again)), sum).Named("st"))
	run(t, p)
	got := c.all()
	require.Len(t, got, 1)
	assert.Equal(t, map[int]int{1: 3}, stateMap(got[0]), "three records of key 1, each counted once")
}

// Keys placed by hash stay so through Filter and windows: the state
// restored under another parallelism goes to the partitions the keys now
// hash to, and no key is twice in the state.
func TestRestoreUnderAnotherParallelismThroughKeyedOperators(t *testing.T) {
	add := func(a, b int) int { return a + b }
	for name, graph := range map[string]func(*stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]]{
		"reduceByKey": func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.ReduceByKey(in, add)
		},
		"filter": func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.Filter(stream.ReduceByKey(in, add), func(stream.Pair[int, int]) bool { return true })
		},
		"reduceByKeyAndWindow": func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.ReduceByKeyAndWindow(in, add, nil, 1, 1)
		},
		"reduceByKeyAndWindow, inverse": func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.ReduceByKeyAndWindow(in, add, func(a, b int) int { return a - b }, 1, 1)
		},
		"partitionByKey, window": func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.Window(stream.PartitionByKey(in, 0), 1, 1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			var pairs []stream.Pair[int, int]
			for k := range 40 {
				pairs = append(pairs, stream.KV(k, 1))
			}
			store := newMemStore()
			var seen stateSeen[int]
			for i, par := range []int{4, 2} {
				p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(1000), stream.Parallelism(par), stream.WithStore(store))
				in := stream.From(p, source.NewSlice(fmt.Sprintf("run%d", i), pairs, 2))
				st := stream.UpdateStateByKey(graph(in), sum).Named("totals")
				stream.ForEachBatch(st, seen.take)
				run(t, p)
			}
			got, twice := seen.got, seen.twice
			want := map[int]int{}
			for k := range 40 {
				want[k] = 2
			}
			assert.Empty(t, twice, "keys twice in the state")
			assert.Equal(t, want, got)
		})
	}
}

// A source whose partitions are assigned moves the state with them, by
// partition: state in partitions of a hash of the keys cannot follow, and
// Run says so at start instead of dropping the wrong keys in a rebalance.
func TestAssignerNeedsStateInTheSourcePartitions(t *testing.T) {
	for name, graph := range map[string]func(*stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]]{
		"not keyed": func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] { return in },
		"partitionByKey": func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.PartitionByKey(stream.Keyed(in), 2)
		},
		"reduceByKey": func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.ReduceByKey(in, func(a, b int) int { return a + b })
		},
		"keyed map of reduceByKey": func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			// Keyed again after a Map: the keys are together, but in
			// the partitions of their hash.
			same := func(kv stream.Pair[int, int]) stream.Pair[int, int] { return kv }
			return stream.Keyed(stream.Map(stream.ReduceByKey(in, func(a, b int) int { return a + b }), same))
		},
	} {
		t.Run(name, func(t *testing.T) {
			src := &assigning{scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{{pair1(1, 0, 0)}}}, plan: [][]int32{{0, 1}}}
			p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(2))
			collect(stream.UpdateStateByKey(graph(stream.From(p, src)), sum).Named("totals"))
			err := p.Run(context.Background())
			require.Error(t, err)
			assert.Contains(t, err.Error(), "stream: totals: the source's partitions are assigned")
			assert.Contains(t, err.Error(), "make its input Keyed")
			assert.Empty(t, src.Commits(), "nothing read")
		})
	}
}

// feeding hands its records one a Poll, then waits for ctx. Its assignment
// is set by the test; it records commits.
type feeding struct {
	mu       sync.Mutex
	recs     []stream.Record[stream.Pair[int, int]]
	assigned []int32
	commits  [][]stream.Offset
}

func (f *feeding) Poll(ctx context.Context, buf []stream.Record[stream.Pair[int, int]]) (int, error) {
	f.mu.Lock()
	if len(f.recs) > 0 {
		buf[0] = f.recs[0]
		f.recs = f.recs[1:]
		f.mu.Unlock()
		return 1, nil
	}
	f.mu.Unlock()
	<-ctx.Done()
	return 0, ctx.Err()
}

func (f *feeding) Assignment() []int32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.assigned)
}

func (f *feeding) Commit(_ context.Context, o []stream.Offset) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.commits = append(f.commits, slices.Clone(o))
	return nil
}

func (f *feeding) assign(ids ...int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.assigned = ids
}

// A run cancelled after its source lost a partition, with batches of it
// not committed yet (CommitInterval), neither commits nor checkpoints
// them: its checkpoint would write the partition's stale state and
// offsets over its new owner's.
func TestCancelAfterAPartitionWasLostLeavesItsNewOwnersState(t *testing.T) {
	store := newMemStore()

	// A owns partition 0: batch 1 is committed, batch 2 held back.
	a := &feeding{recs: []stream.Record[stream.Pair[int, int]]{pair1(1, 0, 0), pair1(1, 0, 1)}, assigned: []int32{0}}
	batches := make(chan int64, 10)
	pa := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(1), stream.WithStore(store),
		stream.CommitInterval(time.Hour), stream.WithHook(hookFunc(func(s stream.BatchStats) { batches <- s.Info.ID })))
	collect(stream.UpdateStateByKey(stream.Keyed(stream.From(pa, a)), sum).Named("st"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pa.Run(ctx) }()
	<-batches
	<-batches // A waits in Poll; batch 2 is not committed

	// The partition moves to B, which reads it on from A's commit.
	a.assign()
	b := &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
			{pair1(1, 0, 1), pair1(2, 0, 2)},
		}},
		plan: [][]int32{{0}},
	}
	pb := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
	collect(stream.UpdateStateByKey(stream.Keyed(stream.From(pb, b)), sum).Named("st"))
	run(t, pb)

	// A stops.
	cancel()
	require.NoError(t, <-done)
	for _, cs := range a.commits[1:] {
		for _, o := range cs {
			assert.NotEqual(t, int32(0), o.Partition, "A committed partition 0 after its source lost it: %v", o)
		}
	}

	// C restores the partition and reads it from the start.
	c := &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
			{pair1(1, 0, 0), pair1(1, 0, 1), pair1(2, 0, 2)},
		}},
		plan: [][]int32{{0}},
	}
	pc := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
	got := collect(stream.UpdateStateByKey(stream.Keyed(stream.From(pc, c)), sum).Named("st"))
	run(t, pc)
	all := got.all()
	require.NotEmpty(t, all)
	assert.Equal(t, map[int]int{1: 2, 2: 1}, stateMap(all[len(all)-1]), "every record counted once")
}

// A source whose offsets count across its partitions (a file's line
// numbers) resumes from a checkpoint under another number of partitions
// without counting a record twice or skipping one: the records below the
// highest offset saved for the source are skipped, in every partition.
func TestSourceWideOffsetsResumeUnderOtherPartitions(t *testing.T) {
	var half, lines strings.Builder // the file grows from 500 lines to 1000
	for i := range 1000 {
		if i < 500 {
			fmt.Fprintf(&half, "%d\n", i%37)
		}
		fmt.Fprintf(&lines, "%d\n", i%37)
	}
	for _, parts := range [][2]int{{1, 3}, {3, 1}, {2, 5}} {
		t.Run(fmt.Sprintf("%d then %d partitions", parts[0], parts[1]), func(t *testing.T) {
			store := newMemStore()
			var got map[int]int
			for i, in := range []string{half.String(), lines.String()} {
				f, err := source.NewFile("events", strings.NewReader(in), source.Partitions(parts[i]))
				require.NoError(t, err)
				p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(64), stream.WithStore(store))
				keys := stream.Map(stream.From(p, f), func(line []byte) stream.Pair[int, int] {
					k, err := strconv.Atoi(string(line))
					require.NoError(t, err)
					return stream.KV(k, 1)
				})
				c := collect(stream.UpdateStateByKey(keys, sum).Named("counts"))
				run(t, p)
				batches := c.all()
				require.NotEmpty(t, batches)
				got = stateMap(batches[len(batches)-1])
			}
			want := map[int]int{}
			for i := range 1000 {
				want[i%37]++
			}
			assert.Equal(t, want, got, "every line counted once")
		})
	}
}

type regionUser struct {
	Region string
	ID     int
}

type userID int64

// Keys placed by hash are restored where their values go, whatever their
// type: a struct (hashed by a seed of the process), a named integer
// (hashed as an integer). The shuffle and the state's restore hash alike,
// so no key is twice in the state after a restart.
func TestRestoreOfKeysOfOtherTypes(t *testing.T) {
	t.Run("struct", func(t *testing.T) {
		restoreTwice(t, func(k int) regionUser { return regionUser{"eu", k} })
	})
	t.Run("named integer", func(t *testing.T) {
		restoreTwice(t, func(k int) userID { return userID(k) })
	})
}

// restoreTwice runs a reduced, stateful count of 40 keys made by key twice
// on one store, under Parallelism 4, and checks every key counts 2, once.
func restoreTwice[K comparable](t *testing.T, key func(int) K) {
	var pairs []stream.Pair[K, int]
	for k := range 40 {
		pairs = append(pairs, stream.KV(key(k), 1))
	}
	store := newMemStore()
	var seen stateSeen[K]
	for i := range 2 {
		p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(1000), stream.Parallelism(4), stream.WithStore(store))
		in := stream.From(p, source.NewSlice(fmt.Sprintf("run%d", i), pairs, 2))
		st := stream.UpdateStateByKey(stream.ReduceByKey(in, func(a, b int) int { return a + b }),
			func(_ K, vs []int, s int, _ bool) (int, bool) {
				for _, v := range vs {
					s += v
				}
				return s, true
			}).Named("totals")
		stream.ForEachBatch(st, seen.take)
		run(t, p)
	}
	got, twice := seen.got, seen.twice
	assert.Empty(t, twice, "keys twice in the state")
	for k, v := range got {
		assert.Equal(t, 2, v, "key %v", k)
	}
	assert.Len(t, got, 40)
}

// stateSeen keeps the last batch of a state as a map, and the keys it
// holds twice.
type stateSeen[K comparable] struct {
	got   map[K]int
	twice []K
}

func (s *stateSeen[K]) take(_ context.Context, b *stream.Batch[stream.Pair[K, int]]) error {
	s.got, s.twice = map[K]int{}, nil
	for kv := range b.All() {
		if _, ok := s.got[kv.Key]; ok {
			s.twice = append(s.twice, kv.Key)
		}
		s.got[kv.Key] = kv.Value
	}
	return nil
}

// A TTL counts a key restored in a rebalance from the batch that restores
// it, also when the state had no batch for a while before (its input
// skips empty batches): the restored keys are kept, not expired at once
// and deleted from the Store.
func TestTTLKeepsStateRestoredAfterBatchesTheStateSkipped(t *testing.T) {
	store := newMemStore()
	first := &scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{
		{pair1(100, 1, 0), pair1(101, 1, 1)},
	}}
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
	collect(stream.UpdateStateByKey(stream.Keyed(stream.From(p, first)), sum, stream.TTLBatches(3)).Named("st"))
	run(t, p)
	require.Len(t, store.entries, 2)

	// The second owns partition 0, idle after its first batch, and gains
	// partition 1 in batch 7.
	chunks := make([][]stream.Record[stream.Pair[int, int]], 8)
	chunks[0] = []stream.Record[stream.Pair[int, int]]{pair1(0, 0, 0)}
	chunks[6] = []stream.Record[stream.Pair[int, int]]{pair1(0, 0, 1)}
	src := &assigning{
		scripted: scripted[stream.Pair[int, int]]{chunks: chunks},
		plan:     [][]int32{{0}, {0}, {0}, {0}, {0}, {0}, {0, 1}},
	}
	p = stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
	nonEmpty := stream.Transform(stream.From(p, src), func(b *stream.Batch[stream.Pair[int, int]]) (*stream.Batch[stream.Pair[int, int]], error) {
		if b.Len() == 0 {
			return nil, nil
		}
		return b, nil
	})
	c := collect(stream.UpdateStateByKey(stream.Keyed(nonEmpty), sum, stream.TTLBatches(3)).Named("st"))
	run(t, p)
	got := c.all()
	require.Len(t, got, 2)
	require.Equal(t, int64(7), got[1].Info.ID)
	assert.Equal(t, map[int]int{0: 2, 100: 1, 101: 1}, stateMap(got[1]), "batch 7 restores partition 1: its keys are there")
	assert.Len(t, store.entries, 3, "the store still holds partition 1's keys after the batch that restored them")
}

// Keyed on a stream that ReduceByKey already placed by a hash of the key
// leaves it placed by hash: a restart under another parallelism does not
// put one key in two partitions of the state.
func TestKeyedOfAHashedStreamRestoresByHash(t *testing.T) {
	for name, keyed := range map[string]func(*stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]]{
		"keyed": stream.Keyed[int, int],
		"keyed again after a map": func(s *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.Keyed(stream.Map(s, func(kv stream.Pair[int, int]) stream.Pair[int, int] { return kv }))
		},
	} {
		t.Run(name, func(t *testing.T) { keyedOfAHashedStreamRestoresByHash(t, keyed) })
	}
}

func keyedOfAHashedStreamRestoresByHash(t *testing.T, keyed func(*stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]]) {
	store := newMemStore()
	want := map[int]int{}
	for seg, par := range []int{2, 3} {
		var vals []stream.Pair[int, int]
		for k := range 40 {
			vals = append(vals, stream.KV(k, 1))
			want[k]++
		}
		p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(len(vals)), stream.Parallelism(par), stream.WithStore(store))
		in := stream.From(p, source.NewSlice(fmt.Sprintf("seg%d", seg), vals, 2))
		reduced := keyed(stream.ReduceByKey(in, func(a, b int) int { return a + b }))
		c := collect(stream.UpdateStateByKey(reduced, sum).Named("st"))
		run(t, p)
		got := c.all()
		require.NotEmpty(t, got)
		last := got[len(got)-1]
		seen := map[int]int32{}
		for _, part := range last.Partitions {
			for _, kv := range part.Values {
				if was, dup := seen[kv.Key]; dup {
					t.Errorf("segment %d: key %d in partitions %d and %d", seg, kv.Key, was, part.ID)
				}
				seen[kv.Key] = part.ID
			}
		}
		assert.Equal(t, want, stateMap(last), "segment %d", seg)
	}
}

// A batch of many keys not in the state grows the state's index while its
// values are grouped, some of those keys are not kept, and keys of the
// state are removed: after every batch, the state matches a map model,
// and the observer agrees with it.
func TestStateGrowsWhileGroupingABatchOfNewKeys(t *testing.T) {
	for _, par := range []int{1, 2} {
		t.Run(fmt.Sprintf("par%d", par), func(t *testing.T) {
			const per = 5000
			rng := rand.New(rand.NewPCG(7, uint64(par)))
			var vals []stream.Pair[int, int]
			for range per { // batch 1: 3 keys, in an index sized for the batch
				vals = append(vals, stream.KV(rng.IntN(3), 1))
			}
			for b := range 4 { // then 4 batches of about 4,000 new keys each
				for range per {
					k := 1000 + b*per + rng.IntN(per)
					v := 1 + rng.IntN(3)
					switch rng.IntN(10) {
					case 0:
						v = -1 // a new key not kept, or a key removed
					case 1:
						k = rng.IntN(1000 + b*per) // a key of earlier batches
					}
					vals = append(vals, stream.KV(k, v))
				}
			}
			p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(per), stream.Parallelism(par))
			obs := newObservers()
			st := stream.UpdateStateByKey(stream.From(p, source.NewSlice("s", vals, par)), dropNegative, obs.observe())
			stream.ForEachBatch(st, func(_ context.Context, b *stream.Batch[stream.Pair[int, int]]) error {
				obs.check(t, b)
				return nil
			})
			c := collect(st)
			run(t, p)
			got := c.all()
			require.Len(t, got, 5)
			model := map[int]int{}
			dropped := 0
			for b := range 5 {
				applyModel(model, vals[b*per:(b+1)*per], false, dropNegative, func(_ int, had, keep bool) {
					if !had && !keep {
						dropped++
					}
				})
				require.Equal(t, model, stateMap(got[b]), "batch %d", b+1)
			}
			assert.Greater(t, len(model), 10_000)
			assert.Greater(t, dropped, 100, "new keys not kept")
		})
	}
}

// A restarted run whose input ends below the offsets its restored state
// had counted up to (a file replaced by a shorter one, under the same
// name) fails as the input ends, before anything of the run is committed,
// instead of taking the new lines for counted; an input that ends where
// the state did, or that the state had not read from (the next file of a
// series), runs.
func TestInputEndingBelowTheRestoredOffsetsFails(t *testing.T) {
	lines := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "%d\n", i%7)
		}
		return b.String()
	}
	runFile := func(store *memStore, name, in string) (map[int]int, error) {
		f, err := source.NewFile(name, strings.NewReader(in), source.Partitions(2))
		require.NoError(t, err)
		p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(16), stream.WithStore(store))
		keys := stream.Map(stream.From(p, f), func(line []byte) stream.Pair[int, int] {
			k, err := strconv.Atoi(string(line))
			require.NoError(t, err)
			return stream.KV(k, 1)
		})
		c := collect(stream.UpdateStateByKey(keys, sum).Named("counts"))
		err = p.Run(context.Background())
		batches := c.all()
		if len(batches) == 0 {
			return nil, err
		}
		return stateMap(batches[len(batches)-1]), err
	}
	store := newMemStore()
	_, err := runFile(store, "events", lines(100))
	require.NoError(t, err)
	checkpointed, offsets := decodeMem(t, store), maps.Clone(store.offsets)

	_, err = runFile(store, "events", lines(40))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stream: source events ended at offset 40, below 101, up to which the restored state had counted its records")
	assert.Equal(t, checkpointed, decodeMem(t, store), "the failed run changed no state")
	for k, o := range offsets {
		assert.GreaterOrEqual(t, store.offsets[k].Next, o.Next, "%s: the failed run's batches committed no offset below the restored ones", k)
	}

	got, err := runFile(store, "events", lines(100))
	require.NoError(t, err, "the same input again: nothing new")
	assert.Nil(t, got, "no batch of lines already counted")
	assert.Equal(t, checkpointed, decodeMem(t, store))
	got, err = runFile(store, "more", lines(7))
	require.NoError(t, err, "another input goes on from the state")
	assert.Equal(t, checkpointed[0]+1, got[0])
}

// A panic in the function that updates a key's state fails the batch as a
// panic of any other operator's function does, naming the stage and the
// partition, and also the key: whichever way the state is updated (values
// grouped by key, one value per key, UpdateAll, a key with no values under
// UpdateAll), in ReduceByKey's function, and in ReduceByKeyAndWindow's
// function and inverse.
func TestPanicInAStateUpdateNamesItsPartitionAndKey(t *testing.T) {
	pr := func(k, v int, p int32, off int64) stream.Record[stream.Pair[int, int]] {
		return rec(stream.KV(k, v), p, off)
	}
	chunks := func() [][]stream.Record[stream.Pair[int, int]] {
		return [][]stream.Record[stream.Pair[int, int]]{
			{pr(1, 1, 0, 0), pr(7, 60, 2, 0), pr(3, 1, 1, 0), pr(7, 40, 2, 1)},
			{pr(1, 1, 0, 1), pr(7, 1, 2, 2)},
			{pr(1, 1, 0, 2)},
		}
	}
	// bad panics on key 7 when values holds a value of 40, or, with idle,
	// when it has none.
	bad := func(idle bool) func(int, []int, int, bool) (int, bool) {
		return func(k int, values []int, state int, exists bool) (int, bool) {
			if k == 7 && (idle && len(values) == 0 || !idle && slices.Contains(values, 40)) {
				panic("bad key")
			}
			return sum(k, values, state, exists)
		}
	}
	cases := []struct {
		name  string
		build func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]]
		batch int64
	}{
		{"values grouped by key", func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.UpdateStateByKey(in, bad(false))
		}, 1},
		{"one value per key", func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.UpdateStateByKey(stream.ReduceByKey(in, func(a, b int) int {
				return max(a, b)
			}), func(k int, values []int, state int, exists bool) (int, bool) {
				if k == 7 && slices.Contains(values, 60) {
					panic("bad key")
				}
				return sum(k, values, state, exists)
			})
		}, 1},
		{"UpdateAll", func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.UpdateStateByKey(in, bad(false), stream.UpdateAll())
		}, 1},
		{"UpdateAll of a key with no values", func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.UpdateStateByKey(in, bad(true), stream.UpdateAll())
		}, 3},
		{"ReduceByKey", func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.ReduceByKey(in, func(a, b int) int {
				if a+b == 100 { // key 7's in batch 1
					panic("bad key")
				}
				return a + b
			})
		}, 1},
		{"ReduceByKeyAndWindow without inverse", func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.ReduceByKeyAndWindow(in, func(a, b int) int {
				if a+b == 101 { // key 7's in the window of batches 1 and 2
					panic("bad key")
				}
				return a + b
			}, nil, 2, 1)
		}, 2},
		{"ReduceByKeyAndWindow's inverse", func(in *stream.Stream[stream.Pair[int, int]]) *stream.Stream[stream.Pair[int, int]] {
			return stream.ReduceByKeyAndWindow(in, plus, func(a, b int) int {
				if b == 100 { // key 7's sum in batch 1, leaving the window
					panic("bad key")
				}
				return a - b
			}, 2, 1)
		}, 3},
	}
	for _, par := range []int{1, 3} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s parallelism %d", c.name, par), func(t *testing.T) {
				src := &scripted[stream.Pair[int, int]]{chunks: chunks()}
				p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(par))
				collect(c.build(stream.Keyed(stream.From(p, src))).Named("totals"))
				err := p.Run(context.Background())
				var se *stream.StageError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, "totals", se.Stage)
				assert.Equal(t, c.batch, se.Batch)
				var part *stream.PartitionError
				if assert.ErrorAs(t, err, &part) {
					assert.Equal(t, int32(2), part.Partition, "key 7 is in partition 2")
				}
				var ke *stream.KeyError
				if assert.ErrorAs(t, err, &ke) {
					assert.Equal(t, 7, ke.Key)
				}
				var pe *stream.PanicError
				if assert.ErrorAs(t, err, &pe) {
					assert.Equal(t, "bad key", pe.Value)
					assert.Contains(t, string(pe.Stack), "state_test.go", "the stack of the panic")
				}
				assert.EqualError(t, err, fmt.Sprintf("stream: batch %d: totals: partition 2: key 7: panic: bad key", c.batch))
			})
		}
	}
}

// A panic in ReduceByKey's function names the key also when the values
// are moved by a hash of it, in the combining before the move and after.
func TestPanicInReduceByKeyOfAStreamNotKeyedNamesTheKey(t *testing.T) {
	for _, where := range []string{"before the move", "after the move"} {
		t.Run(where, func(t *testing.T) {
			src := &scripted[stream.Pair[int, int]]{chunks: [][]stream.Record[stream.Pair[int, int]]{{
				rec(stream.KV(1, 1), 0, 0), rec(stream.KV(7, 60), 0, 1), rec(stream.KV(7, 40), 1, 0), rec(stream.KV(7, 2), 1, 1),
			}}}
			p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(3))
			collect(stream.ReduceByKey(stream.From(p, src), func(a, b int) int {
				if where == "before the move" && a+b == 42 || where == "after the move" && a+b == 102 {
					panic("bad key")
				}
				return a + b
			}))
			err := p.Run(context.Background())
			var ke *stream.KeyError
			if assert.ErrorAs(t, err, &ke) {
				assert.Equal(t, 7, ke.Key)
			}
			var pe *stream.PanicError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "bad key", pe.Value)
		})
	}
}

// A key of ReduceByKey that cannot be hashed (an interface holding a
// slice) panics in the lookup, not in f: the error names that key, not
// the one f was last given.
func TestPanicOfAnUnhashableKeyInReduceByKeyNamesIt(t *testing.T) {
	src := &scripted[stream.Pair[any, int]]{chunks: [][]stream.Record[stream.Pair[any, int]]{{
		rec(stream.KV[any](1, 1), 0, 0), rec(stream.KV[any](1, 1), 0, 1), rec(stream.KV[any]([]int{7}, 1), 0, 2),
	}}}
	p := stream.NewPipeline(stream.Interval(2 * time.Millisecond))
	collect(stream.ReduceByKey(stream.Keyed(stream.From(p, src)), func(a, b int) int { return a + b }))
	err := p.Run(context.Background())
	var ke *stream.KeyError
	if assert.ErrorAs(t, err, &ke) {
		assert.Equal(t, []int{7}, ke.Key)
	}
	var pe *stream.PanicError
	require.ErrorAs(t, err, &pe)
	assert.ErrorContains(t, err, "unhashable")
}
