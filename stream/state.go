package stream

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"
	"unsafe"
)

// StateOption configures UpdateStateByKey.
type StateOption interface{ applyState(*stateConfig) }

type stateConfig struct {
	ttlBatches int64
	ttl        time.Duration
	updateAll  bool
	keyCodec   any // Codec[K], set by Codecs
	stateCodec any // Codec[S]
	observe    any // func(int32) StateObserver[K, S], set by Observe
}

type stateOptionFunc func(*stateConfig)

func (f stateOptionFunc) applyState(c *stateConfig) { f(c) }

// TTLBatches drops a key whose state has had no new values for more than n
// batches: a key updated in batch b is last seen in batch b+n. A key
// restored from a Store counts as updated by the batch that restores it.
// n <= 0 means never.
func TTLBatches(n int) StateOption {
	return stateOptionFunc(func(c *stateConfig) { c.ttlBatches = int64(n) })
}

// TTL drops a key whose state has had no new values for more than d,
// measured between the batches' cut times. A key restored from a Store
// counts as updated by the batch that restores it. d <= 0 means never.
func TTL(d time.Duration) StateOption {
	return stateOptionFunc(func(c *stateConfig) { c.ttl = d })
}

// UpdateAll calls the update function for every key in the state on every
// batch, with no values for the keys that got none, as Spark's
// updateStateByKey does. By default it is called only for keys with new
// values, which costs nothing for idle keys.
func UpdateAll() StateOption { return stateOptionFunc(func(c *stateConfig) { c.updateAll = true }) }

// StateObserver is told of every change to the state of one partition of
// UpdateStateByKey, so that a summary of the state (a count, a sum, a
// quantile sketch) can be kept up to date as keys change instead of being
// rebuilt from every key each batch.
type StateObserver[K comparable, S any] interface {
	// Changed tells that key's state went from old (if hadOld) to cur (if
	// hasCur): hadOld false is a new key, hasCur false a key removed. It
	// is called for every update, even one that returns the state
	// unchanged, and must not call back into the pipeline.
	Changed(key K, old S, hadOld bool, cur S, hasCur bool)
}

// Observe has UpdateStateByKey tell an observer of every change to the
// state of each partition: newObserver is called, on the run loop's
// goroutine, when a partition's state is created (its first batch, or its
// restore from the pipeline's Store), and its observer is then told of
//
//   - every update, new key and key the update function drops;
//   - keys dropped by TTL or TTLBatches, and by update with UpdateAll;
//   - keys restored from the Store, written over or deleted by it, including
//     keys restored into another partition than the one they were saved in
//     (the parallelism changed): the partition that receives them is told;
//   - every key of a partition that an Assigner source lost, as removed,
//     after which the observer is told nothing more (a partition gained
//     back gets a new one).
//
// newObserver may return nil: that partition is not observed. An
// observer is called by one goroutine at a time: the partition's during
// a batch, the run loop's on a restore or rebalance. It needs no lock for
// its own state, but the observers of different partitions run at once.
// A panic of newObserver or of an observer fails the run with a
// *PanicError, as one of update does.
// Operators downstream of UpdateStateByKey may read an observer's summary
// in the same batch: the updates of a batch are done before they run.
//
// Without Observe the state update pays one nil check per key.
//
//	in       -- (a,1) ------ (a,2) (b,5) ---- (b,drop) -->
//	Changed  -- a:-→1 ------ a:1→3 b:-→5 ---- b:5→- ---->
func Observe[K comparable, S any](newObserver func(partition int32) StateObserver[K, S]) StateOption {
	return stateOptionFunc(func(c *stateConfig) { c.observe = newObserver })
}

