package stream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
)

// Stream is a sequence of batches of T: the DStream of Spark Streaming. A
// Stream is made by From or by an operator, and does nothing until an output
// (ForEachBatch, ForEachPartition, To) consumes it and the Pipeline runs.
//
// A Stream may feed several operators; each batch of it is computed once.
// Streams are not safe for concurrent use while they are being built; build
// the whole graph before Run.
type Stream[T any] struct {
	p      *Pipeline
	name   string
	keyed  bool // every key of a Pair stream lives in one partition
	unique bool // every key of a Pair stream appears once per batch
	// hashParts says keys are placed by PartitionByKey's hash over this
	// many partitions (-1: the pipeline's Parallelism); 0 if not.
	hashParts int
	// moved says whether the partitions are the source's, and if not,
	// what moved them: a moved partition may hold values of other source
	// partitions than the one of its ID.
	moved mover
	// placed is hashParts of the partitions PartitionByKey last made,
	// kept by the operators that keep partitions, keyed or not (a Map
	// may change the keys, but not where the values are): Keyed places
	// by it. 0 if they are not a hash's.
	placed int

	consumers int // operators and outputs reading this stream
	compute   func(bc *batchCtx) (*Batch[T], error)

	memoID  int64
	memo    *Batch[T]
	memoErr error
}

// Named sets the stage name that errors of this stream carry (the default
// is the operator and a number, as in "map#3"), and returns s. The outputs
// of s take their names from it ("to(name)") as Run starts, whether they
// were added before Named or after.
func (s *Stream[T]) Named(name string) *Stream[T] {
	s.name = name
	return s
}

// Pipeline returns the pipeline s belongs to.
func (s *Stream[T]) Pipeline() *Pipeline { return s.p }

func newStream[T any](p *Pipeline, op string, compute func(bc *batchCtx) (*Batch[T], error)) *Stream[T] {
	p.nodes++
	return &Stream[T]{p: p, name: op + "#" + strconv.Itoa(p.nodes), compute: compute}
}

// mover is what made the partitions of a stream, when they are not the
// source's.
type mover uint8

const (
	inSourceParts mover = iota // the source's partitions
	// movedForGood: by a hash of the keys (PartitionByKey) or by Reduce.
	movedForGood
	// movedByTransform: by Transform's function, which may have kept the
	// source's partitions: Keyed may then say they are (see Keyed).
	movedByTransform
)

// derive returns a stream computed from s, in the partitions of s unless
// the operator says otherwise.
func derive[T, U any](s *Stream[T], op string, compute func(bc *batchCtx) (*Batch[U], error)) *Stream[U] {
	s.consumers++
	out := newStream(s.p, op, compute)
	out.moved, out.placed = s.moved, s.placed
	return out
}

// mustConsume makes Run fail if nothing reads s: its values would be lost.
func (s *Stream[T]) mustConsume() {
	s.p.checks = append(s.p.checks, func() error {
		if s.consumers == 0 {
			return pipelineErr("%s has no consumer: send it to an output (To, ForEachBatch) so that its values are not lost", s.name)
		}
		return nil
	})
}

// batch returns the stream's batch for bc, computing it once per batch. A
// nil batch with a nil error means the stream has no batch this time (a
// window between slides).
func (s *Stream[T]) batch(bc *batchCtx) (*Batch[T], error) {
	if s.memoID == bc.info.ID {
		return s.memo, s.memoErr
	}
	var b *Batch[T]
	err := recovered(func() (err error) {
		b, err = s.compute(bc)
		return err
	})
	if err != nil {
		err = stageErr(s.name, bc.info.ID, err)
		b = nil
	}
	s.memoID, s.memo, s.memoErr = bc.info.ID, b, err
	return b, err
}

// StageError is an error of one stage of a pipeline. Run returns it wrapped;
// use errors.As to inspect it.
type StageError struct {
	Stage string // the stream's name, as set by Named
	Batch int64  // Info.ID of the batch
	Err   error
}

func (e *StageError) Error() string {
	return "batch " + itoa(e.Batch) + ": " + e.Stage + ": " + e.Err.Error()
}

func (e *StageError) Unwrap() error { return e.Err }

