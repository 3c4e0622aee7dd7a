package stream

import (
	"cmp"
	"encoding/binary"
	"errors"
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
// The window keeps a copy of the values of the last length-1 batches, for
// the slides to come. With the pipeline's Store (WithStore), it keeps them
// there too, as UpdateStateByKey keeps its state, under its name
// (Stream.Named), which no other window or stateful operator may share and
// which must stay the same across versions of the program. A batch's
// partitions are encoded once, as they enter, by the codec of WindowCodec
// (by default that of CodecFor), written by the next checkpoint, and
// deleted by the first checkpoint after they leave; an empty one is not
// stored. An idle partition costs its position alone, written by every
// checkpoint; once the window holds no batch of it, only under an Assigner
// source, whose partitions enter the window idle or not. A restart restores
// the window as of the checkpoint whose offsets it goes on from (with
// CheckpointEvery, CommitInterval and WithTransaction too), and the slide
// goes on in step: the windows are those of a run that did not stop.
// Restored values have no Origins. A window of pairs placed by a hash of
// their keys (PartitionByKey, ReduceByKey) puts them back where their keys
// now hash: under another Parallelism or count of partitions, or in a new
// process for keys whose hash is seeded per process (see PartitionByKey).
// One of values that no longer hold the keys they were placed by over the
// Parallelism (a Map of such pairs) cannot, and Run fails as it restores it
// under another parallelism.
//
// With an Assigner source (Kafka), a partition the source loses leaves the
// window with it, as the state of UpdateStateByKey does, and its new owner
// reads it again from its last commit. With a Store, the new owner
// restores the partition's batches as of that commit's checkpoint, each as
// many batches back as it was then: its window of the partition is the one
// the old owner would have had. Without a Store, what was committed before
// is in no window once it is lost. This needs the window's partitions to
// be the source's, every value in the partition of its record: those of
// the source, of Keyed, and of what the element-wise operators,
// MapPartitions, Broadcast, windows and the keyed operators of a Keyed
// stream make of them. A window of partitions that are not the source's
// (PartitionByKey, ReduceByKey or UpdateStateByKey of a stream that is not
// Keyed, Reduce, Transform unless declared Keyed since: see Keyed) could
// not tell a lost partition's values from the others, and would count
// twice what is read again when it comes back: under an Assigner source,
// Run fails at start. Window the values before they move instead:
// ReduceByKey(Window(s, length, slide), f), or ReduceByKeyAndWindow(s,
// ...), rather than a window of ReduceByKey(s, f).
func Window[T any](s *Stream[T], length, slide int, opts ...WindowOption) *Stream[T] {
	var cfg windowConfig
	for _, o := range opts {
		o.applyWindow(&cfg)
	}
	codec := CodecFor[T]()
	if cfg.codec != nil {
		c, ok := cfg.codec.(Codec[T])
		if !ok {
			s.p.invalid(fmt.Errorf("stream: Window: a codec of %T does not fit values %T (ReduceByKeyAndWindow takes WindowCodecs)", cfg.codec, *new(T)))
		}
		codec = c
	}
	if cfg.keyCodec != nil {
		s.p.invalid(errors.New("stream: Window: WindowCodecs is for the keys and values of ReduceByKeyAndWindow: give Window a WindowCodec"))
	}
	out, w := window(s, length, slide, codec)
	w.nameOf = func() string { return out.name }
	s.p.addWindow("Window", s.moved != inSourceParts, w)
	return out
}

// window is Window, with the ring holding its batches, for the caller to
// name and register (see Pipeline.addWindow).
func window[T any](s *Stream[T], length, slide int, codec Codec[T]) (*Stream[T], *windowRing[T]) {
	if length < 1 || slide < 1 {
		s.p.invalid(fmt.Errorf("stream: window of %d batches sliding by %d: both must be at least 1", length, slide))
	}
	w := newWindowRing(s, length, codec)
	var (
		bufs  buffers[T]
		index = map[int32]int{}
	)
	out := derive(s, "window", func(bc *batchCtx) (*Batch[T], error) {
		in, err := s.batch(bc)
		if in == nil || err != nil {
			return nil, err
		}
		if err := w.enter(bc, in); err != nil {
			return nil, err
		}
		if w.seen%int64(slide) != 0 {
			w.trim()
			return nil, nil
		}
		clear(index)
		var ids []int32
		for _, sl := range w.slots {
			for _, p := range sl.batch.Partitions {
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
		for _, sl := range w.slots {
			for _, p := range sl.batch.Partitions {
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
		w.trim()
		return ob, nil
	})
	out.keyed, out.hashParts = s.keyed, s.hashParts
	return out, w
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
// As with Window, the window is kept in the pipeline's Store and restored
// after a restart and in a rebalance, and the values of a partition that
// an Assigner source loses leave it. What it keeps are the per-batch
// results, their keys and values encoded by the codecs of WindowCodecs
// (by default those of CodecFor, as for UpdateStateByKey, and Run fails
// at start when JSON would not give them back); with inverse, the
// running results are made anew from them as they are restored. The keys of a stream that is not Keyed are moved by a
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
func ReduceByKeyAndWindow[K comparable, V any](s *Stream[Pair[K, V]], f, inverse func(V, V) V, length, slide int, opts ...WindowOption) *Stream[Pair[K, V]] {
	s.p.need(f == nil, "ReduceByKeyAndWindow", "f") // inverse may be nil
	var cfg windowConfig
	for _, o := range opts {
		o.applyWindow(&cfg)
	}
	kc, vc, ok := codecsOf[K, V](cfg.keyCodec, cfg.valueCodec)
	if !ok {
		s.p.invalid(fmt.Errorf("stream: ReduceByKeyAndWindow: codecs of %T and %T do not fit keys %T and values %T", cfg.keyCodec, cfg.valueCodec, *new(K), *new(V)))
	}
	if cfg.codec != nil {
		s.p.invalid(errors.New("stream: ReduceByKeyAndWindow: WindowCodec is for the values of Window: give ReduceByKeyAndWindow WindowCodecs"))
	}
	if !s.keyed && s.moved == inSourceParts && s.p.assigned() {
		// A window of the keys moved would hold no source partition, and
		// could not drop a lost one's values.
		w, ring := reduceByKeyAndWindow(reduceInPartitions(s, f), f, inverse, length, slide, kc, vc)
		out := reduceInPartitions(PartitionByKey(w, 0), f)
		ring.nameOf = func() string { return out.name }
		return out
	}
	out, _ := reduceByKeyAndWindow(ReduceByKey(s, f), f, inverse, length, slide, kc, vc)
	return out
}

// reduceByKeyAndWindow is ReduceByKeyAndWindow of the per-batch results
// perBatch, a key once in each of its partitions, combined within each
// partition. It registers the ring of per-batch results it keeps, named
// after its output unless the caller names it otherwise.
func reduceByKeyAndWindow[K comparable, V any](perBatch *Stream[Pair[K, V]], f, inverse func(V, V) V, length, slide int, kc Codec[K], vc Codec[V]) (*Stream[Pair[K, V]], *windowRing[Pair[K, V]]) {
	codec := pairCodec[K, V]{k: kc, v: vc}
	moved := perBatch.moved != inSourceParts
	if inverse == nil {
		w, ring := window(perBatch, length, slide, Codec[Pair[K, V]](codec))
		out := reduceInPartitions(w, f)
		ring.nameOf = func() string { return out.name }
		perBatch.p.addWindow("ReduceByKeyAndWindow", moved, ring)
		return out, ring
	}
	if length < 1 || slide < 1 {
		perBatch.p.invalid(fmt.Errorf("stream: window of %d batches sliding by %d: both must be at least 1", length, slide))
	}
	type counted struct {
		v V
		n int32 // batches in the window with a value for the key
	}
	var (
		ring    = newWindowRing(perBatch, length, Codec[Pair[K, V]](codec))
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
	// add adds the values of p to the running results (sign 1), or
	// removes them (-1). A panic of f or inverse names its partition and
	// key.
	add := func(p *Partition[Pair[K, V]], sign int32) error {
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
		return nil
	}
	// The batch that left the ring last leaves the running results as
	// the next one enters, in the batch whose window no longer holds it.
	var leaving []Partition[Pair[K, V]]
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
		for i := range leaving {
			if err := add(&leaving[i], -1); err != nil {
				return nil, err
			}
		}
		leaving = nil
		if err := ring.enter(bc, in); err != nil {
			return nil, err
		}
		c := &ring.slots[len(ring.slots)-1].batch
		for i := range c.Partitions {
			if err := add(&c.Partitions[i], +1); err != nil {
				return nil, err
			}
		}
		if ring.seen%int64(slide) != 0 {
			leaving = ring.trim()
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
		if err != nil {
			return nil, err
		}
		leaving = ring.trim()
		return ob, nil
	})
	// The running results of the batches restored are made anew.
	ring.onRestore = func(p *Partition[Pair[K, V]]) error { return add(p, +1) }
	ring.onDrop = func(lost []int32) {
		leaving = slices.DeleteFunc(leaving, func(p Partition[Pair[K, V]]) bool { return slices.Contains(lost, p.ID) })
		for _, id := range lost {
			delete(running, id)
		}
	}
	ring.nameOf = func() string { return out.name }
	perBatch.p.addWindow("ReduceByKeyAndWindow", moved, ring)
	out.keyed = perBatch.keyed
	out.unique = true
	out.hashParts = perBatch.hashParts
	return out, ring
}

// pairCodec encodes a pair as the length of its key's encoding, the key,
// then the value.
type pairCodec[K comparable, V any] struct {
	k Codec[K]
	v Codec[V]
}

func (c pairCodec[K, V]) Append(dst []byte, kv Pair[K, V]) ([]byte, error) {
	start := len(dst)
	dst, err := appendEncoded(dst, c.k, kv.Key)
	if err != nil {
		return dst, err
	}
	// The key's length goes before it: the key moves up to make room.
	var lb [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(lb[:], uint64(len(dst)-start))
	dst = append(dst, lb[:n]...)
	copy(dst[start+n:], dst[start:len(dst)-n])
	copy(dst[start:], lb[:n])
	return appendEncoded(dst, c.v, kv.Value)
}

func (c pairCodec[K, V]) Decode(b []byte) (Pair[K, V], error) {
	var kv Pair[K, V]
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return kv, errors.New("stream: codec: bad pair")
	}
	k, err := c.k.Decode(b[n : n+int(l) : n+int(l)])
	if err != nil {
		return kv, err
	}
	v, err := c.v.Decode(b[n+int(l):])
	return Pair[K, V]{Key: k, Value: v}, err
}

// lossy says why the default JSON codecs, if used, would not give back
// the keys or values.
func (c pairCodec[K, V]) lossy() error {
	return cmp.Or(jsonKeeps(c.k, true, "keys", "WindowCodecs"), jsonKeeps(c.v, false, "values", "WindowCodecs"))
}
