package stream

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"time"
)

// Defaults of a Pipeline.
const (
	DefaultInterval     = time.Second
	DefaultMaxRecords   = 100_000
	DefaultDrainTimeout = 30 * time.Second
)

type config struct {
	interval     time.Duration
	maxRecords   int
	parallelism  int
	drainTimeout time.Duration
	logger       *slog.Logger
	onRebalance  []func(ctx context.Context, lost, gained []int32) error
	hooks        []Hook
	nilOption    string // the first option given nil where it needs a value, for Run to fail at start

	store           Store
	checkpointEvery int
	commitInterval  time.Duration
	txn             Transaction
}

func defaultConfig() config {
	return config{
		interval:     DefaultInterval,
		maxRecords:   DefaultMaxRecords,
		parallelism:  runtime.GOMAXPROCS(0),
		drainTimeout: DefaultDrainTimeout,
		logger:       slog.New(slog.DiscardHandler),

		checkpointEvery: 1,
	}
}

func (c *config) validate() error {
	switch {
	case c.interval < 0:
		return fmt.Errorf("stream: interval %v is negative", c.interval)
	case c.interval == 0 && c.maxRecords == 0:
		return fmt.Errorf("stream: interval and max records are both 0: batches would never be cut")
	case c.maxRecords < 0:
		return fmt.Errorf("stream: max records %d is negative", c.maxRecords)
	case c.parallelism < 1:
		return fmt.Errorf("stream: parallelism %d is less than 1", c.parallelism)
	case c.drainTimeout < 0:
		return fmt.Errorf("stream: drain timeout %v is negative", c.drainTimeout)
	case c.checkpointEvery < 1:
		return fmt.Errorf("stream: checkpoint every %d batches: need at least 1", c.checkpointEvery)
	case c.txn != nil && c.checkpointEvery != 1:
		return fmt.Errorf("stream: checkpoint every %d batches with a transaction: a transaction checkpoints every batch", c.checkpointEvery)
	case c.commitInterval < 0:
		return fmt.Errorf("stream: commit interval %v is negative", c.commitInterval)
	case c.txn != nil && c.commitInterval != 0:
		return fmt.Errorf("stream: commit interval %v with a transaction: a transaction commits every batch", c.commitInterval)
	}
	return nil
}

// Option configures a Pipeline.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// Interval sets how long the engine collects records before it cuts a batch
// (default DefaultInterval). Batches are cut on a fixed grid of intervals
// from the start of Run; when processing a batch overruns, the grid points
// already passed are skipped. 0 cuts batches on MaxRecords alone.
func Interval(d time.Duration) Option { return optionFunc(func(c *config) { c.interval = d }) }

// MaxRecords cuts a batch as soon as it holds n records, before its interval
// is over (default DefaultMaxRecords). It bounds the memory of a batch when a
// source has a backlog, and makes batches of file input deterministic. 0
// means no limit.
func MaxRecords(n int) Option { return optionFunc(func(c *config) { c.maxRecords = n }) }

// CommitInterval makes the engine commit at most once per d: a batch that
// ends less than d after the last commit is not committed (nor
// checkpointed, nor its Flusher sinks flushed), and its offsets are
// committed with a later batch's. When batches are cut every Interval and
// d is shorter, every batch is still committed; when they run back to
// back, as when a pipeline catches up on a backlog, committing each one
// would cost more than it saves. Default 0: every batch.
//
// The guarantee stays at least once: offsets are committed only after the
// output of every batch before them is stored (see Flusher). What it costs
// is the work redone after a crash: up to d of batches are read and
// written again instead of one. A batch is committed whatever d says when
// the input ends, Run is cancelled, or the source cut it short (a Kafka
// source does when it is losing partitions, so that their offsets are
// committed before they go). With a Store, CheckpointEvery also applies;
// with a Transaction, CommitInterval must be 0.
func CommitInterval(d time.Duration) Option {
	return optionFunc(func(c *config) { c.commitInterval = d })
}

