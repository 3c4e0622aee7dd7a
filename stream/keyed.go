package stream

import (
	"hash/maphash"
	"math/bits"
	"reflect"
	"slices"
	"unsafe"
)

// Keyed declares that all values of a key are already in one partition, as
// when a Kafka topic's producers partition by the same key: keyed operators
// downstream then work within partitions and move nothing. The partition
// IDs stay the source's, so keyed state lives with the partition that owns
// the key. A stream an operator has already placed by key (PartitionByKey,
// ReduceByKey, UpdateStateByKey) stays placed as it is, by a hash of the
// key if so, also when operators that keep the partitions (Map, FlatMap,
// MapPartitions) made it since: its keys are restored from a Store by
// the hash, into the partitions their values go to.
//
// Keyed is an assertion, not a check: if it is false, ReduceByKey and
// UpdateStateByKey see a key in several partitions and keep one result per
// partition. Of a stream made by Transform, it also says that f kept
// the source's partitions. It cannot say so of partitions made by a
// hash of the keys or by Reduce (PartitionByKey, ReduceByKey of a stream
// that is not Keyed): a Keyed stream of them, mapped since, is still in
// them, and its windows and state are refused under an Assigner source
// as theirs are.
func Keyed[K comparable, V any](s *Stream[Pair[K, V]]) *Stream[Pair[K, V]] {
	out := derive(s, "keyed", s.batch)
	out.keyed = true
	// The source's partitions, unless a hash placed the values, maybe
	// before operators that do not keep its keyed flag (Map).
	out.hashParts = s.placed
	if s.keyed {
		out.hashParts = s.hashParts // placed already, maybe by a hash
	}
	// Partitions made by a hash of the keys or by Reduce stay so,
	// whatever was done to the values since; those a Transform made
	// may be the source's, as Keyed then says.
	switch {
	case out.hashParts != 0 && s.moved == inSourceParts:
		out.moved = movedForGood
	case out.hashParts == 0 && s.moved == movedByTransform:
		out.moved = inSourceParts
	}
	return out
}

// PartitionByKey moves values so that all values of a key meet in one of n
// partitions (IDs 0 to n-1), chosen by a hash of the key. n <= 0 means the
// pipeline's Parallelism. The hash of integer and string keys (of named
// integer and string types too) is fixed, so a key goes to the same
// partition in every run and every process; other key types use a hash
// seeded once per process. The values moved lose their origins: an error
// downstream names the stage, the batch and the partition, not the record.
//
//	in  -- (a,1) (b,2) | (a,3) -->        2 partitions
//	out -- (a,1) (a,3) | (b,2) -->        PartitionByKey(in, 2)
func PartitionByKey[K comparable, V any](s *Stream[Pair[K, V]], n int) *Stream[Pair[K, V]] {
	hash := hasher[K]()
	refs := holdsPointers[Pair[K, V]]()
	var (
		bufs    buffers[Pair[K, V]]
		buckets [][][]Pair[K, V] // [input partition][output partition]
	)
	out := derive(s, "partitionByKey", func(bc *batchCtx) (*Batch[Pair[K, V]], error) {
		in, err := s.batch(bc)
		if in == nil || err != nil {
			return nil, err
		}
		parts := n
		if parts <= 0 {
			parts = bc.par
		}
		for len(buckets) < len(in.Partitions) {
			buckets = append(buckets, nil)
		}
		// Split every input partition into buckets, in parallel, then
		// gather each bucket column into one output partition.
		err = eachPartition(bc, in, func(i int, p *Partition[Pair[K, V]]) error {
			b := buckets[i]
			for len(b) < parts {
				b = append(b, nil)
			}
			b = b[:parts]
			// Room for a bucket's share at once: append alone would
			// grow a large bucket a quarter at a time. No room ahead
			// for buckets that get less than one value on average
			// (many partitions, a small batch): kept from batch to
			// batch, it would add up to parts times the slack.
			even := len(p.Values) / parts
			share := even + even/8 + min(16, even)
			for j := range b {
				if refs {
					clear(b[j])
				}
				b[j] = slices.Grow(b[j][:0], share)
			}
			for _, kv := range p.Values {
				j := bucketOf(hash(kv.Key), parts)
				b[j] = append(b[j], kv)
			}
			buckets[i] = b
			return nil
		})
		if err != nil {
			return nil, err
		}
		ob := bufs.next(in.Info, parts)
		err = bc.parallel(parts, func(j int) error {
			o := &ob.Partitions[j]
			o.ID = int32(j)
			n := 0
			for i := range in.Partitions {
				n += len(buckets[i][j])
			}
			vals := slices.Grow(o.Values, n)
			for i := range in.Partitions {
				vals = append(vals, buckets[i][j]...)
			}
			o.Values = vals
			return nil
		})
		return ob, err
	})
	out.keyed = true
	out.hashParts = n
	if n <= 0 {
		out.hashParts = -1
	}
	out.moved, out.placed = movedForGood, out.hashParts
	return out
}

