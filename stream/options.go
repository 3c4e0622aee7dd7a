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

	store           Store
	checkpointEvery int
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

// Parallelism sets how many goroutines process the partitions of a batch
// and how many partitions a key shuffle creates (default GOMAXPROCS).
func Parallelism(n int) Option { return optionFunc(func(c *config) { c.parallelism = n }) }

// DrainTimeout bounds how long the batch in progress may take to finish
// after Run's context is cancelled (default DefaultDrainTimeout). When it
// passes, the batch is abandoned uncommitted and Run returns an error.
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
// processed. An error stops the run.
func OnRebalance(f func(ctx context.Context, lost, gained []int32) error) Option {
	return optionFunc(func(c *config) { c.onRebalance = append(c.onRebalance, f) })
}

// Hook observes a pipeline's batches, for metrics and logs. Hooks are
// called from the run loop's goroutine and must not block.
type Hook interface {
	// BatchDone is called after a batch was committed.
	BatchDone(s BatchStats)
}

// WithHook adds a Hook.
func WithHook(h Hook) Option { return optionFunc(func(c *config) { c.hooks = append(c.hooks, h) }) }

// BatchStats describes a finished batch.
type BatchStats struct {
	Info Info
	// Scheduled is the grid point at which the batch was due to be cut; Cut
	// minus Scheduled is the scheduling delay.
	Scheduled time.Time
	// Processing is the time from the cut to the end of the commit.
	Processing time.Duration
	// Partitions is the number of input partitions of the batch.
	Partitions int
}