// Parallelism sets how many goroutines process the partitions of a batch
// and how many partitions a key shuffle creates (default GOMAXPROCS); n
// must be at least 1.
func Parallelism(n int) Option { return optionFunc(func(c *config) { c.parallelism = n }) }

// DrainTimeout bounds how long the batch in progress may take to finish
// after Run's context is cancelled (default DefaultDrainTimeout). When it
// passes, the context the batch's outputs, flushes and commit are given is
// cancelled: the batch is abandoned uncommitted and Run returns an error;
// with a Transaction, after at most a second more for its end to go out
// (see Transaction). An output or a Committer that ignores its context
// holds Run until it returns, and a batch that still commits ends the run
// without an error. 0 means no bound: the batch is always finished.
func DrainTimeout(d time.Duration) Option { return optionFunc(func(c *config) { c.drainTimeout = d }) }

// Logger sets the logger of the engine (default: discard).
func Logger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l != nil {
			c.logger = l
		}
	})
}

// OnRebalance adds a function that runs between batches when an Assigner
// source has lost or gained partitions, after stateful operators have
// dropped the state of lost partitions and before the next batch is
// processed. An error stops the run, and so does a panic (a *PanicError).
// A nil f makes Run fail at start.
func OnRebalance(f func(ctx context.Context, lost, gained []int32) error) Option {
	return optionFunc(func(c *config) {
		if f == nil {
			c.nilled("OnRebalance")
			return
		}
		c.onRebalance = append(c.onRebalance, f)
	})
}

// nilled records that option was given nil, unless one was before: Run
// then fails at start, rather than at the first call.
func (c *config) nilled(option string) {
	if c.nilOption == "" {
		c.nilOption = option
	}
}

// Hook observes a pipeline's batches, for metrics and logs. Hooks are
// called from the run loop's goroutine, in the order they were added, and
// must not block: a slow hook delays the next batch. A hook that panics
// stops the run with a *PanicError.
//
// A Hook may also implement RestoreHook, to follow the restore of durable
// state. Package stream/prom exports what hooks see as Prometheus metrics.
type Hook interface {
	// BatchDone is called after every batch, once its outputs have run
	// and, when the batch was made durable, its state checkpointed and its
	// offsets committed (BatchStats.Checkpoint and Commit are 0 when
	// CommitInterval left that to a later batch). The last commit as Run
	// ends, of what such batches read, is not a batch: BatchDone does not
	// see it, a FinalCommitHook does.
	BatchDone(s BatchStats)
}

// FinalCommitHook is implemented by Hooks that follow the commit with
// which Run ends: that of what the batches CommitInterval held back read,
// and of their state, made after the last batch's BatchDone, when the
// source ends or Run is cancelled. FinalCommit is called once it is done,
// on the run loop's goroutine; not when there was nothing held back, nor
// when the commit failed (Run returns the error).
type FinalCommitHook interface {
	FinalCommit(s CommitStats)
}

// RestoreHook is implemented by Hooks that follow the restore of durable
// state (see WithStore): RestoreProgress is called about once a second
// while a restore runs, and once when it ends, with Done set; but not at
// the end of a restore its own panic ended (the panic fails Run, once).
type RestoreHook interface {
	RestoreProgress(s RestoreStats)
}

// WithHook adds a Hook. A nil Hook makes Run fail at start.
func WithHook(h Hook) Option {
	return optionFunc(func(c *config) {
		if h == nil {
			c.nilled("WithHook")
			return
		}
		c.hooks = append(c.hooks, h)
	})
}