// bucketOf maps h to [0, n) without a division.
func bucketOf(h uint64, n int) int {
	hi, _ := bits.Mul64(h, uint64(n))
	return int(hi)
}

// hasher returns the hash PartitionByKey uses for K, which
// UpdateStateByKey also uses to place a restored key where the key's
// values go. Integer and string keys, named types of them included
// (type UserID int64), hash the same in every process; other keys
// (structs, arrays, ...) hash by one seed for the whole process, so
// that every hasher of a process agrees, and a restore in another
// process moves them to where that one's values go.
func hasher[K comparable]() func(K) uint64 {
	var zero K
	switch any(zero).(type) {
	case int:
		return func(k K) uint64 { return mix64(uint64(any(k).(int))) }
	case int64:
		return func(k K) uint64 { return mix64(uint64(any(k).(int64))) }
	case int32:
		return func(k K) uint64 { return mix64(uint64(any(k).(int32))) }
	case uint64:
		return func(k K) uint64 { return mix64(any(k).(uint64)) }
	case uint32:
		return func(k K) uint64 { return mix64(uint64(any(k).(uint32))) }
	case string:
		return func(k K) uint64 { return fnv1a(any(k).(string)) }
	}
	// Other integers and strings, named types of them too: hashed as their
	// value, read in place.
	switch reflect.TypeFor[K]().Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		switch unsafe.Sizeof(zero) {
		case 8:
			return func(k K) uint64 { return mix64(uint64(*(*int64)(unsafe.Pointer(&k)))) }
		case 4:
			return func(k K) uint64 { return mix64(uint64(*(*int32)(unsafe.Pointer(&k)))) }
		case 2:
			return func(k K) uint64 { return mix64(uint64(*(*int16)(unsafe.Pointer(&k)))) }
		default:
			return func(k K) uint64 { return mix64(uint64(*(*int8)(unsafe.Pointer(&k)))) }
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		switch unsafe.Sizeof(zero) {
		case 8:
			return func(k K) uint64 { return mix64(*(*uint64)(unsafe.Pointer(&k))) }
		case 4:
			return func(k K) uint64 { return mix64(uint64(*(*uint32)(unsafe.Pointer(&k)))) }
		case 2:
			return func(k K) uint64 { return mix64(uint64(*(*uint16)(unsafe.Pointer(&k)))) }
		default:
			return func(k K) uint64 { return mix64(uint64(*(*uint8)(unsafe.Pointer(&k)))) }
		}
	case reflect.String:
		return func(k K) uint64 { return fnv1a(*(*string)(unsafe.Pointer(&k))) }
	}
	return func(k K) uint64 { return maphash.Comparable(processSeed, k) }
}

// wordKey reports that K is a 64-bit integer type, named or not, which
// hasher hashes as mix64 of its bits.
func wordKey[K comparable]() bool {
	var zero K
	switch reflect.TypeFor[K]().Kind() {
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint64, reflect.Uintptr:
		return unsafe.Sizeof(zero) == 8
	}
	return false
}

// processSeed seeds the hash of the keys that have no fixed one.
var processSeed = maphash.MakeSeed()

// mix64 is the finalizer of SplitMix64: consecutive integers spread evenly.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

