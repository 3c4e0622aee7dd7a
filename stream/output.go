package stream

import "context"

// ForEachBatch runs f on every batch of s, on the run loop's goroutine:
// the place for side effects that need the whole batch. Outputs run in the
// order they were added, after which the batch is committed. An error stops
// the run before the commit.
//
// ctx is cancelled only when the run must be abandoned (a source failure,
// or the drain timeout after cancellation), not when Run's context is
// cancelled: the batch in progress is finished first.
func ForEachBatch[T any](s *Stream[T], f func(ctx context.Context, b *Batch[T]) error) {
	s.consumers++
	name := "forEachBatch#" + itoa(s.p.nodes+1)
	s.p.nodes++
	s.p.outputs = append(s.p.outputs, output{name: name, run: func(bc *batchCtx) error {
		b, err := s.batch(bc)
		if b == nil || err != nil {
			return err
		}
		if err := f(bc.ctx, b); err != nil {
			return stageErr(name, bc.info.ID, err)
		}
		return nil
	}})
}

// ForEachPartition runs f on every partition of every batch of s, in
// parallel, as Spark's foreachPartition: each partition writes its own
// share of the output. f must be safe for concurrent use.
func ForEachPartition[T any](s *Stream[T], f func(ctx context.Context, info Info, p *Partition[T]) error) {
	s.consumers++
	name := "forEachPartition#" + itoa(s.p.nodes+1)
	s.p.nodes++
	s.p.outputs = append(s.p.outputs, output{name: name, run: func(bc *batchCtx) error {
		b, err := s.batch(bc)
		if b == nil || err != nil {
			return err
		}
		err = eachPartition(bc, b, func(_ int, p *Partition[T]) error {
			return f(bc.ctx, b.Info, p)
		})
		if err != nil {
			return stageErr(name, bc.info.ID, err)
		}
		return nil
	}})
}

// To writes every batch of s to sink. The batch is committed only after
// Write returns without error.
func To[T any](s *Stream[T], sink Sink[T]) {
	ForEachBatch(s, sink.Write)
}
