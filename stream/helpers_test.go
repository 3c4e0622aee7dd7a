package stream_test

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/stream"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scripted yields one chunk of records per batch: after a chunk, Poll waits
// for the batch's deadline. It records commits, and can own partitions.
type scripted[T any] struct {
	chunks [][]stream.Record[T]
	gave   bool

	mu        sync.Mutex
	commits   [][]stream.Offset
	pollCount int
}

func (s *scripted[T]) Poll(ctx context.Context, buf []stream.Record[T]) (int, error) {
	s.mu.Lock()
	s.pollCount++
	s.mu.Unlock()
	if s.gave || len(s.chunks) == 0 {
		if len(s.chunks) == 0 {
			return 0, io.EOF
		}
		s.gave = false
		<-ctx.Done()
		return 0, ctx.Err()
	}
	n := copy(buf, s.chunks[0])
	s.chunks[0] = s.chunks[0][n:]
	if len(s.chunks[0]) == 0 {
		s.chunks = s.chunks[1:]
		s.gave = true
	}
	return n, nil
}

func (s *scripted[T]) Commit(_ context.Context, offsets []stream.Offset) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commits = append(s.commits, slices.Clone(offsets))
	return nil
}

func (s *scripted[T]) Commits() [][]stream.Offset {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.commits)
}

// rec makes a record of partition p at offset off.
func rec[T any](v T, p int32, off int64) stream.Record[T] {
	return stream.Record[T]{Value: v, Origin: stream.Origin{Source: "test", Partition: p, Offset: off}}
}

// collect gathers every batch of a stream.
type collected[T any] struct {
	mu      sync.Mutex
	batches []*stream.Batch[T]
}

func collect[T any](s *stream.Stream[T]) *collected[T] {
	c := &collected[T]{}
	stream.ForEachBatch(s, func(_ context.Context, b *stream.Batch[T]) error {
		cp := &stream.Batch[T]{Info: b.Info}
		for _, p := range b.Partitions {
			cp.Partitions = append(cp.Partitions, stream.Partition[T]{ID: p.ID, Values: slices.Clone(p.Values), Origins: slices.Clone(p.Origins)})
		}
		c.mu.Lock()
		c.batches = append(c.batches, cp)
		c.mu.Unlock()
		return nil
	})
	return c
}

func (c *collected[T]) all() []*stream.Batch[T] {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.batches)
}

func (c *collected[T]) values() [][]T {
	var out [][]T
	for _, b := range c.all() {
		out = append(out, slices.Collect(b.All()))
	}
	return out
}

func run(t *testing.T, p *stream.Pipeline) {
	t.Helper()
	if err := p.Run(context.Background()); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func sorted[T interface{ ~int | ~int64 | ~string }](v []T) []T {
	v = slices.Clone(v)
	slices.Sort(v)
	return v
}

func ints(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}
