package changelog_test

import (
	"context"
	"io"
	"testing"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink/changelog"
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

// BenchmarkDurability compares the running-totals pipeline with no
// durable state, with a checkpoint directory and with a Kafka changelog on
// the embedded broker: 1M events over 100k users, batches of 100k, a
// checkpoint after every batch. Run it with
//
//	go test -run '^$' -bench Durability -benchtime 3x ./sink/changelog
func BenchmarkDurability(b *testing.B) {
	const events, users, batch = 1_000_000, 100_000, 100_000
	mkLog := func() *topicLog {
		l := &topicLog{}
		for i := range events {
			u := int64(i*7919) % users
			l.recs[u%4] = append(l.recs[u%4], stream.KV(u, int64(1+i%3)))
		}
		return l
	}
	for _, kind := range []string{"none", "checkpoint", "changelog"} {
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
				l := mkLog()
				opts := []stream.Option{stream.Interval(0), stream.MaxRecords(batch)}
				var closeStore func() error
				switch kind {
				case "checkpoint":
					store, err := checkpoint.Open(b.TempDir())
					if err != nil {
						b.Fatal(err)
					}
					opts = append(opts, stream.WithStore(store))
				case "changelog":
					store, err := changelog.NewKafka(changelog.Config{Brokers: broker.Addrs(), Topic: "totals-" + string(rune('a'+round)), Partitions: 4})
					if err != nil {
						b.Fatal(err)
					}
					closeStore = store.Close
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
				if closeStore != nil {
					closeStore()
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(events)*float64(round)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