// ReduceByKey combines the values of each key in a batch with f, which
// must be associative and commutative, into one Pair per key. Unless s is
// keyed, values are first combined within each partition, then moved with
// PartitionByKey and combined again. Keys come out in the order they first
// appear in a partition. f runs on several goroutines at once, one per
// partition; a panic of f fails the batch with a *PanicError within a
// *KeyError naming the key, a *PartitionError and a *StageError.
//
//	in  -- (a,1) (b,2) (a,3) -->
//	out -- (a,4) (b,2) ------>   ReduceByKey(in, add)
func ReduceByKey[K comparable, V any](s *Stream[Pair[K, V]], f func(V, V) V) *Stream[Pair[K, V]] {
	s.p.need(f == nil, "ReduceByKey", "f")
	if s.keyed {
		return reduceInPartitions(s, f)
	}
	return reduceInPartitions(PartitionByKey(reduceInPartitions(s, f), 0), f)
}

// reduceInPartitions combines the values of each key within each partition.
func reduceInPartitions[K comparable, V any](s *Stream[Pair[K, V]], f func(V, V) V) *Stream[Pair[K, V]] {
	var (
		bufs  buffers[Pair[K, V]]
		index []map[K]int32 // key -> position in the output, by partition index
	)
	out := derive(s, "reduceByKey", func(bc *batchCtx) (*Batch[Pair[K, V]], error) {
		in, err := s.batch(bc)
		if in == nil || err != nil {
			return nil, err
		}
		for len(index) < len(in.Partitions) {
			index = append(index, make(map[K]int32))
		}
		ob := bufs.next(in.Info, len(in.Partitions))
		err = eachPartition(bc, in, func(i int, p *Partition[Pair[K, V]]) error {
			o := &ob.Partitions[i]
			o.ID = p.ID
			idx := index[i]
			clear(idx)
			// Work on a local slice: partitions share cache lines, and a
			// slice header written per value would bounce between cores.
			vals := o.Values
			// at is the value being combined, so that a panic names its
			// key: of f, or of the hash of a key that has none (an
			// interface holding a slice). Its store costs nothing that
			// counts beside the lookup's call, around which every
			// register is saved anyway.
			at := -1
			err := recovered(func() error {
				for j, kv := range p.Values {
					at = j
					if k, ok := idx[kv.Key]; ok {
						vals[k].Value = f(vals[k].Value, kv.Value)
						continue
					}
					idx[kv.Key] = int32(len(vals))
					vals = append(vals, kv)
				}
				return nil
			})
			o.Values = vals
			if err != nil && at >= 0 {
				return &KeyError{Key: p.Values[at].Key, Err: err}
			}
			return err
		})
		return ob, err
	})
	out.keyed = s.keyed
	out.unique = true
	out.hashParts = s.hashParts
	return out
}

// Reduce combines all values of a batch into one with f, which must be
// associative: first within each partition, in parallel, then across
// partitions in partition order. The result is a batch with one partition
// (ID 0) holding one value, or none when the batch is empty.
//
//	in  -- 1 2 | 3 4 -->
//	out -- 10 -------->   Reduce(in, add)
func Reduce[T any](s *Stream[T], f func(T, T) T) *Stream[T] {
	s.p.need(f == nil, "Reduce", "f")
	var (
		bufs     buffers[T]
		partials []T
		has      []bool
	)
	out := derive(s, "reduce", func(bc *batchCtx) (*Batch[T], error) {
		in, err := s.batch(bc)
		if in == nil || err != nil {
			return nil, err
		}
		partials = append(partials[:0], make([]T, len(in.Partitions))...)
		has = append(has[:0], make([]bool, len(in.Partitions))...)
		err = eachPartition(bc, in, func(i int, p *Partition[T]) error {
			if len(p.Values) == 0 {
				return nil
			}
			acc := p.Values[0]
			for _, v := range p.Values[1:] {
				acc = f(acc, v)
			}
			partials[i], has[i] = acc, true
			return nil
		})
		if err != nil {
			return nil, err
		}
		ob := bufs.next(in.Info, 1)
		o := &ob.Partitions[0]
		o.ID = 0
		var acc T
		found := false
		for i, v := range partials {
			switch {
			case !has[i]:
			case !found:
				acc, found = v, true
			default:
				acc = f(acc, v)
			}
		}
		if found {
			o.Values = append(o.Values, acc)
		}
		return ob, nil
	})
	out.moved, out.placed = movedForGood, 0 // one partition of all
	return out
}