// BatchStats describes a finished batch. Its slices belong to the hook
// call: copy what must outlive it.
type BatchStats struct {
	Info Info
	// Scheduled is the grid point at which the batch was due to be cut
	// (see Interval); with no interval, the cut itself.
	Scheduled time.Time
	// Processing is the time from the cut to the end of the commit.
	Processing time.Duration
	// Partitions is the number of source partitions the batch held records
	// of (Inputs also lists the assigned partitions without any).
	Partitions int
	// Inputs are the source partitions the batch held records of, and, with
	// an Assigner source, every assigned partition, sorted.
	Inputs []PartitionStats
	// Outputs are the outputs of the pipeline (ForEachBatch,
	// ForEachPartition, To), in the order they ran.
	Outputs []OutputStats
	// Checkpoint is the time the Store took to checkpoint the batch; 0
	// without a Store or when the batch was not checkpointed.
	Checkpoint time.Duration
	// Commit is the time the source took to commit the batch; 0 when the
	// source is not a Committer or the batch was not committed.
	Commit time.Duration
	// Flush is the time the Flusher sinks took to store what was written
	// to them before the batch was committed; 0 when there are none or the
	// batch was not committed.
	Flush time.Duration
	// State is the size of every stateful operator's state after the
	// batch: of each UpdateStateByKey, then of each window (see
	// StateStats).
	State []StateStats
}

// CommitStats describes the commit with which Run ends (see
// FinalCommitHook). Its slices belong to the hook call: copy what must
// outlive it.
type CommitStats struct {
	// Batch is the last batch, which the commit completes.
	Batch Info
	// Inputs are the source partitions the commit holds offsets of, and,
	// with an Assigner source, every assigned partition, sorted, with
	// their Lag after the commit; Records is 0.
	Inputs []PartitionStats
	// Checkpoint, Commit and Flush are as in BatchStats.
	Checkpoint time.Duration
	Commit     time.Duration
	Flush      time.Duration
	// State is the size of every stateful operator's state, as in
	// BatchStats, once the partitions an Assigner source lost since the
	// last batch were dropped.
	State []StateStats
}

// SchedulingDelay is how late the batch was cut: the cut minus Scheduled.
// It is above zero when the previous batch overran the interval or the
// source was slow to return. Spark's streaming UI calls it the same.
func (s BatchStats) SchedulingDelay() time.Duration {
	return max(0, s.Info.Time.Sub(s.Scheduled))
}

// PartitionStats describes one source partition in a batch.
type PartitionStats struct {
	Source    string
	Partition int32
	// Records is how many records of the partition the batch holds.
	Records int
	// Skipped is how many records of the partition were read and dropped
	// as a restored state had already counted them (see WithStore), since
	// the batch before: an interval that read only those is no batch.
	Skipped int
	// Lag is how many records of the partition were left to read after the
	// batch's commit, as the source last knew it (see Lagger); -1 when the
	// source does not tell.
	Lag int64
}

// OutputStats describes one output's work on a batch.
type OutputStats struct {
	// Name is the output's stage name: what it does and the name of the
	// stream it consumes, such as "to(popular)" (see Stream.Named).
	Name string
	// Duration is the time the output took: for To, the sink's Write,
	// such as a Kafka producer's send and acknowledgement, or, for a sink
	// that stores asynchronously (a Flusher), its hand-off alone: the
	// wait for the acknowledgements is in BatchStats.Flush.
	Duration time.Duration
}

// StateStats is the size of one stateful operator's state: the keys of
// an UpdateStateByKey, or the values of the batches a window (Window,
// ReduceByKeyAndWindow) keeps for its next windows.
type StateStats struct {
	Name string // the operator's stage name
	// Keys is how many keys an UpdateStateByKey holds, or how many values
	// a window holds: for ReduceByKeyAndWindow, a result by key of each
	// batch.
	Keys int
	// Bytes estimates the memory the state holds: an UpdateStateByKey's
	// keys, states and index, a window's values; not what they point to
	// (the bytes of a string key, say), nor the running results by key of
	// a ReduceByKeyAndWindow with an inverse.
	Bytes int64
}

// RestoreStats describes the restore of durable state in progress.
type RestoreStats struct {
	// Partitions are those being restored; nil: all.
	Partitions []int32
	// Entries is how many entries were read so far.
	Entries int64
	Elapsed time.Duration
	// Done says the restore has ended (Err tells how).
	Done bool
	Err  error
}
