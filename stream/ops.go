package stream

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
)

// Map applies f to every value. f runs on several goroutines at once (one
// per partition) and must not have side effects.
//
//	in  -- 1 -- 2 -- 3 -->
//	out -- 2 -- 4 -- 6 -->   Map(in, double)
func Map[T, U any](s *Stream[T], f func(T) U) *Stream[U] {
	s.p.need(f == nil, "Map", "f")
	return elementwise(s, "map", func(o *Partition[U], p *Partition[T], _ []Origin) (_ []Origin, err error) {
		at := -1
		defer recordPanic(p, &at, &err)
		vals := slices.Grow(o.Values, len(p.Values))[:len(p.Values)]
		for j, v := range p.Values {
			at = j
			vals[j] = f(v)
		}
		o.Values, o.Origins = vals, p.Origins
		return nil, nil
	})
}

// elementwise derives from s a stream whose partition is filled by fill
// from the same partition of s, in parallel, into buffers reused from
// batch to batch. fill gets an empty origin buffer of its own and returns
// the output's origins: that buffer, filled, or p.Origins shared when the
// values keep their positions. It works on local slices: partitions share
// cache lines, and a slice header written per value would bounce between
// cores.
//
// fill defers recordPanic, with the index of the value it gives the
// user's function in a local of its own, so that a panic names the
// value's record: a store per value, beside a call that costs more. A
// local, not one given by elementwise, which would be on the heap.
func elementwise[T, U any](s *Stream[T], op string, fill func(o *Partition[U], p *Partition[T], own []Origin) ([]Origin, error)) *Stream[U] {
	var bufs buffers[U]
	return derive(s, op, func(bc *batchCtx) (*Batch[U], error) {
		in, err := s.batch(bc)
		if in == nil || err != nil {
			return nil, err
		}
		out := bufs.next(in.Info, len(in.Partitions))
		err = eachPartition(bc, in, func(i int, p *Partition[T]) error {
			o := &out.Partitions[i]
			o.ID = p.ID
			origins, err := fill(o, p, bufs.ownOrigins(i))
			if origins != nil {
				bufs.keepOrigins(i, origins)
			}
			return err
		})
		return out, err
	})
}

// Filter keeps the values for which keep returns true. A keyed stream stays
// keyed.
//
//	in  -- 1 -- 2 -- 3 -- 4 -->
//	out ------- 2 ------- 4 -->   Filter(in, even)
func Filter[T any](s *Stream[T], keep func(T) bool) *Stream[T] {
	s.p.need(keep == nil, "Filter", "keep")
	out := elementwise(s, "filter", func(o *Partition[T], p *Partition[T], origins []Origin) (_ []Origin, err error) {
		at := -1
		defer recordPanic(p, &at, &err)
		vals := o.Values
		for j, v := range p.Values {
			at = j
			if keep(v) {
				vals = append(vals, v)
				if j < len(p.Origins) {
					origins = append(origins, p.Origins[j])
				}
			}
		}
		o.Values = vals
		return origins, nil
	})
	out.keyed, out.hashParts = s.keyed, s.hashParts
	return out
}

// FlatMap replaces every value by the values f returns for it, each with
// the origin of the value it came from. f gets an empty dst with room for
// values (the operator's buffer) and returns it with its values appended,
// as append does, or returns a slice of its own, whose values are copied:
// append(dst, ...), append(dst[:0], ...) and strings.Fields(v) all work.
// f must not retain dst.
//
//	in  -- "a b" ------ "c" -->
//	out -- "a" "b" ---- "c" -->   FlatMap(in, words)
func FlatMap[T, U any](s *Stream[T], f func(dst []U, v T) []U) *Stream[U] {
	s.p.need(f == nil, "FlatMap", "f")
	return elementwise(s, "flatMap", func(o *Partition[U], p *Partition[T], origins []Origin) (_ []Origin, err error) {
		at := -1
		defer recordPanic(p, &at, &err)
		vals := o.Values
		for j, v := range p.Values {
			at = j
			// An empty dst: f cannot drop or overwrite the values
			// before, and what it returns is all its own.
			before := len(vals)
			dst := vals[before:]
			got := f(dst, v)
			n := len(got)
			if n == 0 {
				continue
			}
			if n <= cap(dst) && &got[0] == &dst[:1][0] {
				vals = vals[:before+n] // appended in place
			} else {
				vals = append(vals, got...)
			}
			if j < len(p.Origins) {
				for range n {
					origins = append(origins, p.Origins[j])
				}
			}
		}
		o.Values = vals
		return origins, nil
	})
}

