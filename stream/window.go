package stream

import (
	"fmt"
	"reflect"
	"slices"
)

// Window gathers the last length batches of s into one batch, every slide
// batches: the sliding window of Spark Streaming, counted in batches. On
// the batches between slides the window has no batch, and nothing
// downstream runs. Until length batches have passed, the window holds the
// ones there are. Partitions of the same ID are concatenated, oldest batch
// first.
//
//	in   -- 1 -- 2 -- 3 -- 4 -- 5 -->
//	out  ------- 12 ------ 234 ----->   Window(in, 3, 2)
//
// The window keeps a copy of the values of length batches. With an
// Assigner source (Kafka), a partition the source loses leaves the window
// with it, as the state of UpdateStateByKey does: its new owner reads it
// again from its last commit, and gives the results of it from then on
// (what was committed before is in no window once it is lost). This needs
// the window's partitions to be the source's, every value in the
// partition of its record: those of the source, of Keyed, and of what the
// element-wise operators, MapPartitions, Broadcast, windows and the keyed
// operators of a Keyed stream make of them. A window of partitions that
// are not the source's (PartitionByKey, ReduceByKey or UpdateStateByKey
// of a stream that is not Keyed, Reduce, Transform unless declared Keyed
// since: see Keyed) could not tell a lost partition's values from the
// others, and would count twice what is read again when it comes back:
// under an Assigner source, Run fails at start.
// Window the values before they move instead: ReduceByKey(Window(s,
// length, slide), f), or ReduceByKeyAndWindow(s, ...), rather than a
// window of ReduceByKey(s, f).
func Window[T any](s *Stream[T], length, slide int) *Stream[T] {
	out, drop := window(s, length, slide)
	s.p.addWindow("Window", s.moved != inSourceParts, func() string { return out.name }, drop)
	return out
}

// window is Window, with a function that drops what the window holds of
// partitions lost, for the caller to register (see Pipeline.addWindow).
func window[T any](s *Stream[T], length, slide int) (*Stream[T], func(lost []int32)) {
	if length < 1 || slide < 1 {
		s.p.err = fmt.Errorf("stream: window of %d batches sliding by %d: both must be at least 1", length, slide)
	}
	var (
		ring  []Batch[T] // the last length batches, copied
		seen  int
		bufs  buffers[T]
		index = map[int32]int{}
	)
	out := derive(s, "window", func(bc *batchCtx) (*Batch[T], error) {
		in, err := s.batch(bc)
		if in == nil || err != nil {
			return nil, err
		}
		seen++
		if len(ring) == length {
			ring = slices.Delete(ring, 0, 1)
		}
		ring = append(ring, copyBatch(in))
		if seen%slide != 0 {
			return nil, nil
		}
		clear(index)
		var ids []int32
		for _, b := range ring {
			for _, p := range b.Partitions {
				if _, ok := index[p.ID]; !ok {
					index[p.ID] = 0
					ids = append(ids, p.ID)
				}
			}
		}
		slices.Sort(ids)
		for i, id := range ids {
			index[id] = i
		}
		ob := bufs.next(in.Info, len(ids))
		origins := make([][]Origin, len(ids))
		complete := make([]bool, len(ids))
		for i := range ob.Partitions {
			ob.Partitions[i].ID = ids[i]
			origins[i], complete[i] = bufs.ownOrigins(i), true
		}
		for _, b := range ring {
			for _, p := range b.Partitions {
				i := index[p.ID]
				ob.Partitions[i].Values = append(ob.Partitions[i].Values, p.Values...)
				origins[i] = append(origins[i], p.Origins...)
				complete[i] = complete[i] && len(p.Origins) == len(p.Values)
			}
		}
		for i := range ob.Partitions {
			bufs.keepOrigins(i, origins[i])
			if !complete[i] {
				ob.Partitions[i].Origins = nil // some values have no origin
			}
		}
		return ob, nil
	})
	out.keyed, out.hashParts = s.keyed, s.hashParts
	return out, func(lost []int32) { dropPartitions(ring, lost) }
}

// dropPartitions removes the partitions of IDs lost from the batches of
// ring: a partition an Assigner source lost leaves the window with its
// state, as its new owner reads it again from its last commit.
func dropPartitions[T any](ring []Batch[T], lost []int32) {
	for i := range ring {
		ring[i].Partitions = slices.DeleteFunc(ring[i].Partitions, func(p Partition[T]) bool {
			return slices.Contains(lost, p.ID)
		})
	}
}

func copyBatch[T any](b *Batch[T]) Batch[T] {
	c := Batch[T]{Info: b.Info, Partitions: make([]Partition[T], len(b.Partitions))}
	for i, p := range b.Partitions {
		c.Partitions[i] = Partition[T]{ID: p.ID, Values: slices.Clone(p.Values), Origins: slices.Clone(p.Origins)}
	}
	return c
}

