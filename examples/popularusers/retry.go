package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/stream"
)

// retryConfig is how long an output keeps retrying a batch it fails to
// write before the run fails.
type retryConfig struct {
	timeout time.Duration // 0: no retry
	log     *slog.Logger
}

// Backoff between attempts of a failed output.
const (
	firstRetry = 100 * time.Millisecond
	maxRetry   = 5 * time.Second
)

// retrying returns s, writing a batch again with a growing backoff while
// it fails, for up to cfg.timeout: a broker that is briefly gone, or a
// topic that is being created, does not stop the run. The batch is not
// committed until the write, and the flush of an asynchronous sink,
// succeed. A retried Kafka write may deliver some messages twice (at
// least once).
func retrying[T any](s stream.Sink[T], name string, cfg retryConfig) stream.Sink[T] {
	if cfg.timeout <= 0 || s == nil {
		return s
	}
	return &retrySink[T]{sink: s, name: name, cfg: cfg}
}

type retrySink[T any] struct {
	sink stream.Sink[T]
	name string
	cfg  retryConfig
}

func (r *retrySink[T]) Write(ctx context.Context, b *stream.Batch[T]) error {
	return r.retry(ctx, "batch "+strconv.FormatInt(b.Info.ID, 10), func() error { return r.sink.Write(ctx, b) })
}

// Flush implements stream.Flusher, for a sink that is one: a Kafka sink
// delivers the messages of its writes after they return, and sends those
// that failed again on the next Flush, so a Flush is retried as a Write
// is.
func (r *retrySink[T]) Flush(ctx context.Context) error {
	f, ok := r.sink.(stream.Flusher)
	if !ok {
		return nil
	}
	return r.retry(ctx, "flush", func() error { return f.Flush(ctx) })
}

// retry calls do, with a growing backoff while it fails, for up to
// cfg.timeout; what names what is being done.
func (r *retrySink[T]) retry(ctx context.Context, what string, do func() error) error {
	start := time.Now()
	// A timeout shorter than the first backoff still has a few attempts.
	backoff := min(firstRetry, max(r.cfg.timeout/4, time.Millisecond))
	for attempt := 1; ; attempt++ {
		err := do()
		if err == nil {
			if attempt > 1 {
				r.cfg.log.Info("output delivered after retries", "output", r.name, "of", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if time.Since(start)+backoff > r.cfg.timeout {
			return fmt.Errorf("%s: %s not delivered in %d attempts over %v (-output-retry %v): %w",
				r.name, what, attempt, time.Since(start).Round(time.Millisecond), r.cfg.timeout, err)
		}
		r.cfg.log.Warn("output failed; retrying", "output", r.name, "of", what, "attempt", attempt, "retry_in", backoff, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return err
		}
		backoff = min(2*backoff, maxRetry)
	}
}