func stageErr(stage string, batch int64, err error) error {
	if se := (*StageError)(nil); errors.As(err, &se) {
		return err
	}
	return &StageError{Stage: stage, Batch: batch, Err: err}
}

// PartitionError is an error of one partition of a batch.
type PartitionError struct {
	Partition int32
	Err       error
}

func (e *PartitionError) Error() string {
	return "partition " + strconv.FormatInt(int64(e.Partition), 10) + ": " + e.Err.Error()
}

func (e *PartitionError) Unwrap() error { return e.Err }

// RecordError is an error about one record, naming its origin.
type RecordError struct {
	Origin Origin
	Err    error
}

func (e *RecordError) Error() string { return "record " + e.Origin.String() + ": " + e.Err.Error() }

func (e *RecordError) Unwrap() error { return e.Err }

// KeyError is an error about one key of a keyed operator: the update
// function of UpdateStateByKey, the function of ReduceByKey, or the
// function or inverse of ReduceByKeyAndWindow panicked for it. Key holds
// a value of the operator's key type.
type KeyError struct {
	Key any
	Err error
}

func (e *KeyError) Error() string { return fmt.Sprintf("key %v: %v", e.Key, e.Err) }

func (e *KeyError) Unwrap() error { return e.Err }

// PanicError is a panic in a function given to an operator or an output,
// recovered: the batch fails, and Run returns it, within a *StageError
// (and a *PartitionError when it came from one partition, a *RecordError
// naming the record's origin when it came from the function of an
// element-wise operator (Map, Filter, FlatMap, MapErr, TryMap) for one
// value, and a *KeyError when it came from a keyed operator's function
// for one key: see KeyError), instead of the process
// crashing from a goroutine of the engine. The batch is not committed; the
// state the function was changing is not checkpointed.
//
// A panic in a function Run calls between stages is one too, within an
// error that names what panicked: a Hook ("hook *pkg.T"), OnRebalance, or
// a Codec or StateObserver of the operator named, as its state is
// checkpointed, restored or dropped in a rebalance; or a method of the
// source ("source *pkg.T: Poll", and so for Assignment, Lag, Commit and a
// Runner's Run), of a Flusher ("sink *pkg.T: Flush"), of the Store
// ("store *pkg.T: Checkpoint", Restore) or of the Transaction
// ("transaction *pkg.T: Begin", Commit, Abort). A Sink's Write is an
// output: its panic is within a *StageError. Run commits nothing after
// it.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the stack of the goroutine that panicked
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// Unwrap returns the value panicked with when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// recovered returns what f returns, or a *PanicError if f panics.
func recovered(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return f()
}

// recordPanic, deferred, makes a panic of the function given value at of
// p (-1: none yet) the error it returns, naming the value's record.
func recordPanic[T any](p *Partition[T], at *int, err *error) {
	r := recover()
	if r == nil {
		return
	}
	*err = &PanicError{Value: r, Stack: debug.Stack()}
	if *at >= 0 {
		*err = &RecordError{Origin: p.Origin(*at), Err: *err}
	}
}

// named prefixes err with what panicked when err is a panic recovered
// (see recovered), and returns other errors as they are.
func named(what string, err error) error {
	if pe, ok := err.(*PanicError); ok {
		return fmt.Errorf("%s: %w", what, pe)
	}
	return err
}

// panicIn names the method of v, an implementation of an interface of
// the kind given ("source"), that panicked when err is a panic recovered
// (see recovered), and returns other errors as they are.
func panicIn(kind string, v any, method string, err error) error {
	if pe, ok := err.(*PanicError); ok {
		return fmt.Errorf("%s %T: %s: %w", kind, v, method, pe)
	}
	return err
}

// isPanic reports whether err holds a panic recovered.
func isPanic(err error) bool {
	if err == nil {
		return false
	}
	_, ok := errors.AsType[*PanicError](err)
	return ok
}

// orCause returns the cause of work's end, when it has ended, in place of
// err, which the end may have caused; but a panic, which it did not
// cause, is returned as it is.
func orCause(work context.Context, err error) error {
	if isPanic(err) {
		return err
	}
	return cmp.Or(context.Cause(work), err)
}

