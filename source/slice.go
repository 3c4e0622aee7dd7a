package source

import (
	"context"
	"io"
	"slices"
	"sync"

	"github.com/sluicehq/sluice/stream"
)

// Slice is a source of values held in memory, for tests and examples. It
// spreads the values over its partitions in turn (value i goes to partition
// i mod n, at offset i div n) and ends with io.EOF after the last one. It
// records what the engine commits.
//
// Slice is safe for concurrent use.
type Slice[T any] struct {
	name   string
	values []T
	parts  int

	mu        sync.Mutex
	next      int
	committed map[int32]int64
}

var (
	_ stream.Source[int] = (*Slice[int])(nil)
	_ stream.Committer   = (*Slice[int])(nil)
)

// NewSlice returns a source named name that yields values over partitions
// partitions (at least 1). It does not copy values.
func NewSlice[T any](name string, values []T, partitions int) *Slice[T] {
	return &Slice[T]{name: name, values: values, parts: max(partitions, 1), committed: map[int32]int64{}}
}

// Poll implements stream.Source.
func (s *Slice[T]) Poll(ctx context.Context, buf []stream.Record[T]) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for n < len(buf) && s.next < len(s.values) {
		i := s.next
		buf[n] = stream.Record[T]{Value: s.values[i], Origin: stream.Origin{
			Source: s.name, Partition: int32(i % s.parts), Offset: int64(i / s.parts),
		}}
		n++
		s.next++
	}
	if s.next == len(s.values) {
		return n, io.EOF
	}
	return n, nil
}

// Commit implements stream.Committer: it records the offsets.
func (s *Slice[T]) Commit(_ context.Context, offsets []stream.Offset) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range offsets {
		s.committed[o.Partition] = max(s.committed[o.Partition], o.Next)
	}
	return nil
}

// Committed returns the next offset committed for each partition, as
// partition-offset pairs sorted by partition.
func (s *Slice[T]) Committed() []stream.Offset {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]stream.Offset, 0, len(s.committed))
	for p, next := range s.committed {
		out = append(out, stream.Offset{Source: s.name, Partition: p, Next: next})
	}
	slices.SortFunc(out, func(a, b stream.Offset) int { return int(a.Partition - b.Partition) })
	return out
}
