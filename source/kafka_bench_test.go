package source_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// BenchmarkKafkaConsume reads the same records from a broker in this
// process, as a new consumer group each time: through source.Kafka into a
// pipeline that counts them, and with a bare sarama consumer group that
// counts them in ConsumeClaim, the least a sarama consumer can do.
//
// records/s is measured from the start to the moment the last record is
// counted: joining the group is in it, leaving is not (an idle consumer
// takes up to Consumer.MaxWaitTime to stop, in both cases). A pipeline
// counts the last records when the batch that holds them is cut, on its
// interval: half an interval later on average. The shared machines this
// runs on are noisy, so "versus" runs both one after the other in each
// iteration, with a 10ms interval, and reports their ratio as well.
func BenchmarkKafkaConsume(b *testing.B) {
	const (
		partitions = 4
		records    = 500_000
	)
	broker := startBroker(b, map[string]int32{"bench": partitions})
	value := []byte(`{"user_id": 12345, "activity": "profile.picture.like"}`)
	for from := 0; from < records; from += 50_000 {
		recs := make([]kafkatest.Record, 50_000)
		for i := range recs {
			recs[i] = kafkatest.Record{Partition: int32(from+i) % partitions, Key: []byte(strconv.Itoa(from + i)), Value: value}
		}
		require.NoError(b, broker.Produce("bench", recs...))
	}
	group := 0
	nextGroup := func() string { group++; return "bench-" + strconv.Itoa(group) }

	bare := func(b *testing.B) time.Duration {
		took, err := kafkatest.CountGroup(context.Background(), broker.Addrs(), "bench", nextGroup(), benchSarama(), records)
		require.NoError(b, err)
		return took
	}
	pipeline := func(b *testing.B, buffer int, interval time.Duration, saramaFetch bool) time.Duration {
		start := time.Now()
		var counted time.Duration
		src, err := source.NewKafka(source.KafkaConfig{
			Brokers: broker.Addrs(), Topic: "bench", Group: nextGroup(), Buffer: buffer, Sarama: benchSarama(),
			Logger: testLog(b), SaramaFetch: saramaFetch,
		})
		require.NoError(b, err)
		p := stream.NewPipeline(stream.Interval(interval))
		ctx, cancel := context.WithCancel(context.Background())
		n := 0
		stream.ForEachBatch(stream.From(p, src), func(_ context.Context, batch *stream.Batch[source.Message]) error {
			if n += batch.Len(); n >= records {
				counted = time.Since(start)
				cancel()
			}
			return nil
		})
		require.NoError(b, p.Run(ctx))
		require.Equal(b, records, n)
		return counted
	}
	rate := func(d time.Duration, n int) float64 { return float64(records*n) / d.Seconds() }

	b.Run("sarama", func(b *testing.B) {
		b.ReportAllocs()
		var d time.Duration
		for b.Loop() {
			d += bare(b)
		}
		b.ReportMetric(rate(d, b.N), "records/s")
	})
	for _, cfg := range []struct {
		name        string
		buffer      int
		interval    time.Duration
		saramaFetch bool
	}{
		{"source", 0, 50 * time.Millisecond, false},
		{"source/buffer=4096", 4096, 50 * time.Millisecond, false},
		{"source/interval=10ms", 0, 10 * time.Millisecond, false},
		{"source/sarama-fetch", 0, 50 * time.Millisecond, true},
	} {
		b.Run(cfg.name, func(b *testing.B) {
			b.ReportAllocs()
			var d time.Duration
			for b.Loop() {
				d += pipeline(b, cfg.buffer, cfg.interval, cfg.saramaFetch)
			}
			b.ReportMetric(rate(d, b.N), "records/s")
		})
	}
	b.Run("versus", func(b *testing.B) {
		var ds, dp time.Duration
		for b.Loop() {
			ds += bare(b)
			dp += pipeline(b, 0, 10*time.Millisecond, false)
		}
		b.ReportMetric(rate(ds, b.N), "sarama-records/s")
		b.ReportMetric(rate(dp, b.N), "source-records/s")
		b.ReportMetric(ds.Seconds()/dp.Seconds(), "source/sarama")
	})
}

// benchSarama is the client configuration of both sides of the benchmark.
// Its session timeout is sarama's default: a busy machine may not
// heartbeat often enough for the tests' short one.
func benchSarama() *sarama.Config {
	c := sarama.NewConfig()
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = false
	return c
}
