package stream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Pipeline runs a graph of streams: it cuts batches from its source, computes
// every output of each batch, then commits the batch to the source.
//
// Build the graph with From, the operators and the outputs, then call Run
// once. A Pipeline is not safe for concurrent use while it is being built.
type Pipeline struct {
	cfg      config
	nodes    int
	input    input
	outputs  []*output
	flushers []flusher // the outputs' sinks that are Flushers
	stateful []stateful
	// windows hold batches: they drop what they hold of partitions an
	// Assigner source lost, keep it in the Store and count in
	// BatchStats.State as stateful operators do.
	windows []stateful
	// held are the stateful operators, then the windows: those that keep
	// state in the Store (see stores).
	held []stateful
	// movedWindows are the windows of partitions that are not the
	// source's, which an Assigner source makes Run refuse.
	movedWindows []movedWindow
	checks       []func() error // run before the first batch
	running      atomic.Bool
	err          error // a construction error, returned by Run
}

// stateful is an operator with state: told when partitions are lost, and
// checkpointed to and restored from the pipeline's Store.
type stateful interface {
	name() string
	// dropPartitions drops the state of partitions ids; an error is a
	// panic of a StateObserver told of it.
	dropPartitions(ids []int32) error
	setDurable() error
	size() StateStats
	changes(dst []Entry, batch int64) ([]Entry, error)
	// restore puts an entry into the state, restored by the given batch.
	restore(e Entry, parallelism int, batch int64) error
	// restored ends a restore, once the Store has given every entry.
	restored() error
	// hashed reports that the state's partitions are those of a hash of
	// the keys (PartitionByKey) or of Reduce, not the source's.
	hashed() bool
}

// movedWindow is a window of partitions that are not the source's.
type movedWindow struct {
	op   string        // the operator: "Window", "ReduceByKeyAndWindow"
	name func() string // of its output, named by Named
}

// addWindow registers a window made by op. Its partitions may not be the
// source's (moved): it could not drop a lost partition's values, and Run
// refuses it under an Assigner source.
func (p *Pipeline) addWindow(op string, moved bool, w stateful) {
	if moved {
		p.movedWindows = append(p.movedWindows, movedWindow{op: op, name: w.name})
	}
	p.windows = append(p.windows, w)
}

// stores returns the operators that keep state in the Store: the stateful
// ones, then the windows. They are listed as Run starts (validate): the
// graph is built by then, and a run lists them at every batch.
func (p *Pipeline) stores() []stateful { return p.held }

// assigned reports that the source is an Assigner: its partitions move.
func (p *Pipeline) assigned() bool {
	if p.input == nil {
		return false
	}
	_, ok := p.input.source().(Assigner)
	return ok
}

// output is a registered output operation.
type output struct {
	name       string        // set as Run starts (see nameOutputs)
	op         string        // "to", "forEachBatch", ...
	streamName func() string // of the stream it consumes, named by Named
	run        func(bc *batchCtx) error
}

// input is the type-erased input stream of a pipeline.
type input interface {
	source() any
	// begin starts the next batch, which collect adds to until it is cut.
	begin()
	// collect polls the source into the batch begun until it holds max
	// records (0: no limit), ctx is done or Poll fails. It drops the
	// records a restored state had counted as they come: they are counted
	// in skipped, not in n nor toward max, but their offsets are
	// committed with the batch.
	collect(ctx context.Context, max int) (n, skipped int, err error)
	// cut ends the batch being collected and returns its offsets to commit,
	// with the records of each.
	cut(info Info, assigned []int32, filter bool) (offsets []Offset, counts []recordCount)
	// skipBelow drops records below these offsets from now on: a restored
	// state has counted them.
	skipBelow(offsets []Offset)
	// endedBelow returns an error when the source, which has ended, did
	// not reach the offsets a restored state had counted up to.
	endedBelow() error
	// logSkipped logs, once per source partition, how many records were
	// dropped as a restored state had counted them: of those read past
	// the restored offsets, or, with all, of every one.
	logSkipped(all bool)
	// forget drops the restored offsets of partitions lost, and what was
	// read of them: their state went, and comes back with its offsets
	// when they are gained again.
	forget(lost []int32)
}

// NewPipeline returns a Pipeline configured by opts.
func NewPipeline(opts ...Option) *Pipeline {
	p := &Pipeline{cfg: defaultConfig()}
	for _, o := range opts {
		o.apply(&p.cfg)
	}
	if p.cfg.nilOption != "" {
		p.invalid(fmt.Errorf("stream: %s: nil", p.cfg.nilOption))
	}
	return p
}

// From attaches src to p and returns its stream of records. A pipeline has
// one source; calling From twice makes Run fail.
//
// The batch's partitions are the source's: a record goes to the partition
// named by its Origin.Partition.
func From[T any](p *Pipeline, src Source[T]) *Stream[T] {
	p.need(src == nil, "From", "src")
	in := &inputStream[T]{src: src, logger: p.cfg.logger}
	if w, ok := src.(SourceWideOffsets); ok {
		in.wide = w.SourceWideOffsets()
	}
	s := newStream(p, "source", func(bc *batchCtx) (*Batch[T], error) {
		return &in.batch, nil
	})
	if p.input != nil {
		p.invalid(errors.New("stream: pipeline has two sources; a pipeline reads one"))
	}
	p.input = in
	return s
}

