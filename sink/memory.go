package sink

import (
	"context"
	"slices"
	"sync"

	"github.com/sluicehq/sluice/stream"
)

// Memory keeps every value written to it, batch by batch: a sink for tests.
// It is safe for concurrent use.
type Memory[T any] struct {
	mu      sync.Mutex
	batches []Written[T]
}

// Written is one batch as a Memory sink received it.
type Written[T any] struct {
	Info   stream.Info
	Values []T
}

var _ stream.Sink[int] = (*Memory[int])(nil)

// NewMemory returns an empty Memory sink.
func NewMemory[T any]() *Memory[T] { return &Memory[T]{} }

// Write implements stream.Sink: it copies the batch's values, partition by
// partition.
func (m *Memory[T]) Write(_ context.Context, b *stream.Batch[T]) error {
	w := Written[T]{Info: b.Info, Values: make([]T, 0, b.Len())}
	for v := range b.All() {
		w.Values = append(w.Values, v)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches = append(m.batches, w)
	return nil
}

// Batches returns the batches written so far.
func (m *Memory[T]) Batches() []Written[T] {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.batches)
}

// Values returns every value written so far, in order.
func (m *Memory[T]) Values() []T {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []T
	for _, b := range m.batches {
		out = append(out, b.Values...)
	}
	return out
}

// Last returns the values of the last batch written, or nil.
func (m *Memory[T]) Last() []T {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.batches) == 0 {
		return nil
	}
	return m.batches[len(m.batches)-1].Values
}
