package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
)

// CountGroup reads topic with a bare sarama consumer group that only
// counts records, until it has counted want, and returns the time from the
// call to the last record: the most a sarama consumer can do, for
// benchmarks to measure against. cfg should start at the oldest offset and
// not commit.
func CountGroup(ctx context.Context, brokers []string, topic, group string, cfg *sarama.Config, want int64) (time.Duration, error) {
	return CountGroupFunc(ctx, brokers, topic, group, cfg, want, nil)
}

// CountGroupFunc is CountGroup, calling last, if not nil, as the last
// record is counted, on the goroutine that counts it: a benchmark can read
// what else it measures (the process's CPU time) when the clock stops,
// not after the group is left.
func CountGroupFunc(ctx context.Context, brokers []string, topic, group string, cfg *sarama.Config, want int64, last func()) (time.Duration, error) {
	start := time.Now()
	g, err := sarama.NewConsumerGroup(brokers, group, cfg)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var took time.Duration
	h := &countHandler{want: want, done: func() {
		took = time.Since(start)
		if last != nil {
			last()
		}
		cancel()
	}}
	for ctx.Err() == nil {
		if err := g.Consume(ctx, []string{topic}, h); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
			g.Close()
			return 0, err
		}
	}
	if err := g.Close(); err != nil {
		return 0, err
	}
	if n := h.n.Load(); n < want {
		return 0, fmt.Errorf("counted %d of %d records: %w", n, want, ctx.Err())
	}
	return took, nil
}

// countHandler counts records in ConsumeClaim and calls done after want.
type countHandler struct {
	n    atomic.Int64
	want int64
	done func()
}

func (h *countHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *countHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *countHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case _, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if h.n.Add(1) == h.want {
				h.done()
			}
		case <-sess.Context().Done():
			return nil
		}
	}
}
