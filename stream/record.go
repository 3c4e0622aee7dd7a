package stream

import (
	"iter"
	"strconv"
	"time"
)

// Origin says where a record came from: the source (a Kafka topic, a file
// path), the partition within it, and the offset (a Kafka offset, or the
// 1-based line number of a file). Element-wise operators carry it along, so
// that an error found late in a pipeline can still name its input.
type Origin struct {
	Source    string
	Partition int32
	Offset    int64
}

// String formats o as "source/partition@offset", the form used in errors.
// A zero Origin is "unknown".
func (o Origin) String() string {
	if o == (Origin{}) {
		return "unknown"
	}
	return o.Source + "/" + strconv.FormatInt(int64(o.Partition), 10) + "@" + strconv.FormatInt(o.Offset, 10)
}

// Record is a value with its origin, as a Source hands it to the engine.
type Record[T any] struct {
	Value  T
	Origin Origin
}

// Offset is a position to commit: Next is the offset of the first record of
// Partition in Source that has not been fully processed yet (the last
// processed offset plus one, as Kafka commits it).
type Offset struct {
	Source    string
	Partition int32
	Next      int64
}

// Pair is a key and a value: the element type of keyed streams.
type Pair[K comparable, V any] struct {
	Key   K
	Value V
}

// KV returns the Pair (k, v).
func KV[K comparable, V any](k K, v V) Pair[K, V] { return Pair[K, V]{Key: k, Value: v} }

// Partition is one part of a batch. Partitions of a batch are processed in
// parallel; the records of one partition are processed in order by one
// goroutine.
//
// Origins is either as long as Values, Origins[i] naming where Values[i]
// came from, or shorter (usually empty) when the values were computed from
// many records, as aggregates are.
type Partition[T any] struct {
	ID      int32
	Values  []T
	Origins []Origin
}

// Len returns the number of values in p.
func (p *Partition[T]) Len() int { return len(p.Values) }

// Origin returns the origin of value i, or the zero Origin when p carries
// none for it.
func (p *Partition[T]) Origin(i int) Origin {
	if i >= len(p.Origins) {
		return Origin{}
	}
	return p.Origins[i]
}

// Info describes a batch.
type Info struct {
	// ID numbers batches from 1 within a run.
	ID int64
	// Time is when the batch was cut.
	Time time.Time
	// Start is when the engine began to collect the batch's records.
	Start time.Time
	// Records is the number of records the source delivered for the batch,
	// including those the batch does not hold: of a partition lost before
	// the cut (an Assigner source), or already counted by the state of the
	// partitions the batch gained, restored after they were read. Records
	// a state restored before they were read are not counted (see
	// WithStore).
	Records int
}

// Batch is the data of one stream for one batch interval: its records, split
// into partitions sorted by ID.
//
// A Batch handed to a user function is valid only until that function
// returns: the engine reuses its buffers for the next batch. Copy what must
// outlive the call.
type Batch[T any] struct {
	Info       Info
	Partitions []Partition[T]
}

// Len returns the number of values in all partitions of b.
func (b *Batch[T]) Len() int {
	n := 0
	for i := range b.Partitions {
		n += len(b.Partitions[i].Values)
	}
	return n
}

// All yields every value of b, partition by partition.
func (b *Batch[T]) All() iter.Seq[T] {
	return func(yield func(T) bool) {
		for i := range b.Partitions {
			for _, v := range b.Partitions[i].Values {
				if !yield(v) {
					return
				}
			}
		}
	}
}

// Partition returns the partition with the given ID, or nil.
func (b *Batch[T]) Partition(id int32) *Partition[T] {
	for i := range b.Partitions {
		if b.Partitions[i].ID == id {
			return &b.Partitions[i]
		}
	}
	return nil
}