// MapErr applies f to every value; the first error stops the run, as a
// *RecordError naming the value's origin. Use TryMap to set bad values
// aside instead.
func MapErr[T, U any](s *Stream[T], f func(T) (U, error)) *Stream[U] {
	s.p.need(f == nil, "MapErr", "f")
	return elementwise(s, "mapErr", func(o *Partition[U], p *Partition[T], _ []Origin) (_ []Origin, err error) {
		at := -1
		defer recordPanic(p, &at, &err)
		vals := slices.Grow(o.Values, len(p.Values))[:len(p.Values)]
		o.Values, o.Origins = vals, p.Origins
		for j, v := range p.Values {
			at = j
			u, err := f(v)
			if err != nil {
				return nil, &RecordError{Origin: p.Origin(j), Err: err}
			}
			vals[j] = u
		}
		return nil, nil
	})
}

// Failure is a value that an operator could not process, with where it came
// from and why.
type Failure[T any] struct {
	Value  T
	Origin Origin
	Err    error
}

// MarshalJSON encodes f as the object of its fields, as for any struct,
// but for Err, which is its message (null when nil): an error's fields,
// when it has any, do not say what went wrong, and a dead letter must.
func (f Failure[T]) MarshalJSON() ([]byte, error) {
	// A pointer, so that the value's fields are addressable, as those of
	// a Failure in a slice are: a MarshalJSON of their pointer is called.
	return json.Marshal(&struct {
		Value  T
		Origin Origin
		Err    *string
	}{f.Value, f.Origin, errorMessage(f.Err)})
}

// errorMessage returns err's message, or nil when err is nil or a nil
// pointer whose Error panics, which encoding/json wrote as null.
func errorMessage(err error) (msg *string) {
	if err == nil {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			if v := reflect.ValueOf(err); v.Kind() != reflect.Pointer || !v.IsNil() {
				panic(r)
			}
			msg = nil
		}
	}()
	m := err.Error()
	return &m
}

// TryMap applies f to every value. Values for which f succeeds go to ok;
// values for which it fails go, with their origin and error, to failed, so
// that a pipeline can count them and send them to a dead-letter sink while
// the good values go on. Every batch of ok has a batch of failed and the
// other way round.
//
// Run fails at start if failed has no consumer: a failure must go somewhere.
//
//	in     -- 1 -- x -- 3 -->
//	ok     -- 1 ------- 3 -->
//	failed ------- x ------->   TryMap(in, parse)
func TryMap[T, U any](s *Stream[T], f func(T) (U, error)) (ok *Stream[U], failed *Stream[Failure[T]]) {
	s.p.need(f == nil, "TryMap", "f")
	var (
		good buffers[U]
		bad  buffers[Failure[T]]
		badB *Batch[Failure[T]]
	)
	ok = derive(s, "tryMap", func(bc *batchCtx) (*Batch[U], error) {
		in, err := s.batch(bc)
		if in == nil || err != nil {
			badB = nil
			return nil, err
		}
		out := good.next(in.Info, len(in.Partitions))
		badB = bad.next(in.Info, len(in.Partitions))
		err = eachPartition(bc, in, func(i int, p *Partition[T]) (err error) {
			o, b := &out.Partitions[i], &badB.Partitions[i]
			o.ID, b.ID = p.ID, p.ID
			at := -1 // see elementwise
			defer recordPanic(p, &at, &err)
			// Until a value fails, the good values keep their positions
			// and share their input's origins; from the first failure on,
			// they get origins of their own.
			vals, fails := slices.Grow(o.Values, len(p.Values)), b.Values // local: see reduceInPartitions
			var origins []Origin
			own := false
			for j, v := range p.Values {
				at = j
				u, err := f(v)
				if err != nil {
					if !own {
						origins = append(good.ownOrigins(i), p.Origins[:min(j, len(p.Origins))]...)
						own = true
					}
					fails = append(fails, Failure[T]{Value: v, Origin: p.Origin(j), Err: err})
					continue
				}
				vals = append(vals, u)
				if own && j < len(p.Origins) {
					origins = append(origins, p.Origins[j])
				}
			}
			o.Values, b.Values = vals, fails
			if own {
				good.keepOrigins(i, origins)
			} else {
				o.Origins = p.Origins
			}
			return nil
		})
		return out, err
	})
	failed = newStream(s.p, "tryMap.failed", func(bc *batchCtx) (*Batch[Failure[T]], error) {
		if _, err := ok.batch(bc); err != nil {
			return nil, err
		}
		return badB, nil
	})
	failed.moved, failed.placed = s.moved, s.placed
	failed.mustConsume()
	return ok, failed
}