// Run processes batches until the source ends, ctx is cancelled, or an
// error occurs. It blocks, and returns only after every goroutine it started
// has ended.
//
// When ctx is cancelled, the batch being collected is cut at once, processed,
// output and committed, and Run returns nil; while the state is restored
// from the Store at the start, the restore ends and Run returns nil, with
// nothing committed. So does the restore of the partitions an Assigner
// source gained, the first batch's included: the batch is then dropped,
// uncommitted, and what earlier batches read is committed (see
// CommitInterval). When the source ends (io.EOF),
// Run processes the last batch and returns nil. Otherwise it returns the
// first error of the source, of a stage (a *StageError), of an output or of
// the commit; the failed batch is not committed. A panic in a function
// given to an operator or an output is such an error (a *PanicError, its
// stack logged), not a crash; so is one in a function given to the
// pipeline that Run calls between stages: a Hook, OnRebalance, a state's
// Codec or StateObserver as the state is checkpointed, restored or dropped
// in a rebalance; and so is one in a method of the source (Poll,
// Assignment, Lag, Commit, and a Runner's Run, on its own goroutine), of
// a Sink or Flusher, of the Store or of the Transaction (which is then
// aborted when the panic was in Begin or Commit). Nothing is committed
// after the panic.
//
// Run may be called once. A Run that fails before it starts, the graph or
// the options being invalid, starts nothing (not even the source's Runner)
// and leaves the pipeline as it was: Run may be called again, and fails
// the same way unless the graph was completed since.
func (p *Pipeline) Run(ctx context.Context) (err error) {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("stream: Run called twice")
	}
	defer func() {
		if pe := (*PanicError)(nil); errors.As(err, &pe) {
			p.cfg.logger.Error("a function given to the pipeline panicked", "err", err, "stack", string(pe.Stack))
		}
	}()
	if err := p.validate(); err != nil {
		p.running.Store(false) // nothing started: Run may be called again
		return err
	}

	// work outlives ctx, so that a cancelled run still finishes its batch.
	work, stopWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopWork(nil)

	// runnerPanic is a panic of the source's Runner, which Run returns
	// even when it came as the run ended.
	var runnerPanic error
	defer func() {
		switch {
		case runnerPanic == nil || errors.Is(err, runnerPanic):
		case err == nil:
			err = runnerPanic
		default:
			err = errors.Join(err, runnerPanic)
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait() // before runnerPanic is read
	if r, ok := p.input.source().(Runner); ok {
		runCtx, stopRunner := context.WithCancel(work)
		defer stopRunner() // runs before wg.Wait
		wg.Go(func() {
			err := panicIn("source", r, "Run", recovered(func() error { return r.Run(runCtx) }))
			switch {
			case isPanic(err):
				runnerPanic = fmt.Errorf("stream: %w", err)
				stopWork(runnerPanic)
			case err != nil && runCtx.Err() == nil:
				stopWork(fmt.Errorf("stream: source: %w", err))
			}
		})
	}
	// A cancelled ctx gives the batch in progress DrainTimeout to finish.
	stopDrain := context.AfterFunc(ctx, func() {
		if p.cfg.drainTimeout == 0 { // no bound
			return
		}
		t := time.AfterFunc(p.cfg.drainTimeout, func() {
			stopWork(fmt.Errorf("stream: batch not finished %v after cancellation: %w", p.cfg.drainTimeout, context.Cause(ctx)))
		})
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stopDrain()

	committer, _ := p.input.source().(Committer)
	assigner, _ := p.input.source().(Assigner)
	lagger, _ := p.input.source().(Lagger)
	var stats BatchStats // reused: hooks must not keep its slices
	var sourceName string
	var assigned []int32
	// The restore at the start is not a batch: Run's cancellation ends it
	// at once, with nothing to commit.
	if err := p.restoreAll(ctx, assigner == nil); err != nil {
		if endedBy(ctx, work, err) {
			p.cfg.logger.Info("run cancelled while the state was restored")
			return nil
		}
		return err
	}
	defer p.input.logSkipped(true)
	var pending []Offset     // read since the last checkpoint
	var lastCommit time.Time // zero: the first batch commits
	var last Info            // of the last batch
	var heldBack bool        // a batch since the last commit was not committed
	// dropLost drops the pending offsets of the partitions lost since the
	// last assignment: read by batches not committed yet (CommitInterval),
	// they go with the partitions' state, which was dropped; committed or
	// checkpointed, they would run ahead of the state the partitions' new
	// owners restore.
	dropLost := func(now []int32) {
		pending = slices.DeleteFunc(pending, func(o Offset) bool {
			return slices.Contains(assigned, o.Partition) && !slices.Contains(now, o.Partition)
		})
	}
	// end ends the run: what batches not committed (CommitInterval) have
	// read, and their state, are committed now, even when they read
	// nothing (their state may have changed: a TTL, UpdateAll); but for the
	// partitions lost since the last batch, whose state is dropped first,
	// so that its checkpoint does not write over their new owners'.
	// FinalCommitHooks are told of that commit.
	end := func() error {
		if !heldBack || len(pending) == 0 && p.cfg.store == nil {
			return nil
		}
		now := assigned
		if assigner != nil {
			var err error
			if now, err = assignment(assigner); err != nil {
				return err
			}
			if lost := minus(assigned, now); len(lost) > 0 {
				p.cfg.logger.Info("partitions lost as the run ends", "lost", lost)
				if err := p.dropState(lost); err != nil {
					return fmt.Errorf("stream: partitions lost as the run ends (%v): %w", lost, err)
				}
				dropLost(now)
			}
		}
		stats.Checkpoint, stats.Commit, stats.Flush = 0, 0, 0
		if err := p.commit(work, last, committer, pending, &stats); err != nil {
			return err
		}
		return p.finalCommitDone(last, pending, now, &stats, &sourceName, lagger)
	}

	start := time.Now()
	scheduled := start
	for id := int64(1); ; id++ {
		if ctx.Err() != nil { // cancelled after a batch was done
			return end()
		}
		if p.cfg.interval > 0 {
			scheduled = nextTick(scheduled, p.cfg.interval, time.Now())
		}
		batchStart := time.Now()
		p.input.begin()
		n, skipped, eof, forced, err := p.collect(ctx, work, scheduled)
		for k := skipped; err == nil && n == 0 && k > 0 && !eof && !forced && ctx.Err() == nil && p.cfg.interval > 0; skipped += k {
			// Records a restored state had counted are the past of the
			// input, not time of this run: an interval that read only
			// those is no batch, and starts again. One that read
			// nothing is a batch, as any idle interval.
			batchStart = time.Now()
			scheduled = nextTick(batchStart, p.cfg.interval, batchStart)
			n, k, eof, forced, err = p.collect(ctx, work, scheduled)
		}
		if err != nil {
			return err
		}
		cutAt := time.Now()
		// No empty batch after the last one, nor of records a restored
		// state had counted alone: a rerun of a finished input changes
		// nothing.
		if n == 0 && (eof && (id > 1 || skipped > 0) || ctx.Err() != nil) {
			if eof {
				if err := p.input.endedBelow(); err != nil {
					return err
				}
			}
			if skipped > 0 {
				offsets, _ := p.input.cut(last, assigned, assigner != nil)
				if heldBack {
					pending = mergeOffsets(pending, offsets)
				} else if err := p.commitSkipped(work, committer, offsets); err != nil {
					return err
				}
			}
			return end()
		}
		if assigner != nil {
			now, err := assignment(assigner)
			if err != nil {
				return err
			}
			if err := p.rebalance(ctx, work, assigned, now, id); err != nil {
				if !errors.Is(err, errRestoreCancelled) {
					return err
				}
				p.cfg.logger.Info("run cancelled while the state of gained partitions was restored")
				dropLost(now)
				return end()
			}
			dropLost(now)
			assigned = now
		}
		info := Info{ID: id, Time: cutAt, Start: batchStart, Records: n}
		last = info
		offsets, counts := p.input.cut(info, assigned, assigner != nil)
		p.input.logSkipped(false)
		if eof {
			// Before anything of this run is committed: its offsets,
			// below the restored ones, would go back in the checkpoint.
			if err := p.input.endedBelow(); err != nil {
				return err
			}
		}
		pending = mergeOffsets(pending, offsets)
		// Checked after the outputs: a run cancelled meanwhile ends with
		// this batch, which must then be checkpointed.
		durable := func() bool {
			switch {
			case eof || forced || ctx.Err() != nil:
				return true
			case p.cfg.store != nil && id%int64(p.cfg.checkpointEvery) != 0:
				return false
			}
			return time.Since(lastCommit) >= p.cfg.commitInterval
		}
		committed, err := p.finish(work, info, committer, pending, durable, &stats)
		if err != nil {
			return err
		}
		heldBack = !committed
		if committed {
			pending = pending[:0]
			lastCommit = time.Now()
		}
		stats.Processing = time.Since(cutAt)
		if len(p.cfg.hooks) > 0 {
			stats.Info, stats.Scheduled, stats.Partitions = info, scheduled, len(offsets)
			if p.cfg.interval <= 0 {
				stats.Scheduled = cutAt
			}
			stats.Inputs, err = inputStats(stats.Inputs[:0], offsets, counts, assigned, &sourceName, lagger)
			if err != nil {
				return fmt.Errorf("stream: batch %d: %w", id, err)
			}
			stats.State = stats.State[:0]
			for _, s := range p.stores() {
				stats.State = append(stats.State, s.size())
			}
			for _, h := range p.cfg.hooks {
				if err := recovered(func() error { h.BatchDone(stats); return nil }); err != nil {
					return fmt.Errorf("stream: batch %d: hook %T: %w", id, h, err)
				}
			}
		}
		p.cfg.logger.Debug("batch done", "batch", id, "records", n, "processing", stats.Processing)
		if eof {
			return nil
		}
		if p.cfg.interval <= 0 || n >= p.cfg.maxRecords && p.cfg.maxRecords > 0 {
			scheduled = time.Now() // a full batch restarts the grid
		}
	}
}

// validate checks the pipeline and its options before Run starts
// anything, and names the outputs.
func (p *Pipeline) validate() error {
	if p.err != nil {
		return p.err
	}
	if err := p.cfg.validate(); err != nil {
		return err
	}
	if p.input == nil {
		return errNoInput
	}
	if len(p.outputs) == 0 {
		return errors.New("stream: pipeline has no output: add ForEachBatch, ForEachPartition or To")
	}
	for _, check := range p.checks {
		if err := check(); err != nil {
			return err
		}
	}
	p.nameOutputs()
	p.held = slices.Concat(p.stateful, p.windows)
	if p.assigned() {
		// A rebalance drops and restores state by source partition: the
		// state must be in the source's partitions.
		for _, s := range p.stateful {
			if s.hashed() {
				return fmt.Errorf("stream: %s: the source's partitions are assigned and move (%T is an Assigner), and the state moves with them, so it must live in the source's partitions: make its input Keyed (every value of a key in one source partition, as a Kafka topic keyed by it), not moved by a hash of the key (PartitionByKey, or an input that is not keyed) or by Reduce, even if declared Keyed since", s.name(), p.input.source())
			}
		}
		// A window drops a lost partition's values by its ID, which a
		// window of other partitions cannot.
		if len(p.movedWindows) > 0 {
			w := p.movedWindows[0]
			return fmt.Errorf("stream: %s: %s of partitions that are not the source's (moved by a hash of the keys, as by PartitionByKey and by ReduceByKey of a stream that is not Keyed, or mixed, as by Reduce and Transform), while the source's partitions are assigned and move (%T is an Assigner): the window could not drop the values of a partition lost, and would count twice what is read again when it comes back; window the values while they are in the source's partitions, then move them: ReduceByKeyAndWindow of the stream before it is moved (Keyed, or not Keyed but in the source's partitions), or ReduceByKey(Window(s, length, slide), f) instead of a window of ReduceByKey(s, f)", w.name(), w.op, p.input.source())
		}
	}
	if p.cfg.store == nil {
		return nil
	}
	names := map[string]bool{}
	for _, s := range p.stores() {
		if names[s.name()] {
			return fmt.Errorf("stream: two stateful operators are named %q: name them apart (Stream.Named) so that their state can be told apart", s.name())
		}
		names[s.name()] = true
		if err := s.setDurable(); err != nil {
			return err
		}
	}
	return nil
}

// finalCommitDone tells the FinalCommitHooks of the commit with which Run
// ends, of offsets, after the batch last, with the partitions assigned,
// as stats timed it. It returns a hook's panic, or the source's (Lag),
// saying that the commit was done.
func (p *Pipeline) finalCommitDone(last Info, offsets []Offset, assigned []int32, stats *BatchStats, sourceName *string, lagger Lagger) error {
	var hooks []FinalCommitHook
	for _, h := range p.cfg.hooks {
		if fh, ok := h.(FinalCommitHook); ok {
			hooks = append(hooks, fh)
		}
	}
	if len(hooks) == 0 {
		return nil
	}
	cs := CommitStats{Batch: last, Checkpoint: stats.Checkpoint, Commit: stats.Commit, Flush: stats.Flush}
	var err error
	cs.Inputs, err = inputStats(stats.Inputs[:0], offsets, make([]recordCount, len(offsets)), assigned, sourceName, lagger)
	if err != nil {
		return fmt.Errorf("stream: final commit after batch %d done, then %w", last.ID, err)
	}
	for _, s := range p.stores() {
		cs.State = append(cs.State, s.size())
	}
	for _, h := range hooks {
		if err := recovered(func() error { h.FinalCommit(cs); return nil }); err != nil {
			return fmt.Errorf("stream: final commit after batch %d done, then hook %T: %w", last.ID, h, err)
		}
	}
	return nil
}

// finish runs the outputs of a batch, then, if durable says so once they
// are done, checkpoints the state and commits the pending offsets to the
// source, and reports that it did; all of it in one transaction when the
// pipeline has one.
func (p *Pipeline) finish(work context.Context, info Info, committer Committer, pending []Offset, durable func() bool, stats *BatchStats) (bool, error) {
	stats.Outputs, stats.Checkpoint, stats.Commit, stats.Flush = stats.Outputs[:0], 0, 0, 0
	if p.cfg.txn == nil {
		return p.finishBatch(work, info, committer, pending, durable, stats)
	}
	var committed bool
	err := p.inTransaction(work, fmt.Sprintf("stream: batch %d", info.ID), &stats.Commit, func() (err error) {
		committed, err = p.finishBatch(work, info, committer, pending, durable, stats)
		return err
	})
	return committed && err == nil, err
}

// inTransaction runs do in a transaction of the pipeline's: Begin, do,
// then Commit, or Abort when do fails, or when Begin or Commit panicked
// (what they left open, if anything). what prefixes the errors; the time
// Commit took is added to commitTime.
func (p *Pipeline) inTransaction(work context.Context, what string, commitTime *time.Duration, do func() error) error {
	tx := p.cfg.txn
	// The end of the transaction, commit or abort, must go out even when
	// work is over (the drain timeout), but Run does not wait for it past
	// endGrace after that.
	ectx, cancel := endContext(work)
	defer cancel()
	abort := func(err error) error {
		aerr := panicIn("transaction", tx, "Abort", recovered(func() error { return tx.Abort(ectx) }))
		if aerr != nil {
			err = errors.Join(err, fmt.Errorf("%s: abort transaction: %w", what, aerr))
		}
		return err
	}
	if err := panicIn("transaction", tx, "Begin", recovered(func() error { return tx.Begin(work) })); err != nil {
		err = orCause(work, fmt.Errorf("%s: begin transaction: %w", what, err))
		if isPanic(err) {
			err = abort(err)
		}
		return err
	}
	if err := do(); err != nil {
		return abort(err)
	}
	began := time.Now()
	err := panicIn("transaction", tx, "Commit", recovered(func() error { return tx.Commit(ectx) }))
	*commitTime += time.Since(began)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%s: commit transaction: %w", what, err)
	if work.Err() != nil { // the drain timeout, and how the commit ended
		err = errors.Join(context.Cause(work), err)
	}
	if isPanic(err) {
		err = abort(err)
	}
	return err // Commit aborts what it cannot commit
}

// endGrace is how long a transaction's commit or abort is waited for once
// the drain timeout has passed.
const endGrace = time.Second

// endContext returns the context of a transaction's commit or abort: not
// done with work, but endGrace after it, so that a broker that does not
// answer cannot hold Run past its DrainTimeout for long. Call cancel once
// the transaction has ended.
func endContext(work context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(work))
	go func() {
		select {
		case <-work.Done():
		case <-ctx.Done():
			return
		}
		t := time.NewTimer(endGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// finishBatch runs the outputs of a batch, then, if durable says so,
// makes it durable (see commit).
func (p *Pipeline) finishBatch(work context.Context, info Info, committer Committer, pending []Offset, durable func() bool, stats *BatchStats) (bool, error) {
	bc := &batchCtx{ctx: work, info: info, par: p.cfg.parallelism}
	for _, o := range p.outputs {
		began := time.Now()
		if err := o.run(bc); err != nil {
			return false, orCause(work, fmt.Errorf("stream: %w", err))
		}
		stats.Outputs = append(stats.Outputs, OutputStats{Name: o.name, Duration: time.Since(began)})
	}
	if !durable() {
		return false, nil
	}
	if err := p.commit(work, info, committer, pending, stats); err != nil {
		return false, err
	}
	return true, nil
}

// commit flushes the Flusher sinks, checkpoints the state and commits the
// pending offsets to the source, as of the batch info.
func (p *Pipeline) commit(work context.Context, info Info, committer Committer, pending []Offset, stats *BatchStats) error {
	if err := context.Cause(work); isPanic(err) {
		return err // of the source's Runner, which may have panicked as the batch ran
	}
	if len(p.flushers) > 0 {
		began := time.Now()
		for _, f := range p.flushers {
			err := panicIn("sink", f.f, "Flush", recovered(func() error { return f.f.Flush(work) }))
			if err != nil {
				return orCause(work, fmt.Errorf("stream: %s: batch %d: flush: %w", f.out.name, info.ID, err))
			}
		}
		stats.Flush = time.Since(began)
	}
	if p.cfg.store != nil {
		began := time.Now()
		err := p.checkpoint(work, info, pending)
		stats.Checkpoint = time.Since(began)
		if err != nil {
			return orCause(work, err)
		}
	}
	if committer != nil {
		began := time.Now()
		err := panicIn("source", committer, "Commit", recovered(func() error { return committer.Commit(work, pending) }))
		stats.Commit = time.Since(began)
		if err != nil {
			return orCause(work, fmt.Errorf("stream: batch %d: commit: %w", info.ID, err))
		}
	}
	return nil
}

// nextTick returns the first point of the grid prev + k*interval (k >= 1)
// that is after now.
func nextTick(prev time.Time, interval time.Duration, now time.Time) time.Time {
	next := prev.Add(interval)
	if !next.After(now) {
		missed := now.Sub(next)/interval + 1
		next = next.Add(missed * interval)
	}
	return next
}

// commitSkipped commits to the source the offsets of records a restored
// state had counted, read since the last batch, as Run ends with no batch
// to commit them with: the Store holds them already, but a source that
// records its progress (a consumer group) would read them again.
func (p *Pipeline) commitSkipped(work context.Context, committer Committer, offsets []Offset) error {
	if committer == nil || len(offsets) == 0 {
		return nil
	}
	commit := func(ctx context.Context) error {
		err := panicIn("source", committer, "Commit", recovered(func() error { return committer.Commit(ctx, offsets) }))
		if err != nil {
			return orCause(work, fmt.Errorf("stream: commit of records already counted: %w", err))
		}
		return nil
	}
	if p.cfg.txn == nil {
		return commit(work)
	}
	var took time.Duration
	return p.inTransaction(work, "stream: commit of records already counted", &took, func() error { return commit(work) })
}

// collect polls records until the batch holds MaxRecords, the deadline
// passes, ctx is cancelled, the source ends (eof) or the source cuts the
// batch (forced). The records a restored state had counted are dropped,
// and counted in skipped.
func (p *Pipeline) collect(ctx, work context.Context, deadline time.Time) (n, skipped int, eof, forced bool, err error) {
	pollCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if p.cfg.interval > 0 {
		var cancelDeadline context.CancelFunc
		pollCtx, cancelDeadline = context.WithDeadline(pollCtx, deadline)
		defer cancelDeadline()
	}
	stop := context.AfterFunc(work, cancel)
	defer stop()

	n, skipped, err = p.input.collect(pollCtx, p.cfg.maxRecords)
	switch {
	case isPanic(err): // whatever it panicked with
		return n, skipped, false, false, fmt.Errorf("stream: poll source: %w", err)
	case errors.Is(err, io.EOF):
		return n, skipped, true, false, nil
	case errors.Is(err, ErrCut):
		return n, skipped, false, true, nil
	case err == nil:
		return n, skipped, false, false, nil
	case endedBy(pollCtx, work, err):
		// The deadline or Run's cancellation, not a failure.
		return n, skipped, false, false, nil
	case work.Err() != nil:
		return n, skipped, false, false, context.Cause(work)
	default:
		return n, skipped, false, false, fmt.Errorf("stream: poll source: %w", err)
	}
}

// endedBy reports whether err is what a call returned because ctx ended
// (Run's cancellation, a batch's deadline), while work goes on: not a
// failure that happened as ctx ended.
func endedBy(ctx, work context.Context, err error) bool {
	return ctx.Err() != nil && work.Err() == nil && !isPanic(err) &&
		(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Cause(ctx)))
}

// errRestoreCancelled is returned by rebalance when Run's cancellation
// ended the restore of the gained partitions' state.
var errRestoreCancelled = errors.New("stream: run cancelled while the state was restored")

// rebalance tells stateful operators and OnRebalance hooks about partitions
// lost and gained since the previous batch, before the batch given.
//
// Run's cancellation (ctx) ends the restore of the gained partitions, as it
// ends the restore at the start: their state, partly restored, is dropped
// and rebalance returns errRestoreCancelled. work bounds the rest.
func (p *Pipeline) rebalance(ctx, work context.Context, before, now []int32, batch int64) error {
	lost := minus(before, now)
	gained := minus(now, before)
	if len(lost) == 0 && len(gained) == 0 {
		return nil
	}
	p.cfg.logger.Info("partitions changed", "lost", lost, "gained", gained)
	if err := p.dropState(lost); err != nil {
		return fmt.Errorf("stream: rebalance (lost %v, gained %v): %w", lost, gained, err)
	}
	if p.cfg.store != nil && len(gained) > 0 {
		rctx, cancel := context.WithCancel(work)
		stop := context.AfterFunc(ctx, cancel)
		err := p.restore(rctx, gained, batch)
		stop()
		cancel()
		if err != nil {
			if endedBy(ctx, work, err) {
				if err := p.dropState(gained); err != nil {
					return fmt.Errorf("stream: rebalance (lost %v, gained %v): %w", lost, gained, err)
				}
				return errRestoreCancelled
			}
			return err
		}
	}
	for _, f := range p.cfg.onRebalance {
		if err := named("OnRebalance", recovered(func() error { return f(work, lost, gained) })); err != nil {
			return fmt.Errorf("stream: rebalance (lost %v, gained %v): %w", lost, gained, err)
		}
	}
	return nil
}

// dropState drops the state of partitions ids in every stateful operator,
// their batches in every window, and the offsets restored with their
// state. It returns a StateObserver's panic.
func (p *Pipeline) dropState(ids []int32) error {
	for _, s := range p.stores() {
		if err := s.dropPartitions(ids); err != nil {
			return err
		}
	}
	p.input.forget(ids)
	return nil
}

// restoreAll restores the whole state before the first batch, when there
// is a Store and all is true. With an Assigner source, state is restored
// partition by partition as they are assigned.
func (p *Pipeline) restoreAll(ctx context.Context, all bool) error {
	if p.cfg.store == nil || !all {
		return nil
	}
	return p.restore(ctx, nil, 1)
}

// restore loads the state of the given partitions (nil: all) from the
// store, before the batch given.
func (p *Pipeline) restore(ctx context.Context, partitions []int32, batch int64) error {
	ops := map[string]stateful{}
	for _, s := range p.stores() {
		ops[s.name()] = s
	}
	prog := restoreProgress{p: p, stats: RestoreStats{Partitions: partitions}, start: time.Now()}
	prog.last = prog.start
	put := func(e Entry) error {
		op := ops[e.Op]
		if op == nil {
			return fmt.Errorf("the store holds state of an operator named %q, which this pipeline has not: name the operator as before, or discard the state", e.Op)
		}
		if err := prog.add(); err != nil {
			return err
		}
		// The codecs and observers are the user's, and a Store may call
		// this from a goroutine of its own.
		err := recovered(func() error { return op.restore(e, p.cfg.parallelism, batch) })
		if _, ok := err.(*PanicError); ok {
			return fmt.Errorf("%s: partition %d: %w", e.Op, e.Partition, err)
		}
		return err
	}
	var offsets []Offset
	err := recovered(func() (err error) {
		offsets, err = p.cfg.store.Restore(ctx, partitions, put)
		return err
	})
	err = panicIn("store", p.cfg.store, "Restore", err)
	if herr := prog.done(err); herr != nil {
		err = errors.Join(err, herr)
	}
	if err != nil {
		return fmt.Errorf("stream: restore state: %w", err)
	}
	for _, s := range p.stores() {
		if err := recovered(s.restored); err != nil {
			return fmt.Errorf("stream: restore state: %s: %w", s.name(), err)
		}
	}
	p.input.skipBelow(offsets)
	// A changelog gives a key once per checkpoint that wrote it, not yet
	// compacted: entries read are not the keys restored.
	keys := 0 // and values of windows
	for _, s := range p.stores() {
		keys += s.size().Keys
	}
	p.cfg.logger.Info("state restored", "partitions", partitions, "entries", prog.stats.Entries, "keys", keys, "offsets", len(offsets), "took", prog.stats.Elapsed)
	return nil
}

// restoreProgressEvery is how often a restore in progress is logged and
// told to RestoreHooks.
const restoreProgressEvery = time.Second

// restoreProgress logs a restore's progress and tells the hooks.
type restoreProgress struct {
	p           *Pipeline
	stats       RestoreStats
	start, last time.Time
	// panicked is 1 + the index in the hooks of one that panicked, which
	// is not told of the end its panic made; 0 if none.
	panicked int
}

// add counts an entry restored. It returns a hook's panic.
func (r *restoreProgress) add() error {
	r.stats.Entries++
	if r.stats.Entries%4096 != 0 {
		return nil // time.Now per entry would cost more than the entry
	}
	now := time.Now()
	if now.Sub(r.last) < restoreProgressEvery {
		return nil
	}
	r.last = now
	r.stats.Elapsed = now.Sub(r.start)
	rate := float64(r.stats.Entries) / r.stats.Elapsed.Seconds()
	r.p.cfg.logger.Info("restoring state", "partitions", r.stats.Partitions, "entries", r.stats.Entries,
		"entries/s", int64(rate), "elapsed", r.stats.Elapsed.Round(time.Millisecond))
	return r.tell()
}

// done ends the restore, which err ended. It returns a hook's panic.
func (r *restoreProgress) done(err error) error {
	r.stats.Elapsed, r.stats.Done, r.stats.Err = time.Since(r.start), true, err
	return r.tell()
}

// tell tells the RestoreHooks of the progress, and returns a hook's
// panic.
func (r *restoreProgress) tell() error {
	for i, h := range r.p.cfg.hooks {
		if rh, ok := h.(RestoreHook); ok && i+1 != r.panicked {
			if err := recovered(func() error { rh.RestoreProgress(r.stats); return nil }); err != nil {
				r.panicked = i + 1
				return fmt.Errorf("hook %T: %w", h, err)
			}
		}
	}
	return nil
}

// inputStats appends to dst the stats of every source partition of a
// batch: those it read records of, then assigned ones it read none of.
// An Assigner source reads one source, whose name *name keeps from batch
// to batch for the partitions with no records.
func inputStats(dst []PartitionStats, offsets []Offset, counts []recordCount, assigned []int32, name *string, lagger Lagger) ([]PartitionStats, error) {
	for i, o := range offsets {
		dst = append(dst, PartitionStats{Source: o.Source, Partition: o.Partition, Records: counts[i].records, Skipped: counts[i].skipped, Lag: -1})
		*name = o.Source
	}
	for _, id := range assigned {
		if !slices.ContainsFunc(offsets, func(o Offset) bool { return o.Partition == id }) {
			dst = append(dst, PartitionStats{Source: *name, Partition: id, Lag: -1})
		}
	}
	if lagger != nil {
		err := recovered(func() error {
			for i := range dst {
				if n, ok := lagger.Lag(dst[i].Partition); ok {
					dst[i].Lag = n
				}
			}
			return nil
		})
		if err != nil {
			return dst, panicIn("source", lagger, "Lag", err)
		}
	}
	slices.SortFunc(dst, func(a, b PartitionStats) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Partition, b.Partition))
	})
	return dst, nil
}

// assignment returns the partitions a owns now, or its panic.
func assignment(a Assigner) ([]int32, error) {
	var ids []int32
	err := recovered(func() error { ids = a.Assignment(); return nil })
	if err != nil {
		return nil, fmt.Errorf("stream: %w", panicIn("source", a, "Assignment", err))
	}
	return ids, nil
}

// checkpoint saves what the stateful operators changed since the last
// checkpoint, with the offsets read since then.
func (p *Pipeline) checkpoint(ctx context.Context, info Info, offsets []Offset) error {
	c := &Changes{Batch: info, Offsets: offsets}
	for _, s := range p.stores() {
		// The codecs are the user's.
		err := recovered(func() (err error) {
			c.Entries, err = s.changes(c.Entries, info.ID)
			return err
		})
		if err := named(s.name(), err); err != nil {
			return fmt.Errorf("stream: batch %d: checkpoint: %w", info.ID, err)
		}
	}
	err := recovered(func() error { return p.cfg.store.Checkpoint(ctx, c) })
	if err := panicIn("store", p.cfg.store, "Checkpoint", err); err != nil {
		return fmt.Errorf("stream: batch %d: checkpoint: %w", info.ID, err)
	}
	return nil
}

// offsetIndex returns the index in offs of source's partition, or -1.
func offsetIndex(offs []Offset, source string, partition int32) int {
	return slices.IndexFunc(offs, func(x Offset) bool { return x.Source == source && x.Partition == partition })
}

// mergeOffsets adds offsets to acc, keeping the highest per partition.
func mergeOffsets(acc, offsets []Offset) []Offset {
	for _, o := range offsets {
		i := offsetIndex(acc, o.Source, o.Partition)
		if i < 0 {
			acc = append(acc, o)
			continue
		}
		acc[i].Next = max(acc[i].Next, o.Next)
	}
	return acc
}

// minus returns the elements of a not in b, sorted.
func minus(a, b []int32) []int32 {
	var out []int32
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}

// inputStream collects a source's records into a batch.
type inputStream[T any] struct {
	src    Source[T]
	logger *slog.Logger
	skip   map[sourcePartition]int64 // restored offsets not yet passed
	seen   map[sourcePartition]int64 // the highest offset read of each key of skip
	wide   bool                      // offsets count across the source's partitions (SourceWideOffsets)
	// passed holds, with source-wide offsets, the keys of skip of which
	// the batch being collected kept records: true if it read none below.
	passed map[sourcePartition]bool
	// late reports offsets to skip below restored since the batch was
	// collected (the partitions an Assigner source gained): its records
	// are gone through again at the cut.
	late bool
	// skipped counts the records dropped of every key of skip.
	skipped map[sourcePartition]*skipCount
	// emptyPolls counts the Polls in a row that returned nothing, not
	// even an error; warned reports that it was logged.
	emptyPolls int
	warned     bool
	buf        []Record[T]
	parts      map[int32]*inPart[T] // buffers of every partition seen, by ID
	byID       []*inPart[T]         // the same, for IDs below maxDenseID
	batch      Batch[T]
	cutParts   []*inPart[T] // the partitions of the batch cut, reused
	// prevLens are the lengths of the partitions' values in the batch
	// before, reused.
	prevLens []partLen
}

type partLen struct {
	id int32
	n  int
}

// inPart is a partition being collected, with the offsets of its records,
// counted as they come rather than read back from their origins once the
// batch is cut.
type inPart[T any] struct {
	Partition[T]
	offs []Offset      // the next offset of every source partition of its records, in the order first seen
	recs []recordCount // the records of each
	last int           // the index in offs of the last record's source partition
}

// recordCount counts the records of a source partition read for a batch.
type recordCount struct {
	records int // held by the batch
	skipped int // dropped as a restored state had counted them
}

// count counts a record of origin o, of the batch's records unless a
// restored state had counted it (skipped).
func (p *inPart[T]) count(o *Origin, skipped bool) {
	k := p.last
	if k >= len(p.offs) || p.offs[k].Partition != o.Partition || p.offs[k].Source != o.Source {
		k = offsetIndex(p.offs, o.Source, o.Partition)
		if k < 0 {
			k = len(p.offs)
			p.offs = append(p.offs, Offset{Source: o.Source, Partition: o.Partition})
			p.recs = append(p.recs, recordCount{})
		}
		p.last = k
	}
	p.offs[k].Next = max(p.offs[k].Next, o.Offset+1)
	if skipped {
		p.recs[k].skipped++
	} else {
		p.recs[k].records++
	}
}

// grow doubles the room of p's buffers. append alone grows a large slice
// by about a quarter at a time, so that filling the first batch's buffers
// copied them about four times over (origins hold pointers: copied with
// the garbage collector's write barriers while it runs).
func (p *inPart[T]) grow() {
	n := max(len(p.Values), minPartGrowth)
	p.Values = slices.Grow(p.Values, n)
	p.Origins = slices.Grow(p.Origins, n)
}

// minPartGrowth is the least room an input partition's buffers grow by.
const minPartGrowth = 1024

// reset empties p for the next batch.
func (p *inPart[T]) reset() {
	p.Values, p.Origins = p.Values[:0], p.Origins[:0]
	clear(p.offs) // their sources' names
	p.offs, p.recs, p.last = p.offs[:0], p.recs[:0], 0
}

func (in *inputStream[T]) source() any { return in.src }

func (in *inputStream[T]) begin() {
	if in.buf == nil {
		in.buf = make([]Record[T], 4096)
		in.parts = make(map[int32]*inPart[T])
	}
	// The previous batch's values are overwritten by this one's; those
	// past its end are cleared once it is collected, so that the garbage
	// collector may take them.
	prev := in.prevLens[:0]
	for id, p := range in.parts {
		prev = append(prev, partLen{id, len(p.Values)})
		p.reset()
	}
	in.prevLens = prev
	in.late = false
}

func (in *inputStream[T]) collect(ctx context.Context, max int) (n, skipped int, err error) {
	defer func() {
		for _, pl := range in.prevLens {
			if p := in.parts[pl.id]; len(p.Values) < pl.n {
				clear(p.Values[len(p.Values):pl.n])
			}
		}
	}()
	donePolls := 0 // Polls made with ctx done
	for max <= 0 || n < max {
		buf := in.buf
		if max > 0 && max-n < len(buf) {
			buf = buf[:max-n]
		}
		if ctx.Err() != nil {
			donePolls++
		}
		k, err := in.poll(ctx, buf)
		if k < 0 || k > len(buf) {
			return n, skipped, fmt.Errorf("source returned %d records for a buffer of %d", k, len(buf))
		}
		var p *inPart[T]
		for i := range buf[:k] {
			r := &buf[i]
			if id := r.Origin.Partition; p == nil || p.ID != id {
				if uint32(id) < uint32(len(in.byID)) && in.byID[id] != nil {
					p = in.byID[id]
				} else {
					p = in.partition(id)
				}
			}
			if len(in.skip) > 0 && in.skips(&r.Origin) {
				p.count(&r.Origin, true)
				skipped++
				continue
			}
			if len(p.Values) == cap(p.Values) {
				p.grow()
			}
			p.Values = append(p.Values, r.Value)
			p.Origins = append(p.Origins, r.Origin)
			p.count(&r.Origin, false)
			n++
		}
		// buf is not cleared: the next Poll overwrites it, and what it
		// holds meanwhile is at most one buffer of this batch's records.
		if err != nil {
			return n, skipped, err
		}
		if k > 0 {
			in.emptyPolls = 0
		} else if ctx.Err() == nil {
			in.backOff(ctx)
		}
		// A source with records ready returns them even once ctx is
		// done: past the deadline or a cancellation, the batch takes
		// what at most two Polls made then return, and is cut: a batch
		// whose deadline passed before its first Poll (a slow batch
		// before it) still takes more than one Poll's records.
		if donePolls >= 2 {
			return n, skipped, ctx.Err()
		}
	}
	return n, skipped, nil
}

// Poll blocks until it has a record: one that returns nothing at once
// would have the engine spin. After freePolls such Polls in a row, the
// engine waits before the next, from minPollWait to maxPollWait.
const (
	freePolls   = 3
	minPollWait = 50 * time.Microsecond
	maxPollWait = 5 * time.Millisecond
)

// backOff counts a Poll that returned nothing, nor an error, before ctx
// was done, and past freePolls in a row waits, until ctx is done at most.
func (in *inputStream[T]) backOff(ctx context.Context) {
	in.emptyPolls++
	past := in.emptyPolls - freePolls
	if past <= 0 {
		return
	}
	if !in.warned {
		in.warned = true
		in.logger.Warn("source's Poll returned no record and no error at once, instead of blocking until it has one: the engine waits between Polls",
			"source", fmt.Sprintf("%T", in.src))
	}
	wait := maxPollWait
	if past < 8 {
		wait = min(maxPollWait, minPollWait<<(past-1))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// poll polls the source into buf, and returns its panic as an error.
func (in *inputStream[T]) poll(ctx context.Context, buf []Record[T]) (k int, err error) {
	err = recovered(func() (err error) {
		k, err = in.src.Poll(ctx, buf)
		return err
	})
	return k, panicIn("source", in.src, "Poll", err)
}

// partition returns the buffers of partition id, made if new. Those of
// small IDs are also kept by ID, to be found without hashing: a source
// such as a file spreads its records over the partitions in turn, so that
// every record changes partition.
func (in *inputStream[T]) partition(id int32) *inPart[T] {
	p := in.parts[id]
	if p == nil {
		p = &inPart[T]{Partition: Partition[T]{ID: id}}
		in.parts[id] = p
	}
	if id >= 0 && id < maxDenseID {
		if int(id) >= len(in.byID) {
			in.byID = slices.Grow(in.byID, int(id)+1-len(in.byID))[:id+1]
		}
		in.byID[id] = p
	}
	return p
}

// maxDenseID bounds the partition IDs kept in a slice by inputStream.
const maxDenseID = 1024

// cut makes the batch of the records collected. With filter set, the batch
// holds exactly the assigned partitions: records of partitions lost since
// they were polled are dropped uncommitted, for their new owner to read.
func (in *inputStream[T]) cut(info Info, assigned []int32, filter bool) ([]Offset, []recordCount) {
	cut := in.cutParts[:0]
	for id, p := range in.parts {
		if filter && !slices.Contains(assigned, id) || !filter && len(p.offs) == 0 {
			continue
		}
		cut = append(cut, p)
	}
	if filter {
		for _, id := range assigned {
			if in.parts[id] == nil {
				p := &inPart[T]{Partition: Partition[T]{ID: id}}
				in.parts[id] = p
				cut = append(cut, p)
			}
		}
	}
	slices.SortFunc(cut, func(a, b *inPart[T]) int { return cmp.Compare(a.ID, b.ID) })
	if in.late {
		for _, p := range cut {
			in.dropSkipped(p)
		}
		in.late = false
	}
	parts := in.batch.Partitions[:0]
	for _, p := range cut {
		parts = append(parts, p.Partition)
	}
	in.batch = Batch[T]{Info: info, Partitions: parts}
	offsets, counts := batchOffsets(cut)
	clear(cut)
	in.cutParts = cut[:0]
	if len(in.skip) > 0 {
		// What the restored state counted is done, whatever this batch
		// read of it: a commit must not go back below it (a store that
		// keeps the last offsets it was given would count those records
		// again at the next restore).
		for i, o := range offsets {
			if next, ok := in.skip[in.skipKey(o.Source, o.Partition)]; ok {
				offsets[i].Next = max(o.Next, next)
			}
		}
	}
	// A source-wide offset is passed for good once a batch holds none of
	// the source's records below it: the partitions of one batch are
	// gone through one after the other, not in the order read.
	for k, passed := range in.passed {
		if passed {
			delete(in.skip, k)
			delete(in.seen, k)
		}
	}
	clear(in.passed)
	return offsets, counts
}

type sourcePartition struct {
	source    string
	partition int32
}

func (in *inputStream[T]) skipBelow(offsets []Offset) {
	if in.skip == nil {
		in.skip, in.seen = map[sourcePartition]int64{}, map[sourcePartition]int64{}
	}
	for _, o := range offsets {
		k := in.skipKey(o.Source, o.Partition)
		in.skip[k] = max(in.skip[k], o.Next)
	}
	in.late = len(offsets) > 0
}

// wholeSource stands for every partition of a source with source-wide
// offsets in the keys of inputStream.skip.
const wholeSource = math.MinInt32

// skipKey returns the key of the offsets to skip below of a record of
// source's partition.
func (in *inputStream[T]) skipKey(source string, partition int32) sourcePartition {
	if in.wide {
		partition = wholeSource
	}
	return sourcePartition{source, partition}
}

// skips reports that the record of origin o is below the offsets a
// restored state had counted up to, and notes what it tells of them.
func (in *inputStream[T]) skips(o *Origin) bool {
	k := in.skipKey(o.Source, o.Partition)
	next, ok := in.skip[k]
	if !ok {
		return false
	}
	if s, had := in.seen[k]; !had || o.Offset > s {
		in.seen[k] = o.Offset
	}
	switch {
	case o.Offset < next:
		if in.wide {
			in.pass(k, false) // one below: not passed yet
		}
		c := in.skipped[k]
		if c == nil {
			if in.skipped == nil {
				in.skipped = map[sourcePartition]*skipCount{}
			}
			c = &skipCount{}
			in.skipped[k] = c
		}
		c.records++
		c.below = next
		if c.records == next+1 {
			// More records below next than offsets: they repeat.
			in.logger.Warn("more records skipped as a restored state had counted them than there are offsets below those restored: the source's offsets are not stable across runs",
				c.attrs(k)...)
		}
		return true
	case in.wide:
		if _, seen := in.passed[k]; !seen {
			in.pass(k, true)
		}
	default:
		delete(in.skip, k) // offsets only grow: passed for good
		delete(in.seen, k)
	}
	return false
}

// skipCount counts the records of a source partition dropped as a restored
// state had counted them.
type skipCount struct {
	records int64
	below   int64 // the restored offset
	logged  bool  // how many: once the source has read past below, or as the run ends
}

func (c *skipCount) attrs(k sourcePartition) []any {
	attrs := []any{"source", k.source}
	if k.partition != wholeSource {
		attrs = append(attrs, "partition", k.partition)
	}
	return append(attrs, "records", c.records, "below", c.below)
}

func (in *inputStream[T]) logSkipped(all bool) {
	for k, c := range in.skipped {
		if _, skipping := in.skip[k]; c.logged || skipping && !all {
			continue
		}
		c.logged = true
		in.logger.Info("records skipped as a restored state had counted them", c.attrs(k)...)
	}
}

func (in *inputStream[T]) pass(k sourcePartition, passed bool) {
	if in.passed == nil {
		in.passed = map[sourcePartition]bool{}
	}
	in.passed[k] = passed
}

// dropSkipped removes from p the records a restored state has already
// counted, collected before it was restored. Their offsets are still
// committed.
func (in *inputStream[T]) dropSkipped(p *inPart[T]) {
	n := 0
	for j := range p.Origins {
		o := &p.Origins[j]
		if in.skips(o) {
			c := &p.recs[offsetIndex(p.offs, o.Source, o.Partition)]
			c.records--
			c.skipped++
			continue
		}
		p.Values[n], p.Origins[n] = p.Values[j], *o
		n++
	}
	clear(p.Values[n:])
	p.Values, p.Origins = p.Values[:n], p.Origins[:n]
}

func (in *inputStream[T]) forget(lost []int32) {
	if in.wide {
		return // the offsets are the source's, not the partitions'
	}
	for k := range in.skip {
		if slices.Contains(lost, k.partition) {
			delete(in.skip, k)
			delete(in.seen, k)
		}
	}
	for k, c := range in.skipped {
		if slices.Contains(lost, k.partition) {
			if !c.logged {
				in.logger.Info("records skipped as a restored state had counted them", c.attrs(k)...)
			}
			delete(in.skipped, k)
		}
	}
}

// endedBelow implements input. A source partition of which nothing was
// read is not one: a run may go on from the state of another input (the
// next file of a series).
func (in *inputStream[T]) endedBelow() error {
	for k, next := range in.skip {
		seen, ok := in.seen[k]
		if !ok || seen+1 >= next {
			continue
		}
		part := ""
		if k.partition != wholeSource {
			part = " partition " + itoa(k.partition)
		}
		return fmt.Errorf("stream: source %s%s ended at offset %d, below %d, up to which the restored state had counted its records: the input is not the one checkpointed (replaced, or cut shorter); discard the checkpoint to count it anew", k.source, part, seen, next)
	}
	return nil
}

// batchOffsets returns the next offset of every source partition of the
// records of parts, in the order first seen, partition by partition, and
// how many records of each parts holds and dropped.
func batchOffsets[T any](parts []*inPart[T]) ([]Offset, []recordCount) {
	var (
		offsets []Offset
		counts  []recordCount
	)
	for _, p := range parts {
		for k, o := range p.offs {
			i := offsetIndex(offsets, o.Source, o.Partition)
			if i < 0 {
				offsets = append(offsets, o)
				counts = append(counts, p.recs[k])
				continue
			}
			offsets[i].Next = max(offsets[i].Next, o.Next)
			counts[i].records += p.recs[k].records
			counts[i].skipped += p.recs[k].skipped
		}
	}
	return offsets, counts
}
