package main

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/digest"
	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/sink/exchange"
	"github.com/sluicehq/sluice/stream"
)

// total is a user id and the user's running score.
type total = stream.Pair[int64, int64]

// cut is what a batch's reduce-and-broadcast step finds over the totals of
// all users: the threshold above which a user is popular.
type cut struct {
	Batch     int64
	Time      time.Time // when the batch was cut
	Quantile  float64   // -limit
	Threshold float64   // the Quantile-quantile of the totals; NaN with no users
	Users     uint64    // users in the state, as many as totals in the sketch
	Records   int       // input records of the batch
}

// sketch is what the pipeline needs of a quantile sketch: digest.TDigest
// and digest.Counts both are one.
type sketch[S any] interface {
	digest.Sketch[S]
	Count() uint64
	MarshalBinary() ([]byte, error)
	UnmarshalBinary([]byte) error
}

// mover is a sketch whose values can be moved and removed, as
// digest.Counts: popularUsers keeps one per state partition up to date as
// the totals change, instead of building it from every total each batch.
type mover interface {
	AddInt(v int64) error
	Move(from, to int64) error
	Remove(v int64) error
}

// partial is a sketch on its way through the reduce, with the first error
// met in merging it: the reduce function cannot return one.
type partial[S any] struct {
	sketch S
	part   int32 // the state partition of the sketch, before any merge
	kept   bool  // sketch is a partition's kept sketch: merge it, never into it
	err    error
}

// ownSketch returns p's sketch, or a copy of it when it is a kept one, to
// merge into.
func ownSketch[S sketch[S]](p partial[S], newSketch func() (S, error)) (S, error) {
	if !p.kept {
		return p.sketch, nil
	}
	c, err := newSketch()
	if err != nil {
		return c, err
	}
	return c, c.Merge(p.sketch)
}

// keptSketches are the sketches of the state partitions, one each, kept by
// the state's observer (stream.Observe) as the totals change: moved, added
// and removed, whether by an update, a restore or a partition lost. A
// partition gained again starts a new one.
type keptSketches[S sketch[S]] struct {
	newSketch func() (S, error)
	mu        sync.Mutex // made on the run loop, read by the sketch step
	parts     map[int32]*keptSketch[S]
}

// keptSketch is the sketch of the totals of one state partition. Only the
// partition's goroutine writes it, during the state update; the sketch
// step and the reduce read it after.
type keptSketch[S sketch[S]] struct {
	sketch S
	moves  mover // sketch
	err    error // the first error met: sketch no longer holds the totals
}

