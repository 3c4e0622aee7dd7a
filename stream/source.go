package stream

import (
	"context"
	"errors"
)

// ErrCut may be returned by Source.Poll, with or without records, to make
// the engine cut the batch being collected at once instead of waiting for
// its interval or record count: for example when a rebalance takes
// partitions away, so that the engine learns of it (Assigner) without
// delay. The engine does not treat it as a failure.
var ErrCut = errors.New("stream: cut the batch now")

// Source hands records to a Pipeline. It is the only interface an input
// adapter must implement; the optional interfaces below add commits,
// background work and partition ownership.
//
// The engine calls Poll from one goroutine at a time. A panic in a method
// of a Source, or of the optional interfaces below, fails Run with a
// *PanicError naming the method, instead of crashing the process.
type Source[T any] interface {
	// Poll fills buf with up to len(buf) records and returns how many it
	// filled. It blocks until at least one record is available, ctx is done
	// or the source has ended. When ctx is done it returns what it has, with
	// ctx.Err() if that is nothing. A bounded source returns io.EOF (possibly
	// with n > 0) after its last record, and ErrCut to have the batch cut
	// now. Any other error stops the run. A Poll that returns nothing, not
	// even an error, before ctx is done would have the engine spin: after a
	// few in a row, the engine waits a few milliseconds at most between
	// them, and logs a warning once.
	//
	// Records of one partition must come in offset order, and their
	// offsets must name the same records from one run to the next for a
	// Store to skip what its restored state counted (see WithStore). The
	// values handed out are the engine's from then on: a Window, a state
	// or an output may keep them past the batch, so a source must not
	// change what they point to later (a read buffer it reuses).
	Poll(ctx context.Context, buf []Record[T]) (n int, err error)
}

// Committer is implemented by sources that record progress, such as a Kafka
// consumer group. The engine calls Commit after every output of a batch has
// returned without error, with the next offset of every source partition
// the batch held records of. A Commit error stops the run.
type Committer interface {
	Commit(ctx context.Context, offsets []Offset) error
}

// Runner is implemented by sources that need background work, such as a
// consumer group session. The engine calls Run once, in its own goroutine,
// before the first Poll; it cancels ctx when the pipeline stops and waits for
// Run to return. An error from Run stops the pipeline, and so does a
// panic, recovered on Run's goroutine: the pipeline's Run returns it (a
// *PanicError), even when it came as the pipeline stopped, and commits
// nothing after it, not even the batch it came during.
type Runner interface {
	Run(ctx context.Context) error
}

// Assigner is implemented by sources whose partitions change while they run,
// such as a Kafka consumer group during a rebalance. The engine calls
// Assignment between batches. When the set changes, stateful operators drop
// the state of lost partitions, windows their batches (see Window), and
// OnRebalance hooks run before the next batch; every batch holds a
// (possibly empty) partition for each assigned ID.
// A partition lost and given back between two calls, whose records the
// source reads again from its last commit, must be left out of one
// Assignment (as the Kafka source does), so that the engine sees it lost:
// otherwise the state and pending offsets from before are kept, and the
// records read again are counted twice.
type Assigner interface {
	// Assignment returns the partition IDs the source owns now, in any order.
	Assignment() []int32
}

// Lagger is implemented by sources that know how far behind the pipeline
// is, such as a Kafka consumer group (the consumer lag). The engine calls
// Lag after each batch's commit, for BatchStats.
type Lagger interface {
	// Lag returns how many records of the partition are left to read after
	// the last commit, as far as the source knows; ok is false when it
	// does not know. It must be safe to call while Poll runs.
	Lag(partition int32) (n int64, ok bool)
}

// SourceWideOffsets is implemented by sources whose records' offsets count
// across all of their partitions, in the order they are read, rather than
// within each partition: the line numbers of a file spread over partitions
// in turn. A restored state then skips every record of the source below
// the highest offset saved for it, whatever partition it was saved under,
// so that such a source may spread its records over another number of
// partitions from one run to the next.
type SourceWideOffsets interface {
	SourceWideOffsets() bool
}

// Sink receives the values of a stream, one batch at a time.
//
// Write returns when the batch's values are delivered (acknowledged by a
// broker, flushed to a file) or with an error, which stops the run before
// the batch is committed. The engine calls Write from one goroutine at a
// time. The batch is valid only until Write returns. A panic in Write, or
// in Flush (Flusher), fails Run with a *PanicError.
type Sink[T any] interface {
	Write(ctx context.Context, b *Batch[T]) error
}

// Flusher is implemented by a Sink whose Write may return before the batch
// is stored, such as a Kafka sink that does not wait for the brokers'
// acknowledgements. Flush returns when everything written before it is
// stored, or with the error of what could not be. The engine calls Flush
// on every such sink of the pipeline before it checkpoints and commits,
// so that no batch is committed before its output is stored; with
// CommitInterval, the outputs of the batches in between are stored while
// the engine goes on.
type Flusher interface {
	Flush(ctx context.Context) error
}
