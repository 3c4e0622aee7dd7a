package main

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream"
)

// failingSink fails its first fails writes.
type failingSink struct{ fails, writes int }

func (s *failingSink) Write(context.Context, *stream.Batch[int]) error {
	s.writes++
	if s.writes <= s.fails {
		return errors.New("broker gone")
	}
	return nil
}

// An -output-retry shorter than the first backoff still retries, within
// it, instead of giving up after one attempt.
func TestOutputRetryShorterThanTheFirstBackoff(t *testing.T) {
	for _, timeout := range []time.Duration{40 * time.Millisecond, time.Second} {
		s := &failingSink{fails: 1}
		r := retrying[int](s, "out", retryConfig{timeout: timeout, log: slog.New(slog.DiscardHandler)})
		require.NoError(t, r.Write(context.Background(), &stream.Batch[int]{}), "-output-retry %v", timeout)
		assert.Equal(t, 2, s.writes)
	}
	s := &failingSink{fails: 1000}
	r := retrying[int](s, "out", retryConfig{timeout: 40 * time.Millisecond, log: slog.New(slog.DiscardHandler)})
	assert.ErrorContains(t, r.Write(context.Background(), &stream.Batch[int]{}), "not delivered")
	assert.Greater(t, s.writes, 1)
}
