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
	// A timeout shorter than the first backoff still has a few attempts.
	first := min(firstRetry, max(r.cfg.timeout/4, time.Millisecond))
	tried, err := retryLoop(ctx, r.cfg.timeout, first, do, nil, func(attempt int, backoff time.Duration, err error) {
		r.cfg.log.Warn("output failed; retrying", "output", r.name, "of", what, "attempt", attempt, "retry_in", backoff, "err", err)
	})
	switch {
	case err == nil && tried.n > 1:
		r.cfg.log.Info("output delivered after retries", "output", r.name, "of", what, "attempts", tried.n)
	case tried.timedOut:
		return fmt.Errorf("%s: %s not delivered in %d attempts over %v (-output-retry %v): %w",
			r.name, what, tried.n, tried.took.Round(time.Millisecond), r.cfg.timeout, err)
	}
	return err
}

// tries is what retryLoop did: its attempts, the time they took, and
// whether it gave up for want of time.
type tries struct {
	n        int
	took     time.Duration
	timedOut bool
}

// retryLoop calls do until it succeeds, ctx is done or final (if not nil)
// tells that its error is the last, waiting first, then twice as long
// each time up to maxRetry, between attempts, for up to timeout. onRetry
// is told of each retry before its wait. It returns do's last error.
func retryLoop(ctx context.Context, timeout, first time.Duration, do func() error, final func(error) bool, onRetry func(attempt int, backoff time.Duration, err error)) (tries, error) {
	start := time.Now()
	backoff := first
	for attempt := 1; ; attempt++ {
		err := do()
		if err == nil || ctx.Err() != nil || final != nil && final(err) {
			return tries{n: attempt, took: time.Since(start)}, err
		}
		if time.Since(start)+backoff > timeout {
			return tries{n: attempt, took: time.Since(start), timedOut: true}, err
		}
		onRetry(attempt, backoff, err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return tries{n: attempt, took: time.Since(start)}, err
		}
		backoff = min(2*backoff, maxRetry)
	}
}