// ReduceByKeyAndWindow combines the values of each key over the last length
// batches, every slide batches, with f (associative and commutative).
//
// With inverse nil, each slide combines the window's per-batch results
// again. With inverse, which must undo f (inverse(f(a, b), b) == a), the
// result is kept up to date incrementally: each batch's values are added
// as it enters and removed as it leaves, so a slide costs the batches that
// moved, not the whole window. A key is dropped once no batch in the window
// has a value for it, and the keys of a partition come out in no particular
// order (without inverse, in the order they first appear in the window, as
// with ReduceByKey; but for a stream that is not Keyed under an Assigner
// source, whose window is kept by source partition: in no particular order
// either).
//
// As with Window, the values of a partition that an Assigner source loses
// leave the window. The keys of a stream that is not Keyed are moved by a
// hash of them, as by ReduceByKey: under an Assigner source, the window
// then holds the results of each source partition, before the move, and
// the keys are combined across partitions as the window slides, which
// costs a move of the window's keys every slide. A stream already moved
// by a hash (PartitionByKey), or made by Reduce, or by Transform unless
// declared Keyed since, cannot be windowed by source partition: under an
// Assigner source, Run fails at start.
//
// With inverse, a key must be equal to itself: a batch holding a key that is not (a
// float NaN), which the running results could never find to remove,
// fails, as in UpdateStateByKey.
//
// A panic of f, with or without inverse, or of inverse fails the batch
// with a *PanicError within a *KeyError naming the key, a
// *PartitionError and a *StageError.
//
//	in  -- (a,1) -- (a,2) -- (b,1) -->
//	out -- (a,1) -- (a,3) -- (a,2) (b,1) -->   length 2, slide 1, sum
func ReduceByKeyAndWindow[K comparable, V any](s *Stream[Pair[K, V]], f, inverse func(V, V) V, length, slide int) *Stream[Pair[K, V]] {
	if !s.keyed && s.moved == inSourceParts && s.p.assigned() {
		// A window of the keys moved would hold no source partition, and
		// could not drop a lost one's values.
		w := reduceByKeyAndWindow(reduceInPartitions(s, f), f, inverse, length, slide)
		return reduceInPartitions(PartitionByKey(w, 0), f)
	}
	return reduceByKeyAndWindow(ReduceByKey(s, f), f, inverse, length, slide)
}

// reduceByKeyAndWindow is ReduceByKeyAndWindow of the per-batch results
// perBatch, a key once in each of its partitions, combined within each
// partition.
func reduceByKeyAndWindow[K comparable, V any](perBatch *Stream[Pair[K, V]], f, inverse func(V, V) V, length, slide int) *Stream[Pair[K, V]] {
	if inverse == nil {
		w, drop := window(perBatch, length, slide)
		out := reduceInPartitions(w, f)
		perBatch.p.addWindow("ReduceByKeyAndWindow", perBatch.moved != inSourceParts, func() string { return out.name }, drop)
		return out
	}
	if length < 1 || slide < 1 {
		perBatch.p.err = fmt.Errorf("stream: window of %d batches sliding by %d: both must be at least 1", length, slide)
	}
	type counted struct {
		v V
		n int32 // batches in the window with a value for the key
	}
	var (
		ring    []Batch[Pair[K, V]]
		seen    int
		running = map[int32]map[K]counted{}
		bufs    buffers[Pair[K, V]]
		// irreflexive: a key may be unequal to itself (a NaN), which the
		// running results could never find to remove
		irreflexive = typeMayBeIrreflexive(reflect.TypeFor[K]())
	)
	// update adds kv to the running results of a partition (sign 1), or
	// removes it (-1).
	update := func(m map[K]counted, kv Pair[K, V], sign int32) {
		c, ok := m[kv.Key]
		switch {
		case sign > 0 && !ok:
			c = counted{v: kv.Value, n: 1}
		case sign > 0:
			c = counted{v: f(c.v, kv.Value), n: c.n + 1}
		case c.n <= 1:
			delete(m, kv.Key)
			return
		default:
			c = counted{v: inverse(c.v, kv.Value), n: c.n - 1}
		}
		m[kv.Key] = c
	}
	// add adds the values of b to the running results (sign 1), or
	// removes them (-1). A panic of f or inverse names its partition and
	// key.
	add := func(b *Batch[Pair[K, V]], sign int32) error {
		for _, p := range b.Partitions {
			m := running[p.ID]
			if m == nil {
				m = map[K]counted{}
				running[p.ID] = m
			}
			var key K
			err := recovered(func() error {
				for _, kv := range p.Values {
					key = kv.Key
					update(m, kv, sign)
				}
				return nil
			})
			if err != nil {
				return &PartitionError{Partition: p.ID, Err: &KeyError{Key: key, Err: err}}
			}
		}
		return nil
	}
	out := derive(perBatch, "reduceByKeyAndWindow", func(bc *batchCtx) (*Batch[Pair[K, V]], error) {
		in, err := perBatch.batch(bc)
		if in == nil || err != nil {
			return nil, err
		}
		if irreflexive {
			for i := range in.Partitions {
				if err := checkKeys(&in.Partitions[i]); err != nil {
					return nil, &PartitionError{Partition: in.Partitions[i].ID, Err: err}
				}
			}
		}
		seen++
		if len(ring) == length {
			if err := add(&ring[0], -1); err != nil {
				return nil, err
			}
			ring = slices.Delete(ring, 0, 1)
		}
		c := copyBatch(in)
		ring = append(ring, c)
		if err := add(&c, +1); err != nil {
			return nil, err
		}
		if seen%slide != 0 {
			return nil, nil
		}
		ids := make([]int32, 0, len(running))
		for id, m := range running {
			if len(m) > 0 {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		ob := bufs.next(in.Info, len(ids))
		err = bc.parallel(len(ids), func(i int) error {
			o := &ob.Partitions[i]
			o.ID = ids[i]
			vals := o.Values
			for k, c := range running[ids[i]] {
				vals = append(vals, Pair[K, V]{Key: k, Value: c.v})
			}
			o.Values = vals
			return nil
		})
		return ob, err
	})
	perBatch.p.addWindow("ReduceByKeyAndWindow", perBatch.moved != inSourceParts, func() string { return out.name }, func(lost []int32) {
		dropPartitions(ring, lost)
		for _, id := range lost {
			delete(running, id)
		}
	})
	out.keyed = perBatch.keyed
	out.unique = true
	out.hashParts = perBatch.hashParts
	return out
}
