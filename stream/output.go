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
	s.p.need(f == nil, "ForEachBatch", "f")
	addOutput(s, "forEachBatch", f)
}

// addOutput registers f as an output of s, and returns it.
func addOutput[T any](s *Stream[T], op string, f func(ctx context.Context, b *Batch[T]) error) *output {
	s.consumers++
	s.p.nodes++
	o := &output{op: op, streamName: func() string { return s.name }}
	o.run = func(bc *batchCtx) error {
		b, err := s.batch(bc)
		if b == nil || err != nil {
			return err
		}
		if err := recovered(func() error { return f(bc.ctx, b) }); err != nil {
			return stageErr(o.name, bc.info.ID, err)
		}
		return nil
	}
	s.p.outputs = append(s.p.outputs, o)
	return o
}

// ForEachPartition runs f on every partition of every batch of s, in
// parallel, as Spark's foreachPartition: each partition writes its own
// share of the output. f must be safe for concurrent use.
func ForEachPartition[T any](s *Stream[T], f func(ctx context.Context, info Info, p *Partition[T]) error) {
	s.p.need(f == nil, "ForEachPartition", "f")
	var bc batchCtx
	addOutput(s, "forEachPartition", func(ctx context.Context, b *Batch[T]) error {
		bc = batchCtx{ctx: ctx, info: b.Info, par: s.p.cfg.parallelism}
		return eachPartition(&bc, b, func(_ int, p *Partition[T]) error {
			return f(ctx, b.Info, p)
		})
	})
}

// To writes every batch of s to sink. The batch is committed only after
// Write returns without error, and, when sink is a Flusher, after its
// Flush did.
func To[T any](s *Stream[T], sink Sink[T]) {
	if sink == nil {
		s.p.need(true, "To", "sink")
		return
	}
	o := addOutput(s, "to", sink.Write)
	if f, ok := sink.(Flusher); ok {
		s.p.flushers = append(s.p.flushers, flusher{out: o, f: f})
	}
}

type flusher struct {
	out *output // the output of the sink
	f   Flusher
}

// nameOutputs names every output after what it does and the stream it
// consumes, "to(popular)", so that metrics read well and stay the same
// from run to run; a second output of the same kind on the stream gets
// "#2", and so on. It runs as Run starts, so that a stream named after
// an output was added to it names the output too.
func (p *Pipeline) nameOutputs() {
	taken := make(map[string]bool, len(p.outputs))
	for _, o := range p.outputs {
		base := o.op + "(" + o.streamName() + ")"
		name := base
		for n := 2; taken[name]; n++ {
			name = base + "#" + itoa(n)
		}
		taken[name] = true
		o.name = name
	}
}
