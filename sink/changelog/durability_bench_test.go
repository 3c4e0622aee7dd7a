package changelog_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink/changelog"
	"github.com/sluicehq/sluice/sink/txn"
	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/checkpoint"
)

// topicLog is an in-memory keyed topic of 4 partitions, read once.
type topicLog struct {
	recs [4][]stream.Pair[int64, int64]
	next [4]int
}

func (l *topicLog) Poll(_ context.Context, buf []stream.Record[stream.Pair[int64, int64]]) (int, error) {
	n := 0
	for p := range l.recs {
		for n < len(buf) && l.next[p] < len(l.recs[p]) {
			buf[n] = stream.Record[stream.Pair[int64, int64]]{Value: l.recs[p][l.next[p]],
				Origin: stream.Origin{Source: "events", Partition: int32(p), Offset: int64(l.next[p])}}
			l.next[p]++
			n++
		}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// durabilityKinds are the variants of the durability benchmarks.
var durabilityKinds = []string{"none", "checkpoint", "changelog", "exactly-once"}

// runDurable runs the running-totals pipeline over l in batches of batch
// records, with the durable state of kind; round names a fresh topic.
func runDurable(b *testing.B, broker *kafkatest.Broker, kind string, round int, l *topicLog, batch int) {
	b.StopTimer()
	opts := []stream.Option{stream.Interval(0), stream.MaxRecords(batch)}
	var closers []func() error
	switch kind {
	case "checkpoint":
		store, err := checkpoint.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		closers = append(closers, store.Close)
		opts = append(opts, stream.WithStore(store))
	case "changelog", "exactly-once":
		cfg := changelog.Config{Brokers: broker.Addrs(), Topic: fmt.Sprintf("totals-%s-%d", kind, round), Partitions: 4}
		if kind == "exactly-once" {
			tx, err := txn.New(txn.Config{Brokers: broker.Addrs(), ID: fmt.Sprintf("bench-%d", round)})
			if err != nil {
				b.Fatal(err)
			}
			defer tx.Close()
			cfg.Transaction = tx
			opts = append(opts, stream.WithTransaction(tx))
		}
		store, err := changelog.NewKafka(cfg)
		if err != nil {
			b.Fatal(err)
		}
		closers = append(closers, store.Close)
		opts = append(opts, stream.WithStore(store))
	}
	p := stream.NewPipeline(opts...)
	totals := stream.UpdateStateByKey(stream.Keyed(stream.From(p, l)), func(_ int64, vs []int64, s int64, _ bool) (int64, bool) {
		for _, v := range vs {
			s += v
		}
		return s, true
	}).Named("totals")
	stream.ForEachBatch(totals, func(context.Context, *stream.Batch[stream.Pair[int64, int64]]) error { return nil })
	b.StartTimer()
	if err := p.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	for _, c := range closers {
		c()
	}
	b.StartTimer()
}

// newTopicLog returns events events over users users, keyed into 4
// partitions.
func newTopicLog(events, users int) *topicLog {
	l := &topicLog{}
	for i := range events {
		u := int64(i*7919) % int64(users)
		l.recs[u%4] = append(l.recs[u%4], stream.KV(u, int64(1+i%3)))
	}
	return l
}

// BenchmarkDurability compares the running-totals pipeline with no
// durable state, with a checkpoint directory, with a Kafka changelog and
// with the changelog in a Kafka transaction per batch (exactly once), on
// the embedded broker: 1M events over 100k users, batches of 100k back to
// back, a checkpoint after every batch. Run it with
//
//	go test -run '^$' -bench 'Durability$' -benchtime 3x ./sink/changelog
func BenchmarkDurability(b *testing.B) {
	const events, users, batch = 1_000_000, 100_000, 100_000
	for _, kind := range durabilityKinds {
		b.Run(kind, func(b *testing.B) {
			broker, err := kafkatest.Start(kafkatest.Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer broker.Close()
			b.ReportAllocs()
			round := 0
			for b.Loop() {
				b.StopTimer()
				round++
				l := newTopicLog(events, users)
				b.StartTimer()
				runDurable(b, broker, kind, round, l, batch)
			}
			b.ReportMetric(float64(events)*float64(round)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkDurabilityAtInterval measures what a batch costs at the
// example's default interval (3 s): batches of what arrives in 3 s at a
// given input rate, each processed and made durable, reported as the
// milliseconds a batch takes and the share of the 3 s interval that is.
// The difference from "none" is the cost of durability at that rate.
//
//	go test -run '^$' -bench DurabilityAtInterval -benchtime 3x ./sink/changelog
func BenchmarkDurabilityAtInterval(b *testing.B) {
	const interval, batches = 3 * time.Second, 10
	for _, rate := range []struct {
		name         string
		perSec, user int
	}{
		{"1k-per-s-9k-users", 1_000, 9_000},       // the example's built-in producer
		{"30k-per-s-100k-users", 30_000, 100_000}, // the original's data set, streamed
	} {
		for _, kind := range durabilityKinds {
			b.Run(rate.name+"/"+kind, func(b *testing.B) {
				broker, err := kafkatest.Start(kafkatest.Config{})
				if err != nil {
					b.Fatal(err)
				}
				defer broker.Close()
				batch := rate.perSec * int(interval/time.Second)
				round := 0
				for b.Loop() {
					b.StopTimer()
					round++
					l := newTopicLog(batch*batches, rate.user)
					b.StartTimer()
					runDurable(b, broker, kind, round, l, batch)
				}
				perBatch := b.Elapsed() / time.Duration(round*batches)
				b.ReportMetric(float64(perBatch)/float64(time.Millisecond), "ms/batch")
				b.ReportMetric(100*float64(perBatch)/float64(interval), "%interval")
			})
		}
	}
}