func (k *keptSketches[S]) observer(partition int32) stream.StateObserver[int64, int64] {
	s, err := k.newSketch()
	ks := &keptSketch[S]{sketch: s, err: err}
	if err == nil {
		ks.moves = any(s).(mover)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.parts[partition] = ks
	return ks
}

func (k *keptSketches[S]) of(partition int32) *keptSketch[S] {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.parts[partition]
}

// Changed implements stream.StateObserver.
func (ks *keptSketch[S]) Changed(user, old int64, hadOld bool, cur int64, hasCur bool) {
	if ks.err != nil {
		return
	}
	var err error
	switch {
	case hadOld && hasCur:
		err = ks.moves.Move(old, cur)
	case hasCur:
		err = ks.moves.AddInt(cur)
	default:
		err = ks.moves.Remove(old)
	}
	if err != nil {
		ks.err = fmt.Errorf("user %d: %w", user, err)
	}
}

// outputs are where the pipeline's results go. Nil sinks are left out.
type outputs struct {
	report      *reporter
	deadLetters stream.Sink[deadLetter]
	fileInput   bool               // origins are lines of a file
	maxBadRatio float64            // fail a batch with more bad records than this share; 0: never
	retry       retryConfig        // of the Kafka outputs
	popular     stream.Sink[total] // every popular user of every batch
	thresholds  stream.Sink[cut]   // every batch's threshold
	exchange    *exchange.Kafka    // -digest-topic: the partials of the group's other processes
	owns        func(int32) bool   // with exchange: whether the source still owns a partition; nil: all
	sketchBegun func()             // if set, told as each partition's sketch step begins (bench)
	undecodable atomic.Int64       // with exchange: the partials left out for not decoding as this process's sketch
}

// popularUsers builds the original's pipeline on raw, the stream of input
// records; event returns a record's event bytes. keyed says that raw's
// partitions already hold all events of a user each (a Kafka topic keyed by
// user id), so that nothing moves between partitions.
//
// The Spark steps of the original are marked in the comments.
func popularUsers[T any, S sketch[S]](raw *stream.Stream[T], event func(T) []byte, keyed bool,
	dec *score.Decoder, newSketch func() (S, error), limit float64, out *outputs) {
	// map: every event to (user id, score). An event that does not decode
	// goes to the dead letters instead of stopping the stream.
	scores, bad := stream.TryMap(raw, func(r T) (total, error) {
		user, points, err := dec.Score(event(r))
		return stream.KV(user, points), err
	})
	scores, bad = scores.Named("score"), bad.Named("bad")
	if keyed {
		scores = stream.Keyed(scores)
	}

	// updateStateByKey: a running total per user. Input that is not keyed
	// is first moved so that each user's scores meet in one partition.
	// (Summing a batch per user with ReduceByKey first measured no faster
	// on the original's data set, whose batches hold about one event per
	// user, and took 15% more CPU.)
	//
	// A sketch that can move values (-sketch exact) is kept per partition
	// by the state's observer as totals change, so that the sketch step
	// costs nothing per user; a t-digest cannot move a value, and is built
	// from every total each batch.
	//
	// A total that would pass math.MaxInt64 stays there, with a warning:
	// it is still the largest, and rejecting the user's later events
	// would not make it right either. (It takes over 9*10^12 events at
	// score.MaxScore.)
	var (
		kept     *keptSketches[S]
		stateOpt []stream.StateOption
	)
	if _, ok := any(*new(S)).(mover); ok {
		kept = &keptSketches[S]{newSketch: newSketch, parts: map[int32]*keptSketch[S]{}}
		stateOpt = append(stateOpt, stream.Observe(kept.observer))
	}
	totals := stream.UpdateStateByKey(scores, func(user int64, points []int64, sum int64, _ bool) (int64, bool) {
		sum, saturated := addScores(sum, points)
		if saturated {
			out.report.log.Warn("score total saturated: it stays at the largest int64", "user", user, "total", sum)
		}
		return sum, true
	}, stateOpt...).Named("totals")

	// With -digest-topic, the processes of the group share the partials.
	var sh *shared[S]
	if out.exchange != nil {
		sh = &shared[S]{x: out.exchange, newSketch: newSketch, log: out.report.log, owns: out.owns, cache: map[int32]cachedPartial[S]{}, undecodable: &out.undecodable}
	}

	// mapPartitions: a sketch of the totals of each partition, built in
	// parallel, over the whole state (every user, not only this batch's),
	// or the partition's kept sketch. Shared, an empty partition has its
	// (empty) sketch too: it replaces what the partition's previous owner
	// published.
	sketches := stream.MapPartitions(totals, func(p *stream.Partition[total]) ([]partial[S], error) {
		if out.sketchBegun != nil {
			out.sketchBegun()
		}
		if len(p.Values) == 0 && sh == nil {
			return nil, nil
		}
		if kept != nil {
			ks := kept.of(p.ID)
			switch {
			case ks == nil:
				return nil, fmt.Errorf("partition %d has no kept sketch", p.ID)
			case ks.err != nil:
				return nil, ks.err
			case ks.sketch.Count() != uint64(len(p.Values)):
				return nil, fmt.Errorf("partition %d: the kept sketch holds %d totals, the state %d", p.ID, ks.sketch.Count(), len(p.Values))
			}
			return []partial[S]{{sketch: ks.sketch, part: p.ID, kept: true}}, nil
		}
		s, err := newSketch()
		if err != nil {
			return nil, err
		}
		for _, t := range p.Values {
			if err := s.Add(float64(t.Value)); err != nil {
				return nil, fmt.Errorf("user %d: total %d: %w", t.Key, t.Value, err)
			}
		}
		return []partial[S]{{sketch: s, part: p.ID}}, nil
	}).Named("sketch")

	// reduce: merge the sketches into one, and the threshold: the -limit
	// quantile of all totals, one value per batch. A batch with no users
	// still gets one, so that every batch is reported.
	var thresholds *stream.Stream[cut]
	if sh == nil {
		// Merge leaves its argument as it was, and a's sketch is this
		// batch's own, or a copy of a kept one, so merging into it is safe.
		merged := stream.Reduce(sketches, func(a, b partial[S]) partial[S] {
			if a.err == nil && b.err != nil {
				a.err = b.err
			}
			if a.err == nil && a.kept {
				a.sketch, a.err = ownSketch(a, newSketch)
				a.kept = false
			}
			if a.err == nil {
				a.err = a.sketch.Merge(b.sketch)
			}
			return a
		}).Named("merge")
		thresholds = stream.Transform(merged, func(b *stream.Batch[partial[S]]) (*stream.Batch[cut], error) {
			c := newCut(b.Info, limit)
			for m := range b.All() {
				if m.err != nil {
					return nil, fmt.Errorf("merge sketches: %w", m.err)
				}
				s, err := ownSketch(m, newSketch)
				if err != nil {
					return nil, fmt.Errorf("merge sketches: %w", err)
				}
				c.Users, c.Threshold = s.Count(), s.Quantile(limit)
			}
			return oneCut(c), nil
		}).Named("threshold")
	} else {
		// Shared: this batch's partials of this process's partitions and
		// the latest of every other partition, merged in partition order
		// into a new sketch (so that every process, given the same
		// partials, finds the same threshold: the group's); Users stays
		// this process's own.
		thresholds = stream.Transform(sketches, func(b *stream.Batch[partial[S]]) (*stream.Batch[cut], error) {
			c := newCut(b.Info, limit)
			var own []partial[S]
			for m := range b.All() {
				if m.err != nil {
					return nil, m.err
				}
				own = append(own, m)
				c.Users += m.sketch.Count()
			}
			all, err := sh.merge(own, b.Info.ID)
			if err != nil {
				return nil, err
			}
			c.Threshold = all.Quantile(limit)
			return oneCut(c), nil
		}).Named("threshold")
	}

	// broadcast + filter: every partition keeps its users whose total is
	// strictly greater than the threshold, as the original does. Ties at
	// the threshold are never popular (see the digest package on ties).
	popular := stream.Broadcast(totals, thresholds, func(p *stream.Partition[total], c cut, ok bool) ([]total, error) {
		if !ok || c.Users == 0 {
			return nil, nil
		}
		var keep []total
		for _, t := range p.Values {
			if float64(t.Value) > c.Threshold {
				keep = append(keep, t)
			}
		}
		return keep, nil
	}).Named("popular")

	// Outputs run in the order they are added, so the report, last, sees
	// what the earlier ones noted of the batch; the batch is committed to
	// the source after all of them.
	//
	// Shared, the partials go out first.
	if sh != nil {
		stream.To(sketches, retrying[partial[S]](digestSink[S]{sh}, "digest topic", out.retry))
	}
	stream.ForEachBatch(bad, func(_ context.Context, b *stream.Batch[stream.Failure[T]]) error {
		var n badCount
		for f := range b.All() {
			origin := f.Origin.String()
			if out.fileInput {
				origin = fileOrigin(f.Origin)
			}
			n.add(origin, f.Err)
		}
		out.report.setBad(b.Info.ID, n)
		return nil
	})
	stream.To(stream.Map(bad, func(f stream.Failure[T]) deadLetter {
		return newDeadLetter(f.Origin, out.fileInput, recordKey(f.Value), event(f.Value), f.Err)
	}).Named("deadLetters"), out.deadLetters)
	// -max-bad-ratio: after the dead letters are out, so that they show
	// what failed the run.
	stream.ForEachBatch(bad, func(_ context.Context, b *stream.Batch[stream.Failure[T]]) error {
		return checkBadRatio(b.Info.ID, b.Len(), b.Info.Records, out.maxBadRatio)
	})
	stream.ForEachBatch(thresholds, func(_ context.Context, b *stream.Batch[cut]) error {
		for c := range b.All() {
			out.report.setCut(c)
		}
		return nil
	})
	if out.thresholds != nil {
		stream.To(thresholds, retrying(out.thresholds, "threshold topic", out.retry))
	}
	if out.popular != nil {
		// foreachPartition: the original publishes from every partition;
		// the Kafka sink sends a batch's messages from all partitions
		// together, in as few requests as the brokers allow.
		stream.To(popular, retrying(out.popular, "output topic", out.retry))
	}
	stream.ForEachBatch(popular, out.report.report)
}

// newCut returns the cut of the batch info at the quantile limit, with
// no threshold yet.
func newCut(info stream.Info, limit float64) cut {
	return cut{Batch: info.ID, Time: info.Time, Quantile: limit, Threshold: math.NaN(), Records: info.Records}
}

// oneCut returns a batch of c alone.
func oneCut(c cut) *stream.Batch[cut] {
	return &stream.Batch[cut]{Partitions: []stream.Partition[cut]{{Values: []cut{c}}}}
}

// byScore orders totals by score, highest first, then by user id.
func byScore(a, b total) int {
	return cmp.Or(cmp.Compare(b.Value, a.Value), cmp.Compare(a.Key, b.Key))
}
