package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// summary is a StateObserver that keeps what a user of Observe would (a
// count and a sum of the states), and a copy of the keys, to check each
// change against what it was told before.
type summary struct {
	keys                    map[int]int
	sum                     int
	added, updated, removed int
	wrong                   []string // changes whose old state was not the one held
}

func (s *summary) Changed(k, old int, hadOld bool, cur int, hasCur bool) {
	if held, ok := s.keys[k]; ok != hadOld || held != old {
		s.wrong = append(s.wrong, fmt.Sprintf("key %d: told old %d (%v), held %d (%v)", k, old, hadOld, held, ok))
	}
	switch {
	case hadOld && hasCur:
		s.updated++
	case hasCur:
		s.added++
	case hadOld:
		s.removed++
	}
	if hadOld {
		s.sum -= old
		delete(s.keys, k)
	}
	if hasCur {
		s.sum += cur
		s.keys[k] = cur
	}
}

// observers makes a summary per partition and checks them against the
// state of every batch.
type observers struct {
	mu  sync.Mutex
	cur map[int32]*summary // the observer of each partition, latest first
	all []*summary
}

func newObservers() *observers { return &observers{cur: map[int32]*summary{}} }

func (o *observers) observe() stream.StateOption {
	return stream.Observe(func(p int32) stream.StateObserver[int, int] {
		o.mu.Lock()
		defer o.mu.Unlock()
		s := &summary{keys: map[int]int{}}
		o.cur[p] = s
		o.all = append(o.all, s)
		return s
	})
}

// check asserts that the observer of every partition of b holds its state,
// and that the observers of partitions no longer held are empty.
func (o *observers) check(t *testing.T, b *stream.Batch[stream.Pair[int, int]]) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	live := map[*summary]bool{}
	for _, p := range b.Partitions {
		s := o.cur[p.ID]
		if !assert.NotNil(t, s, "batch %d: partition %d has no observer", b.Info.ID, p.ID) {
			continue
		}
		live[s] = true
		want, sum := map[int]int{}, 0
		for _, kv := range p.Values {
			want[kv.Key] = kv.Value
			sum += kv.Value
		}
		assert.Equal(t, want, s.keys, "batch %d partition %d: the keys told", b.Info.ID, p.ID)
		assert.Equal(t, sum, s.sum, "batch %d partition %d: the sum told", b.Info.ID, p.ID)
		assert.Empty(t, s.wrong, "batch %d partition %d: changes from a state not held", b.Info.ID, p.ID)
	}
	for _, s := range o.all {
		if !live[s] {
			assert.Empty(t, s.keys, "batch %d: an observer of a partition not held keeps keys", b.Info.ID)
		}
	}
}

// totals counts the changes told to all observers.
func (o *observers) totals() (added, updated, removed int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.all {
		added, updated, removed = added+s.added, updated+s.updated, removed+s.removed
	}
	return added, updated, removed
}

// dropNegative adds the values to the state, drops a key given a negative
// value, and, with no values (UpdateAll), takes 1 from the state and drops
// it at 0.
func dropNegative(_ int, values []int, state int, _ bool) (int, bool) {
	if len(values) == 0 {
		state--
	}
	for _, v := range values {
		if v < 0 {
			return 0, false
		}
		state += v
	}
	return state, state > 0
}

// An observer per partition, told of every change, holds what the state
// holds after every batch: new keys, updates, keys the update drops, keys
// expired by TTL or dropped by UpdateAll, and partitions lost and gained
// back empty.
func TestObserveTellsEveryChange(t *testing.T) {
	const batches, per, keys = 10, 40, 60
	rng := rand.New(rand.NewPCG(3, 4))
	chunks := make([][]stream.Record[stream.Pair[int, int]], batches)
	var off [4]int64
	for b := range chunks {
		for range per {
			k := rng.IntN(keys)
			v := 1 + rng.IntN(3)
			if rng.IntN(8) == 0 {
				v = -1
			}
			p := int32(k % 4)
			chunks[b] = append(chunks[b], rec(stream.KV(k, v), p, off[p]))
			off[p]++
		}
	}
	all := []int32{0, 1, 2, 3}
	plan := [][]int32{all, all, all, {0, 2, 3}, {0, 2, 3}, all, {0, 1}, all, all, all}
	for _, tt := range []struct {
		name string
		opts []stream.StateOption
	}{
		{"plain", nil},
		{"ttl", []stream.StateOption{stream.TTLBatches(1)}},
		{"update all", []stream.StateOption{stream.UpdateAll()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := &assigning{scripted: scripted[stream.Pair[int, int]]{chunks: slices.Clone(chunks)}, plan: plan}
			obs := newObservers()
			p := stream.NewPipeline(stream.Interval(2 * time.Millisecond))
			totals := stream.UpdateStateByKey(stream.Keyed(stream.From(p, src)), dropNegative, append(tt.opts, obs.observe())...)
			checked := 0
			stream.ForEachBatch(totals, func(_ context.Context, b *stream.Batch[stream.Pair[int, int]]) error {
				obs.check(t, b)
				checked++
				return nil
			})
			run(t, p)
			assert.Equal(t, batches, checked)
			added, updated, removed := obs.totals()
			assert.Positive(t, added, "keys added")
			assert.Positive(t, updated, "keys updated")
			assert.Positive(t, removed, "keys removed")
			// Partition 1, then 2 and 3, lost and gained back: a new
			// observer each time.
			assert.Len(t, obs.all, 4+3)
		})
	}
}