// batchCtx is what operators see of the batch being computed.
type batchCtx struct {
	ctx  context.Context
	info Info
	par  int
}

// parallel runs f(i) for i in [0, n) on up to bc.par goroutines and returns
// the first error. Once an error occurs, indexes not yet started are skipped.
func (bc *batchCtx) parallel(n int, fn func(i int) error) error {
	// A panic in a worker goroutine would crash the process: it is the
	// partition's error instead.
	f := func(i int) error { return recovered(func() error { return fn(i) }) }
	workers := min(bc.par, n)
	if workers <= 1 {
		for i := range n {
			if err := f(i); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		next     atomic.Int64
		failed   atomic.Bool
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					failed.Store(true)
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}

// eachPartition runs f on every partition of in, in parallel, and wraps an
// error with the partition's ID.
func eachPartition[T any](bc *batchCtx, in *Batch[T], f func(i int, p *Partition[T]) error) error {
	return bc.parallel(len(in.Partitions), func(i int) error {
		p := &in.Partitions[i]
		if err := recovered(func() error { return f(i, p) }); err != nil {
			var pe *PartitionError
			if errors.As(err, &pe) {
				return err
			}
			return &PartitionError{Partition: p.ID, Err: err}
		}
		return nil
	})
}

// buffers keeps an operator's output slices from one batch to the next, so
// that a pipeline in its steady state allocates nothing per batch.
type buffers[T any] struct {
	parts   []Partition[T]
	origins [][]Origin // owned origin buffers, by partition index
	batch   Batch[T]
	typed   bool // refs is known
	refs    bool // values of T may hold pointers: buffers are cleared for reuse
}

// next returns a batch with n partitions whose value slices are empty but
// keep the capacity of the previous batch's. Origins are nil: an operator
// either shares its input's (read-only) or fills ownOrigins.
func (b *buffers[T]) next(info Info, n int) *Batch[T] {
	if cap(b.parts) < n {
		parts := make([]Partition[T], n)
		copy(parts, b.parts[:cap(b.parts)])
		b.parts = parts
	}
	b.parts = b.parts[:n]
	if !b.typed { // looked at once, not every batch
		b.refs, b.typed = holdsPointers[T](), true
	}
	for i := range b.parts {
		if b.refs {
			clear(b.parts[i].Values) // for the garbage collector
		}
		b.parts[i].Values = b.parts[i].Values[:0]
		b.parts[i].Origins = nil
	}
	if len(b.origins) < n {
		b.origins = append(b.origins, make([][]Origin, n-len(b.origins))...)
	}
	b.batch = Batch[T]{Info: info, Partitions: b.parts}
	return &b.batch
}

// ownOrigins returns the origin buffer of partition i, emptied. Store it
// back with keepOrigins after appending.
func (b *buffers[T]) ownOrigins(i int) []Origin { return b.origins[i][:0] }

func (b *buffers[T]) keepOrigins(i int, o []Origin) {
	b.origins[i] = o
	b.parts[i].Origins = o
}

// holdsPointers reports whether values of T may hold pointers. A reused
// buffer of values that hold none need not be cleared: clearing it only
// lets the garbage collector free what the old values pointed to.
func holdsPointers[T any]() bool { return typeHoldsPointers(reflect.TypeFor[T]()) }

func typeHoldsPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return false
	case reflect.Array:
		return t.Len() > 0 && typeHoldsPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if typeHoldsPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	}
	return true
}

// errNoInput is returned by Run when no source was attached.
var errNoInput = errors.New("stream: pipeline has no source: call From first")

// invalid records err, found as the graph is built, for Run to return at
// start; the first such error is kept.
func (p *Pipeline) invalid(err error) {
	if p.err == nil {
		p.err = err
	}
}

// need records that arg, given to op, is nil, when it is, for Run to
// return at start: a nil function would panic at the first batch.
func (p *Pipeline) need(isNil bool, op, arg string) {
	if isNil {
		p.invalid(fmt.Errorf("stream: %s: %s is nil", op, arg))
	}
}

func pipelineErr(format string, args ...any) error { return fmt.Errorf("stream: "+format, args...) }

func itoa[I int | int32 | int64](i I) string { return strconv.FormatInt(int64(i), 10) }
