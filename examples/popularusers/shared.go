package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/sink/exchange"
	"github.com/sluicehq/sluice/stream"
)

// syncTimeout bounds how long a batch's threshold step waits to have read
// the partials the other processes published before it. Past it, the
// threshold merges what was read, and says so in the log.
const syncTimeout = 2 * time.Second

// shared is the reduce-and-broadcast through Kafka of -digest-topic: the
// processes of a group publish the partial sketch of each partition they
// own, and each merges every partition's latest partial into its own
// threshold. Its methods run on the pipeline's run loop.
type shared[S sketch[S]] struct {
	x         *exchange.Kafka
	newSketch func() (S, error)
	log       *slog.Logger
	// owns tells whether the source still owns a partition as its partial
	// is published (source.Kafka.Owns); nil: every partition
	owns func(int32) bool
	// decoded partials of other processes, by partition, kept while
	// unchanged: a partial is decoded once, not every batch
	cache map[int32]cachedPartial[S]
	// undecodable counts the partials left out for not decoding as this
	// process's sketch; nil: not counted
	undecodable *atomic.Int64
}

type cachedPartial[S any] struct {
	offset int64
	sketch S
	// of unknown kind, and not of this process's sketch: left out; from
	// member, logged once while its partials of the partition are
	left   bool
	member string
}

// digestSink publishes the partials of a batch's partitions, but of those
// the source no longer owns: a batch that outlasted a partition's revoke
// must not publish after the partition's new owner, whose partial would
// then stand behind the stale one until its next batch.
type digestSink[S sketch[S]] struct{ sh *shared[S] }

func (d digestSink[S]) Write(ctx context.Context, b *stream.Batch[partial[S]]) error {
	var ps []exchange.Partial
	for p := range b.All() {
		if p.err != nil {
			return p.err
		}
		if d.sh.owns != nil && !d.sh.owns(p.part) {
			d.sh.log.Info("partial not published: the partition is no longer this process's", "batch", b.Info.ID, "partition", p.part)
			continue
		}
		v, err := p.sketch.MarshalBinary()
		if err != nil {
			return fmt.Errorf("encode the sketch of partition %d: %w", p.part, err)
		}
		ps = append(ps, exchange.Partial{Partition: p.part, Value: v, Batch: b.Info.ID, Time: b.Info.Time})
	}
	return d.sh.x.Publish(ctx, ps)
}

// merge returns a new sketch of this batch's partials of this process's
// partitions (own) and the latest partial of every other partition, once
// the partials published before now are read (or syncTimeout has
// passed), merged in partition order.
func (sh *shared[S]) merge(own []partial[S], batch int64) (S, error) {
	all, err := sh.newSketch()
	if err != nil {
		return all, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	if err := sh.x.Sync(ctx); err != nil {
		sh.log.Warn("digest exchange not read to its end: the threshold merges the partials read so far", "batch", batch, "err", err)
	}
	parts := map[int32]S{}
	for _, p := range own {
		parts[p.part] = p.sketch // this batch's own partial is fresher
	}
	for _, p := range sh.x.Latest() {
		if _, ok := parts[p.Partition]; ok {
			continue
		}
		c, ok := sh.cache[p.Partition]
		if !ok || c.offset != p.Offset {
			d, err := sh.newSketch()
			if err != nil {
				return all, err
			}
			if err := d.UnmarshalBinary(p.Value); err != nil {
				// Bad input, as a record that does not decode: left out,
				// logged once for a run of them by one publisher, and the
				// threshold goes on with the others. A partial written
				// before partials said their kind is most likely of the
				// other sketch (the exchange leaves out those that say
				// they are); one of this kind that does not decode is
				// corrupt, or of an encoding this build does not know.
				if !ok || !c.left || c.member != p.Member {
					msg := "digest exchange: a partial of this process's sketch does not decode: left out until its owner publishes again"
					if p.Kind == "" {
						msg = "digest exchange: a partial of unknown kind does not decode as this process's sketch: left out until its owner publishes again"
					}
					sh.log.Warn(msg, "partition", p.Partition, "origin", fmt.Sprintf("%s/0@%d", sh.x.Topic(), p.Offset), "member", p.Member, "batch", p.Batch, "err", err)
				}
				sh.cache[p.Partition] = cachedPartial[S]{offset: p.Offset, left: true, member: p.Member}
				if sh.undecodable != nil {
					sh.undecodable.Add(1)
				}
				continue
			}
			c = cachedPartial[S]{offset: p.Offset, sketch: d}
			sh.cache[p.Partition] = c
		}
		if !c.left {
			parts[p.Partition] = c.sketch
		}
	}
	for _, id := range slices.Sorted(maps.Keys(parts)) {
		if err := all.Merge(parts[id]); err != nil {
			return all, fmt.Errorf("merge the partial of partition %d: %w", id, err)
		}
	}
	return all, nil
}

// memberName names this process in the digest topic, for the others'
// logs.
func memberName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}