// UpdateStateByKey keeps a state per key across batches. On every batch it
// calls update for each key with new values: values holds the key's values
// of this batch in partition order, state and exists its previous state.
// update returns the new state, and false to drop the key. The values slice
// is reused after update returns.
//
// The result is the whole state after each batch, one Pair per key, as in
// Spark, at no cost: its partitions are the state itself, so they must be
// read, not modified. State lives per partition: unless s is keyed (Keyed, PartitionByKey,
// ReduceByKey), values are first moved with PartitionByKey. When an Assigner
// source loses a partition, the partition's state is dropped, with the
// offsets of the partition that batches not committed yet had read; so an
// Assigner source needs the state in its own partitions: s Keyed, not
// moved by a hash of the keys or by Reduce, even if declared Keyed since
// (see Keyed), or Run fails at start. Observe keeps a
// summary of each partition's state as it changes.
//
// update runs on several goroutines at once, one per partition. A panic
// of update fails the batch with a *PanicError within a *KeyError naming
// the key, a *PartitionError and a *StageError.
//
// A key must be equal to itself: a batch holding a key that is not (a
// float NaN, or a struct or interface holding one), whose state no lookup
// could find again, fails with an error naming its record.
//
//	in    -- (a,1) ------- (a,2) (b,5) -- ...... -->
//	state -- (a,1) ------- (a,3) (b,5) -- (a,3) (b,5) -->   sum
func UpdateStateByKey[K comparable, V, S any](s *Stream[Pair[K, V]], update func(key K, values []V, state S, exists bool) (S, bool), opts ...StateOption) *Stream[Pair[K, S]] {
	s.p.need(update == nil, "UpdateStateByKey", "update")
	var cfg stateConfig
	for _, o := range opts {
		o.applyState(&cfg)
	}
	if !s.keyed {
		s = PartitionByKey(s, 0)
	}
	kc, sc, ok := codecsOf[K, S](cfg.keyCodec, cfg.stateCodec)
	if !ok {
		s.p.invalid(fmt.Errorf("stream: UpdateStateByKey: codecs of %T and %T do not fit keys %T and states %T", cfg.keyCodec, cfg.stateCodec, *new(K), *new(S)))
	}
	op := &stateOp[K, V, S]{
		cfg: cfg, in: s, update: update, parts: make(map[int32]*statePart[K, V, S]),
		keyCodec: kc, stateCodec: sc, hashParts: s.hashParts, hash: hasher[K](),
		scratchRefs: holdsPointers[K]() || holdsPointers[V](),
		irreflexive: typeMayBeIrreflexive(reflect.TypeFor[K]()),
	}
	if cfg.observe != nil {
		f, ok := cfg.observe.(func(int32) StateObserver[K, S])
		if !ok {
			s.p.invalid(fmt.Errorf("stream: UpdateStateByKey: an observer of %T does not fit keys %T and states %T", cfg.observe, *new(K), *new(S)))
		}
		op.observe = f
	}
	s.p.stateful = append(s.p.stateful, op)
	out := derive(s, "updateStateByKey", op.compute)
	out.keyed = true
	out.unique = true
	out.hashParts = s.hashParts
	op.out = out
	return out
}

type stateOp[K comparable, V, S any] struct {
	cfg    stateConfig
	in     *Stream[Pair[K, V]]
	out    *Stream[Pair[K, S]]
	update func(K, []V, S, bool) (S, bool)
	// observe makes a partition's observer, or is nil.
	observe func(int32) StateObserver[K, S]

	// durability
	durable    bool // the pipeline has a Store: track changes
	keyCodec   Codec[K]
	stateCodec Codec[S]
	hashParts  int // keys are placed by hash over this many partitions (-1: Parallelism), or 0
	hash       func(K) uint64
	// irreflexive says a key may be unequal to itself (a NaN float): each
	// batch's keys are checked first.
	irreflexive bool
	// scratchRefs says keys or values may hold pointers, so that the
	// partitions' scratch is cleared after use.
	scratchRefs bool
	checkpoint  int64 // batch of the last checkpoint
	// restoring is the batch that the restore in progress comes before:
	// a TTL counts the keys it restores from there.
	restoring int64
	// moved are the stored places of keys restored into another partition
	// (the parallelism changed): the next checkpoint deletes them there.
	moved []Entry
	// elsewhere are the entries of a restore stored under another
	// partition than the one their key now hashes to, resolved once the
	// Store has given them all (restored).
	elsewhere stored[K, S]

	mu    sync.Mutex // guards parts against dropPartitions
	parts map[int32]*statePart[K, V, S]
	ids   []int32
	times []batchTime // recent batch times, for TTL
}

type batchTime struct {
	id int64
	t  time.Time
}

// statePart is the state of one partition: a slab of pairs, which is also
// the partition's output, and an index from key to slab position. One hash
// lookup updates a key, and the output costs no copy.
type statePart[K comparable, V, S any] struct {
	index   keyIndex[K]
	slab    []Pair[K, S]
	seen    []int64 // batch ID of each key's last update, with a TTL only
	ttl     bool
	durable bool
	ver     []int64             // batch ID of each key's last change, with a Store only
	gone    []K                 // keys removed since the last checkpoint, with a Store only
	obs     StateObserver[K, S] // told of every change, or nil

	// scratch for grouping a batch's values by key, reused
	group   map[K]int32 // group of every key, with UpdateAll
	keys    []K
	first   []int32
	last    []int32
	next    []int32
	pos     []int32 // slab position of each group's key, or -1
	ents    []int32 // index entry of each group's key
	removed []int32
	dropped []K // new keys the update did not keep
	values  []V
	touched int32 // see readAhead

	// key is the key being updated while updating is set: a panic of
	// the update function names it.
	key      K
	updating bool
}