// memStore is a Store in memory.
type memStore struct {
	entries map[string]stream.Entry
	offsets map[string]stream.Offset
}

func newMemStore() *memStore {
	return &memStore{entries: map[string]stream.Entry{}, offsets: map[string]stream.Offset{}}
}

func (s *memStore) Restore(_ context.Context, partitions []int32, put func(stream.Entry) error) ([]stream.Offset, error) {
	for _, k := range slices.Sorted(maps.Keys(s.entries)) {
		if e := s.entries[k]; partitions == nil || slices.Contains(partitions, e.Partition) {
			if err := put(e); err != nil {
				return nil, err
			}
		}
	}
	return slices.Collect(maps.Values(s.offsets)), nil
}

func (s *memStore) Checkpoint(_ context.Context, c *stream.Changes) error {
	for _, e := range c.Entries {
		k := fmt.Sprintf("%s/%d/%x", e.Op, e.Partition, e.Key)
		if e.Deleted {
			delete(s.entries, k)
			continue
		}
		e.Key, e.Value = slices.Clone(e.Key), slices.Clone(e.Value)
		s.entries[k] = e
	}
	for _, o := range c.Offsets {
		s.offsets[fmt.Sprintf("%s/%d", o.Source, o.Partition)] = o
	}
	return nil
}

// State restored from a Store is told to the observers, also when the
// parallelism changed and keys land in another partition than the one
// they were saved in.
func TestObserveTellsRestoredState(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	pairs := func(n int) []stream.Pair[int, int] {
		out := make([]stream.Pair[int, int], n)
		for i := range out {
			out[i] = stream.KV(rng.IntN(200), 1+rng.IntN(3))
			if rng.IntN(10) == 0 {
				out[i].Value = -1
			}
		}
		return out
	}
	store := newMemStore()
	for i, par := range []int{4, 2, 3} {
		obs := newObservers()
		p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(50), stream.Parallelism(par), stream.WithStore(store))
		// A new source each run: none of its records is below the
		// restored offsets.
		in := stream.From(p, source.NewSlice(fmt.Sprintf("run%d", i), pairs(300), 2))
		totals := stream.UpdateStateByKey(in, dropNegative, obs.observe()).Named("totals")
		var first map[int]int
		stream.ForEachBatch(totals, func(_ context.Context, b *stream.Batch[stream.Pair[int, int]]) error {
			obs.check(t, b)
			if first == nil {
				first = stateMap(b)
			}
			return nil
		})
		run(t, p)
		require.NotNil(t, first, "run %d: no batch", i+1)
		added, _, _ := obs.totals()
		if i > 0 {
			// The first batch of 50 values cannot have added all the
			// keys it holds: most were restored.
			assert.Greater(t, len(first), 50, "run %d: keys in the first batch", i+1)
			assert.GreaterOrEqual(t, added, len(first), "run %d: keys told as added", i+1)
		}
	}
}

// An observer of the wrong types fails the run at its start.
func TestObserveOfOtherTypesFailsRun(t *testing.T) {
	p := stream.NewPipeline(stream.Interval(0))
	in := stream.From(p, source.NewSlice("s", []stream.Pair[int, int]{stream.KV(1, 1)}, 1))
	stream.UpdateStateByKey(in, sum, stream.Observe(func(int32) stream.StateObserver[string, int] { return nil }))
	err := p.Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "observer")
}

type userDay struct {
	user string
	day  int
}