// MapPartitions replaces the values of each partition by what f returns for
// them. It is where per-partition work goes, such as building one sketch
// per partition. f runs on several goroutines at once, one per partition;
// the values it returns are not copied, and the origins are dropped.
func MapPartitions[T, U any](s *Stream[T], f func(p *Partition[T]) ([]U, error)) *Stream[U] {
	s.p.need(f == nil, "MapPartitions", "f")
	return derive(s, "mapPartitions", func(bc *batchCtx) (*Batch[U], error) {
		in, err := s.batch(bc)
		if in == nil || err != nil {
			return nil, err
		}
		// The values belong to f: they are not reused next batch.
		out := &Batch[U]{Info: in.Info, Partitions: make([]Partition[U], len(in.Partitions))}
		err = eachPartition(bc, in, func(i int, p *Partition[T]) error {
			vals, err := f(p)
			out.Partitions[i] = Partition[U]{ID: p.ID, Values: vals}
			return err
		})
		return out, err
	})
}

// Transform replaces each batch by what f returns for it: the escape hatch
// for whole-batch logic (joins with a table, sorting, sampling). f runs on
// the run loop's goroutine. Returning nil skips the batch for every
// operator downstream.
func Transform[T, U any](s *Stream[T], f func(b *Batch[T]) (*Batch[U], error)) *Stream[U] {
	s.p.need(f == nil, "Transform", "f")
	out := derive(s, "transform", func(bc *batchCtx) (*Batch[U], error) {
		in, err := s.batch(bc)
		if in == nil || err != nil {
			return nil, err
		}
		ob, err := f(in)
		if ob != nil {
			ob.Info = in.Info
		}
		return ob, err
	})
	out.moved, out.placed = movedByTransform, 0 // the partitions f makes
	return out
}

// Broadcast runs f on every partition of s with the value that side holds
// in the same batch: the reduce-and-broadcast step of Spark, where a value
// computed from the whole batch (a threshold, a lookup table) is used by
// every partition. side must hold at most one value per batch, as Reduce
// makes; ok is false when it holds none, or has no batch this time (a
// window between its slides). f runs on several goroutines at
// once, one per partition; the values it returns are not copied, and the
// origins are dropped. side must be of the pipeline of s, or Run fails at
// start.
//
//	s     -- 1 5 | 9 2 -->
//	side  -- 4 ------->
//	out   -- 5 | 9 ---->   Broadcast(s, side, above)
func Broadcast[T, B, U any](s *Stream[T], side *Stream[B], f func(p *Partition[T], b B, ok bool) ([]U, error)) *Stream[U] {
	switch {
	case side == nil:
		s.p.need(true, "Broadcast", "side")
	case side.p != s.p:
		// Its batches are cut by another run: this one would find none.
		s.p.invalid(fmt.Errorf("stream: Broadcast: side stream %s belongs to another pipeline than %s", side.name, s.name))
	default:
		side.consumers++
	}
	s.p.need(f == nil, "Broadcast", "f")
	return derive(s, "broadcast", func(bc *batchCtx) (*Batch[U], error) {
		sb, err := side.batch(bc)
		if err != nil {
			return nil, err
		}
		in, err := s.batch(bc)
		if in == nil || err != nil {
			return nil, err
		}
		var (
			b     B
			found bool
		)
		if sb != nil { // none without a batch
			for v := range sb.All() {
				if found {
					return nil, fmt.Errorf("broadcast: side stream %s holds more than one value", side.name)
				}
				b, found = v, true
			}
		}
		out := &Batch[U]{Info: in.Info, Partitions: make([]Partition[U], len(in.Partitions))}
		err = eachPartition(bc, in, func(i int, p *Partition[T]) error {
			vals, err := f(p, b, found)
			out.Partitions[i] = Partition[U]{ID: p.ID, Values: vals}
			return err
		})
		return out, err
	})
}