// newPart makes the state of partition id. It runs on the run loop's
// goroutine.
func (op *stateOp[K, V, S]) newPart(id int32) *statePart[K, V, S] {
	sp := &statePart[K, V, S]{
		index:   newHasherIndex[K](), // hashed as op.hash is
		group:   make(map[K]int32),
		ttl:     op.cfg.ttlBatches > 0 || op.cfg.ttl > 0,
		durable: op.durable,
	}
	if op.observe != nil {
		sp.obs = op.observe(id)
	}
	return sp
}

func (op *stateOp[K, V, S]) dropPartitions(ids []int32) error {
	op.mu.Lock()
	defer op.mu.Unlock()
	// Out of op.ids too, which a restore before the next batch adds to.
	op.ids = slices.DeleteFunc(op.ids, func(id int32) bool { return slices.Contains(ids, id) })
	for _, id := range ids {
		sp := op.parts[id]
		delete(op.parts, id)
		if sp == nil || sp.obs == nil {
			continue
		}
		err := recovered(func() error {
			var zero S
			for _, kv := range sp.slab {
				sp.obs.Changed(kv.Key, kv.Value, true, zero, false)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s: partition %d: %w", op.name(), id, err)
		}
	}
	return nil
}

func (op *stateOp[K, V, S]) compute(bc *batchCtx) (*Batch[Pair[K, S]], error) {
	in, err := op.in.batch(bc)
	if in == nil || err != nil {
		return nil, err
	}
	ids, parts, err := op.partsOf(in)
	if err != nil {
		return nil, err
	}

	expire := op.expiry(bc.info)
	out := &Batch[Pair[K, S]]{Info: in.Info, Partitions: make([]Partition[Pair[K, S]], len(ids))}
	err = bc.parallel(len(ids), func(i int) error {
		sp := parts[i]
		err := recovered(func() error { return op.updatePart(sp, in.Partition(ids[i]), bc.info.ID, expire) })
		if err != nil {
			if sp.updating { // the update function panicked
				err = &KeyError{Key: sp.key, Err: err}
			}
			return &PartitionError{Partition: ids[i], Err: err}
		}
		var zero K
		sp.key = zero // for the garbage collector
		out.Partitions[i] = Partition[Pair[K, S]]{ID: ids[i], Values: sp.slab}
		return nil
	})
	return out, err
}

// partsOf returns the IDs and the states of the partitions of the state
// and of in, making those of in that are new.
func (op *stateOp[K, V, S]) partsOf(in *Batch[Pair[K, V]]) ([]int32, []*statePart[K, V, S], error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	for i := range in.Partitions {
		id := in.Partitions[i].ID
		if op.parts[id] == nil {
			// newObserver is the user's: its panic fails the batch.
			err := recovered(func() error { op.parts[id] = op.newPart(id); return nil })
			if err != nil {
				return nil, nil, &PartitionError{Partition: id, Err: err}
			}
		}
	}
	ids := op.ids[:0]
	for id := range op.parts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	op.ids = ids
	parts := make([]*statePart[K, V, S], len(ids))
	for i, id := range ids {
		parts[i] = op.parts[id]
	}
	return ids, parts, nil
}

// updatePart updates the state of one partition with its values of the
// batch (p nil: none), and expires the keys last updated at or below
// expire.
func (op *stateOp[K, V, S]) updatePart(sp *statePart[K, V, S], p *Partition[Pair[K, V]], batch, expire int64) error {
	clear(sp.group)
	if p != nil {
		if op.irreflexive {
			if err := checkKeys(p); err != nil {
				return err
			}
		}
		op.apply(sp, p.Values, batch)
	}
	if sp.ttl && expire > 0 {
		for j := 0; j < len(sp.slab); {
			if sp.seen[j] <= expire {
				sp.remove(int32(j))
				continue
			}
			j++
		}
	}
	if op.cfg.updateAll {
		for j := 0; j < len(sp.slab); {
			kv := &sp.slab[j]
			if _, updated := sp.group[kv.Key]; !updated {
				nv, keep := op.call(sp, kv.Key, nil, kv.Value, true)
				if !keep {
					sp.remove(int32(j))
					continue
				}
				if sp.obs != nil {
					sp.obs.Changed(kv.Key, kv.Value, true, nv, true)
				}
				kv.Value = nv
				if sp.durable {
					sp.ver[j] = batch
				}
			}
			j++
		}
	}
	return nil
}

// call runs the update function for key k, noting the key: a panic of
// the function names it.
func (op *stateOp[K, V, S]) call(sp *statePart[K, V, S], k K, values []V, state S, exists bool) (S, bool) {
	sp.key, sp.updating = k, true
	nv, keep := op.update(k, values, state, exists)
	sp.updating = false
	return nv, keep
}

// checkKeys fails on the first key of p not equal to itself (a float NaN,
// or a struct or interface holding one): its hash is random and no
// lookup finds it, so that its state could never be found, updated or
// removed again.
func checkKeys[K comparable, V any](p *Partition[Pair[K, V]]) error {
	for j, kv := range p.Values {
		if kv.Key != kv.Key {
			err := fmt.Errorf("key %v is not equal to itself (it holds a NaN): no lookup would find its state again; filter or map such keys before the state", kv.Key)
			if j < len(p.Origins) {
				return &RecordError{Origin: p.Origins[j], Err: err}
			}
			return err
		}
	}
	return nil
}

// typeMayBeIrreflexive reports whether a value of t may be unequal to
// itself: a float or complex NaN, or an interface, array or struct that may
// hold one.
func typeMayBeIrreflexive(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.Interface:
		return true
	case reflect.Array:
		return t.Len() > 0 && typeMayBeIrreflexive(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if typeMayBeIrreflexive(t.Field(i).Type) {
				return true
			}
		}
	}
	return false
}

// expiry returns the batch ID at or below which a key's last update is too
// old to keep, or 0.
func (op *stateOp[K, V, S]) expiry(info Info) int64 {
	var cut int64
	if op.cfg.ttlBatches > 0 {
		cut = info.ID - op.cfg.ttlBatches - 1
	}
	if op.cfg.ttl > 0 {
		op.times = append(op.times, batchTime{info.ID, info.Time})
		limit := info.Time.Add(-op.cfg.ttl)
		n := 0
		for n < len(op.times) && op.times[n].t.Before(limit) { // older than d
			cut = max(cut, op.times[n].id)
			n++
		}
		op.times = slices.Delete(op.times, 0, n)
	}
	return cut
}

// apply runs the update function over the values of one partition.
func (op *stateOp[K, V, S]) apply(sp *statePart[K, V, S], vals []Pair[K, V], batch int64) {
	if op.in.unique && !op.cfg.updateAll {
		one := make([]V, 1)
		for _, kv := range vals {
			one[0] = kv.Value
			sp.updateKey(op, kv.Key, one, batch)
		}
		return
	}
	if op.cfg.updateAll {
		op.applyGroups(sp, vals, batch)
		return
	}
	// Group values by key without a slice per key (chained positions),
	// and find each key in the state in the same lookup: a key is grouped
	// by the mark of its index entry. A key not in the state is entered in
	// the index as it is first seen, pending (no slab position yet), so
	// that its next values find it, and so that the update that gives it
	// one does not look for it again. One lookup per record.
	if sp.index.len() == 0 && len(vals) > minIndexSize {
		// A state built from nothing (the first batch, or after a
		// rebalance): room for the batch's keys at once rather than by
		// doubling, in the index, the slab and the groups.
		sp.index.reserve(len(vals))
		sp.slab = slices.Grow(sp.slab, len(vals))
		sp.keys, sp.first, sp.last = slices.Grow(sp.keys[:0], len(vals)), slices.Grow(sp.first[:0], len(vals)), slices.Grow(sp.last[:0], len(vals))
		sp.pos, sp.ents = slices.Grow(sp.pos[:0], len(vals)), slices.Grow(sp.ents[:0], len(vals))
	}
	sp.keys, sp.first, sp.last, sp.pos, sp.ents = sp.keys[:0], sp.first[:0], sp.last[:0], sp.pos[:0], sp.ents[:0]
	sp.next = slices.Grow(sp.next[:0], len(vals))[:len(vals)]
	var homes [lookAhead]int
	for j, kv := range vals {
		if j%lookAhead == 0 {
			sp.readAhead(vals[j:min(j+lookAhead, len(vals))], &homes)
		}
		sp.next[j] = -1
		at, found := sp.index.slot(homes[j%lookAhead], kv.Key)
		if !found {
			if sp.index.full() {
				// Entries move as the index grows: find the groups'
				// again, and the homes of the keys looked ahead.
				sp.index.grow()
				for g, k := range sp.keys {
					sp.ents[g] = int32(sp.index.find(k))
				}
				w := j - j%lookAhead
				sp.readAhead(vals[w:min(w+lookAhead, len(vals))], &homes)
				at, _ = sp.index.slot(homes[j%lookAhead], kv.Key)
			}
			sp.index.entries[at] = keyEntry[K]{key: kv.Key, pos: pendingPos, mark: int32(len(sp.keys)) + 1}
			sp.index.n++
			sp.newGroup(kv.Key, int32(j), -1, int32(at))
			continue
		}
		e := &sp.index.entries[at]
		g := e.mark - 1
		if g < 0 {
			e.mark = int32(len(sp.keys)) + 1
			sp.newGroup(kv.Key, int32(j), e.pos-1, int32(at))
			continue
		}
		sp.next[sp.last[g]] = int32(j)
		sp.last[g] = int32(j)
	}
	for _, at := range sp.ents {
		sp.index.entries[at].mark = 0
	}
	// Updates first, removals after: a removal moves the slab's last key
	// into the removed one's place, which would stale the positions of
	// the groups still to update, and moves index entries, which would
	// stale those of the keys still pending.
	removed, dropped := sp.removed[:0], sp.dropped[:0]
	for g, k := range sp.keys {
		if g%lookAhead == 0 {
			sp.readSlabAhead(sp.pos[g:min(g+lookAhead, len(sp.pos))])
		}
		sp.values = sp.values[:0]
		for j := sp.first[g]; j >= 0; j = sp.next[j] {
			sp.values = append(sp.values, vals[j].Value)
		}
		i := sp.pos[g]
		if i < 0 {
			var zero S
			nv, keep := op.call(sp, k, sp.values, zero, false)
			if !keep {
				dropped = append(dropped, k)
				continue
			}
			i = sp.add(k, nv)
			sp.index.entries[sp.ents[g]].pos = i + 1
			sp.stamp(i, batch)
			continue
		}
		old := sp.slab[i].Value
		nv, keep := op.call(sp, k, sp.values, old, true)
		if !keep {
			removed = append(removed, i)
			continue
		}
		if sp.obs != nil {
			sp.obs.Changed(k, old, true, nv, true)
		}
		sp.slab[i].Value = nv
		sp.stamp(i, batch)
	}
	// The pending keys the update did not keep leave the index.
	for _, k := range dropped {
		sp.index.remove(k)
	}
	if op.scratchRefs {
		clear(dropped)
	}
	sp.dropped = dropped[:0]
	// From the last position down, each removal moves a key that stays.
	slices.Sort(removed)
	for _, i := range slices.Backward(removed) {
		sp.remove(i)
	}
	sp.removed = removed[:0]
	op.clearScratch(sp)
}

// readAhead sets homes[i] to the index home of vals[i].Key and reads the
// entry there, so that the lookups that follow find it in the cache: the
// reads' cache misses overlap instead of following one another, the
// index being far larger than the caches.
func (sp *statePart[K, V, S]) readAhead(vals []Pair[K, V], homes *[lookAhead]int) {
	x := &sp.index
	mask := uint64(len(x.entries) - 1)
	if x.word {
		for i := range vals {
			homes[i] = int(mix64(*(*uint64)(unsafe.Pointer(&vals[i].Key))) & mask)
		}
	} else {
		for i := range vals {
			homes[i] = int(x.hash(vals[i].Key) & mask)
		}
	}
	// The reads apart from the hashing, so that all of them are under way
	// at once.
	var touch int32
	for i := range vals {
		touch ^= x.entries[homes[i]].pos
	}
	sp.touched ^= touch // kept, so that the reads are not optimized away
}

// readSlabAhead reads the slab entries at positions pos (-1: none), for
// the same reason as readAhead.
func (sp *statePart[K, V, S]) readSlabAhead(pos []int32) {
	var (
		zero  K
		touch int32
	)
	for _, i := range pos {
		if i >= 0 && sp.slab[i].Key == zero {
			touch++
		}
	}
	sp.touched ^= touch
}

// newGroup starts the group of key k, first seen at position j of the
// batch's values, at slab position i and index entry at (-1: not in the
// state).
func (sp *statePart[K, V, S]) newGroup(k K, j, i, at int32) {
	sp.keys = append(sp.keys, k)
	sp.first = append(sp.first, j)
	sp.last = append(sp.last, j)
	sp.pos = append(sp.pos, i)
	sp.ents = append(sp.ents, at)
}

// clearScratch clears the keys and values of the groups just updated, for
// the garbage collector, unless they hold no pointers.
func (op *stateOp[K, V, S]) clearScratch(sp *statePart[K, V, S]) {
	if op.scratchRefs {
		clear(sp.values)
		clear(sp.keys)
	}
}

// stamp records that the key at slab position i was updated by batch.
func (sp *statePart[K, V, S]) stamp(i int32, batch int64) {
	if sp.ttl {
		sp.seen[i] = batch
	}
	if sp.durable {
		sp.ver[i] = batch
	}
}

// applyGroups runs the update function over the values of one partition,
// grouped by key in sp.group, which UpdateAll then reads to know the keys
// the batch updated.
func (op *stateOp[K, V, S]) applyGroups(sp *statePart[K, V, S], vals []Pair[K, V], batch int64) {
	sp.keys, sp.first, sp.last = sp.keys[:0], sp.first[:0], sp.last[:0]
	sp.next = slices.Grow(sp.next[:0], len(vals))[:len(vals)]
	for j, kv := range vals {
		sp.next[j] = -1
		g, ok := sp.group[kv.Key]
		if !ok {
			sp.group[kv.Key] = int32(len(sp.keys))
			sp.keys = append(sp.keys, kv.Key)
			sp.first = append(sp.first, int32(j))
			sp.last = append(sp.last, int32(j))
			continue
		}
		sp.next[sp.last[g]] = int32(j)
		sp.last[g] = int32(j)
	}
	for g, k := range sp.keys {
		sp.values = sp.values[:0]
		for j := sp.first[g]; j >= 0; j = sp.next[j] {
			sp.values = append(sp.values, vals[j].Value)
		}
		sp.updateKey(op, k, sp.values, batch)
	}
	op.clearScratch(sp)
}

func (sp *statePart[K, V, S]) updateKey(op *stateOp[K, V, S], k K, values []V, batch int64) {
	i, exists := sp.index.get(k)
	var old S
	if exists {
		old = sp.slab[i].Value
	}
	nv, keep := op.call(sp, k, values, old, exists)
	switch {
	case !keep && exists:
		sp.remove(i)
		return
	case !keep:
		return
	case exists:
		if sp.obs != nil {
			sp.obs.Changed(k, old, true, nv, true)
		}
		sp.slab[i].Value = nv
	default:
		i = sp.insert(k, nv)
	}
	sp.stamp(i, batch)
}

// insert appends a new key to the slab and the index, and returns its
// position.
func (sp *statePart[K, V, S]) insert(k K, v S) int32 {
	i := sp.add(k, v)
	sp.index.set(k, i)
	return i
}

// add appends a new key to the slab, not to the index, and returns its
// position.
func (sp *statePart[K, V, S]) add(k K, v S) int32 {
	if sp.obs != nil {
		var zero S
		sp.obs.Changed(k, zero, false, v, true)
	}
	i := int32(len(sp.slab))
	sp.slab = append(sp.slab, Pair[K, S]{Key: k, Value: v})
	if sp.ttl {
		sp.seen = append(sp.seen, 0)
	}
	if sp.durable {
		sp.ver = append(sp.ver, 0)
	}
	return i
}

// remove deletes the key at slab position i, moving the last one there.
func (sp *statePart[K, V, S]) remove(i int32) {
	if sp.obs != nil {
		var zero S
		sp.obs.Changed(sp.slab[i].Key, sp.slab[i].Value, true, zero, false)
	}
	last := int32(len(sp.slab) - 1)
	sp.index.remove(sp.slab[i].Key)
	if sp.durable {
		sp.gone = append(sp.gone, sp.slab[i].Key)
	}
	if i != last {
		sp.slab[i] = sp.slab[last]
		sp.index.set(sp.slab[i].Key, i)
		if sp.ttl {
			sp.seen[i] = sp.seen[last]
		}
		if sp.durable {
			sp.ver[i] = sp.ver[last]
		}
	}
	sp.slab[last] = Pair[K, S]{}
	sp.slab = sp.slab[:last]
	if sp.ttl {
		sp.seen = sp.seen[:last]
	}
	if sp.durable {
		sp.ver = sp.ver[:last]
	}
}

func (op *stateOp[K, V, S]) name() string { return op.out.name }

func (op *stateOp[K, V, S]) hashed() bool { return op.hashParts != 0 || op.in.moved != inSourceParts }

// setDurable makes the state track its changes for a Store, once it is
// sure that the default JSON codec, if it is used, gives back the keys and
// states it stores.
func (op *stateOp[K, V, S]) setDurable() error {
	if err := cmp.Or(jsonKeeps(op.keyCodec, true, "keys", "Codecs"), jsonKeeps(op.stateCodec, false, "states", "Codecs")); err != nil {
		return fmt.Errorf("stream: %s: %w", op.name(), err)
	}
	op.durable = true
	return nil
}

// jsonKeeps returns why c, when it is the default JSON codec, would not
// give back the values of T it encodes (see jsonLossy), or nil. what
// names the values, option the option that gives them a codec.
func jsonKeeps[T any](c Codec[T], key bool, what, option string) error {
	if _, ok := c.(JSONCodec[T]); !ok {
		return nil
	}
	t := reflect.TypeFor[T]()
	if err := jsonLossy(t, key, map[reflect.Type]bool{}); err != nil {
		return fmt.Errorf("%s of %v cannot be stored as JSON (%v): give them a codec (%s)", what, t, err, option)
	}
	return nil
}

// size estimates the memory of the state: the slabs, the side slices and
// the indexes.
func (op *stateOp[K, V, S]) size() StateStats {
	op.mu.Lock()
	defer op.mu.Unlock()
	var (
		pair  = int64(unsafe.Sizeof(Pair[K, S]{}))
		entry = int64(unsafe.Sizeof(keyEntry[K]{}))
		st    = StateStats{Name: op.name()}
		bytes int64
	)
	for _, sp := range op.parts {
		st.Keys += len(sp.slab)
		bytes += int64(cap(sp.slab))*pair + int64(cap(sp.seen)+cap(sp.ver))*8
		bytes += int64(len(sp.index.entries)) * entry
	}
	st.Bytes = bytes
	return st
}

// changes appends the entries changed since the last checkpoint to dst,
// and starts tracking anew from batch.
func (op *stateOp[K, V, S]) changes(dst []Entry, batch int64) ([]Entry, error) {
	op.mu.Lock()
	defer op.mu.Unlock()
	name := op.name()
	// Room for every entry at once: a checkpoint may hold one per key in
	// state, and entries hold pointers, which a growing slice copies under
	// the garbage collector's write barriers.
	n := len(op.moved)
	for _, sp := range op.parts {
		if sp == nil {
			continue
		}
		n += len(sp.gone)
		for _, v := range sp.ver[:len(sp.slab)] {
			if v > op.checkpoint {
				n++
			}
		}
	}
	dst = slices.Grow(dst, n)
	dst = append(dst, op.moved...)
	op.moved = op.moved[:0]
	for _, id := range op.ids {
		sp := op.parts[id]
		if sp == nil {
			continue
		}
		// Keys and values are encoded one after the other in one buffer,
		// not one allocation each (see appendEncoded). A buffer that grows
		// leaves the entries already made pointing into the old one, which
		// stays valid.
		var (
			buf []byte
			err error
		)
		for _, k := range sp.gone {
			start := len(buf)
			if buf, err = appendEncoded(buf, op.keyCodec, k); err != nil {
				return dst, fmt.Errorf("encode key %v of %s: %w", k, name, err)
			}
			dst = append(dst, Entry{Op: name, Partition: id, Key: buf[start:len(buf):len(buf)], Deleted: true})
		}
		clear(sp.gone)
		sp.gone = sp.gone[:0]
		for i, kv := range sp.slab {
			if sp.ver[i] <= op.checkpoint {
				continue
			}
			if buf == nil {
				buf = make([]byte, 0, 64<<10)
			}
			start := len(buf)
			if buf, err = appendEncoded(buf, op.keyCodec, kv.Key); err != nil {
				return dst, fmt.Errorf("encode key %v of %s: %w", kv.Key, name, err)
			}
			mid := len(buf)
			if buf, err = appendEncoded(buf, op.stateCodec, kv.Value); err != nil {
				return dst, fmt.Errorf("encode state of key %v of %s: %w", kv.Key, name, err)
			}
			dst = append(dst, Entry{Op: name, Partition: id, Key: buf[start:mid:mid], Value: buf[mid:len(buf):len(buf)]})
		}
	}
	op.checkpoint = batch
	return dst, nil
}

// restore puts one entry of a Store into the state. Keys placed by hash go
// to the partition the current parallelism gives them, whatever partition
// they were saved in: an entry saved under another partition waits for the
// end of the restore (restored).
func (op *stateOp[K, V, S]) restore(e Entry, parallelism int, batch int64) error {
	k, err := op.keyCodec.Decode(e.Key)
	if err != nil {
		return fmt.Errorf("decode key of %s partition %d: %w", e.Op, e.Partition, err)
	}
	id := e.Partition
	if n := op.hashParts; n != 0 {
		if n < 0 {
			n = parallelism
		}
		id = int32(bucketOf(op.hash(k), n))
	}
	var v S
	if !e.Deleted {
		if v, err = op.stateCodec.Decode(e.Value); err != nil {
			return fmt.Errorf("decode state of %s partition %d: %w", e.Op, e.Partition, err)
		}
	}
	op.mu.Lock()
	defer op.mu.Unlock()
	op.restoring = batch
	if id != e.Partition {
		op.elsewhere.put(k, id, e, v)
		return nil
	}
	sp := op.part(id)
	if !e.Deleted {
		op.set(sp, k, v)
	} else if i, exists := sp.index.get(k); exists {
		sp.remove(i)
		sp.gone = sp.gone[:len(sp.gone)-1] // restored, not a change
	}
	return nil
}

// part returns the state of partition id, made if new. op.mu is held.
func (op *stateOp[K, V, S]) part(id int32) *statePart[K, V, S] {
	sp := op.parts[id]
	if sp == nil {
		sp = op.newPart(id)
		op.parts[id] = sp
		op.ids = append(op.ids, id)
		slices.Sort(op.ids)
	}
	return sp
}

// set makes v the restored state of k in sp, and returns its position.
func (op *stateOp[K, V, S]) set(sp *statePart[K, V, S], k K, v S) int32 {
	i, exists := sp.index.get(k)
	if exists {
		if sp.obs != nil {
			sp.obs.Changed(k, sp.slab[i].Value, true, v, true)
		}
		sp.slab[i].Value = v
	} else {
		i = sp.insert(k, v)
	}
	if sp.ttl {
		// A TTL counts from the batch that restores the key, as if it
		// had been updated then: restored in a rebalance, it would
		// otherwise be expired at once (and deleted from the Store).
		sp.seen[i] = op.restoring
	}
	return i
}

// restored ends a restore: each key saved under partitions other than the
// one it now hashes to (the parallelism changed since) takes the state it
// has in the partition that holds it, unless the partition it hashes to
// holds one, which is newer: a key moves by a checkpoint that writes it
// under its new partition and deletes it under the old. An old
// partition's entries, its last write, a delete, included, stand for that
// partition alone, never for the key: a Store that gives every write (a
// changelog) gives a moved key's old values and its delete too, in
// whatever order it reads the partitions. The next checkpoint writes the
// moved keys under their partitions, and deletes them where they were.
func (op *stateOp[K, V, S]) restored() error {
	op.mu.Lock()
	defer op.mu.Unlock()
	for _, k := range op.elsewhere.order {
		at := op.elsewhere.keys[k]
		sp := op.part(at.id)
		_, here := sp.index.get(k)
		for _, w := range at.writes {
			if w.deleted {
				continue
			}
			op.moved = append(op.moved, Entry{Op: op.name(), Partition: w.partition, Key: w.key, Deleted: true})
			if here {
				continue // the partition it hashes to holds it
			}
			i := op.set(sp, k, w.v)
			if sp.durable {
				sp.ver[i] = op.checkpoint + 1
			}
			here = true
		}
	}
	op.elsewhere = stored[K, S]{}
	return nil
}

// stored are the last entries of keys, by the partition they were saved
// under, in the order the keys first came.
type stored[K comparable, S any] struct {
	keys  map[K]*storedKey[S]
	order []K
}

type storedKey[S any] struct {
	id     int32 // the partition the key hashes to
	writes []storedWrite[S]
}

// storedWrite is the last entry of a key under one saved partition.
type storedWrite[S any] struct {
	partition int32
	key       []byte
	v         S
	deleted   bool
}

func (st *stored[K, S]) put(k K, id int32, e Entry, v S) {
	if st.keys == nil {
		st.keys = map[K]*storedKey[S]{}
	}
	at := st.keys[k]
	if at == nil {
		at = &storedKey[S]{id: id}
		st.keys[k] = at
		st.order = append(st.order, k)
	}
	w := storedWrite[S]{partition: e.Partition, key: slices.Clone(e.Key), v: v, deleted: e.Deleted}
	for i := range at.writes {
		if at.writes[i].partition == e.Partition {
			at.writes[i] = w // a later write of the same partition
			return
		}
	}
	at.writes = append(at.writes, w)
}