// With a Store, a key or state type the default JSON codec would not give
// back (here, unexported fields: every key stored as {}) fails Run at
// start, naming the stage, instead of a restart that silently loses the
// state; without a Store, or with codecs, it runs.
func TestStoreRefusesTypesJSONWouldNotGiveBack(t *testing.T) {
	build := func(store stream.Store, opts ...stream.StateOption) *stream.Pipeline {
		var popts []stream.Option
		if store != nil {
			popts = append(popts, stream.WithStore(store))
		}
		p := stream.NewPipeline(append(popts, stream.Interval(0))...)
		in := stream.From(p, source.NewSlice("s", []stream.Pair[userDay, int]{stream.KV(userDay{"ann", 1}, 5)}, 1))
		st := stream.UpdateStateByKey(in, func(_ userDay, vs []int, s int, _ bool) (int, bool) {
			for _, v := range vs {
				s += v
			}
			return s, true
		}, opts...).Named("tally")
		stream.ForEachBatch(st, func(context.Context, *stream.Batch[stream.Pair[userDay, int]]) error { return nil })
		return p
	}
	err := build(newMemStore()).Run(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "stream: tally: keys of stream_test.userDay cannot be stored as JSON (field user of stream_test.userDay is unexported): give them a codec (Codecs)")

	require.NoError(t, build(nil).Run(context.Background()), "without a Store, nothing is stored")
	require.NoError(t, build(newMemStore(), stream.Codecs[userDay, int](userDayCodec{}, stream.CodecFor[int]())).Run(context.Background()))
}

// userDayCodec stores a userDay as "user\x00day".
type userDayCodec struct{}

func (userDayCodec) Append(dst []byte, k userDay) ([]byte, error) {
	return fmt.Appendf(dst, "%s\x00%d", k.user, k.day), nil
}

func (userDayCodec) Decode(b []byte) (userDay, error) {
	var k userDay
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return k, errors.New("no separator")
	}
	k.user = string(b[:i])
	_, err := fmt.Sscanf(string(b[i+1:]), "%d", &k.day)
	return k, err
}

// decimalCodec stores an int in decimal, in a new slice: it ignores dst,
// as a codec wrapping a marshaller that returns its own bytes does.
type decimalCodec struct{}

func (decimalCodec) Append(_ []byte, v int) ([]byte, error) { return []byte(fmt.Sprint(v)), nil }

func (decimalCodec) Decode(b []byte) (int, error) {
	var v int
	_, err := fmt.Sscanf(string(b), "%d", &v)
	return v, err
}

// A codec that returns the encoding in a slice of its own, not appended
// to dst, stores the keys and states it encodes, not bytes of others.
func TestCodecThatIgnoresDstStoresItsBytes(t *testing.T) {
	store := newMemStore()
	run := func(vals []stream.Pair[int, int]) map[int]int {
		p := stream.NewPipeline(stream.Interval(0), stream.WithStore(store))
		in := stream.From(p, source.NewSlice("s", vals, 1))
		st := stream.UpdateStateByKey(in, func(_ int, vs []int, s int, _ bool) (int, bool) {
			for _, v := range vs {
				s += v
			}
			return s, true
		}, stream.Codecs[int, int](decimalCodec{}, decimalCodec{})).Named("tally")
		got := map[int]int{}
		stream.ForEachBatch(st, func(_ context.Context, b *stream.Batch[stream.Pair[int, int]]) error {
			for kv := range b.All() {
				got[kv.Key] = kv.Value
			}
			return nil
		})
		require.NoError(t, p.Run(context.Background()))
		return got
	}
	run([]stream.Pair[int, int]{stream.KV(12, 340), stream.KV(5, 6)})
	got := run([]stream.Pair[int, int]{{}, {}, stream.KV(7, 1)})
	assert.Equal(t, map[int]int{12: 340, 5: 6, 7: 1}, got)
}

// twiceStore gives every entry twice, as a changelog does a key that two
// checkpoints not yet compacted wrote.
type twiceStore struct{ *memStore }

func (s twiceStore) Restore(ctx context.Context, partitions []int32, put func(stream.Entry) error) ([]stream.Offset, error) {
	return s.memStore.Restore(ctx, partitions, func(e stream.Entry) error {
		if err := put(e); err != nil {
			return err
		}
		return put(e)
	})
}

// The log of a restore says how many keys the state holds, not only how
// many entries the Store gave.
func TestRestoreLogsTheKeysRestored(t *testing.T) {
	store := twiceStore{newMemStore()}
	var logs bytes.Buffer
	for i := range 2 {
		logs.Reset()
		p := stream.NewPipeline(stream.Interval(0), stream.Parallelism(2), stream.WithStore(store),
			stream.Logger(slog.New(slog.NewTextHandler(&logs, nil))))
		in := stream.From(p, source.NewSlice(fmt.Sprintf("run%d", i), []stream.Pair[int, int]{{1, 1}, {2, 1}, {3, 1}, {1, 1}}, 2))
		stream.ForEachBatch(stream.UpdateStateByKey(in, dropNegative).Named("totals"),
			func(context.Context, *stream.Batch[stream.Pair[int, int]]) error { return nil })
		run(t, p)
	}
	assert.Contains(t, logs.String(), `msg="state restored" partitions=[] entries=6 keys=3 `)
}
