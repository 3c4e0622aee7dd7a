package sink_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/stream"
)

// BenchmarkKafkaWrite writes batches of 10,000 popular users to a broker in
// this process: through sink.Kafka (sarama's async producer, read in one
// loop), idempotent as by default or not, and through sarama's
// SyncProducer.SendMessages with the default's settings, the other way to
// wait for a whole batch.
func BenchmarkKafkaWrite(b *testing.B) {
	const n = 10_000
	vals := make([]int, n)
	for i := range vals {
		vals[i] = 1000 + i
	}
	batch := &stream.Batch[int]{Partitions: []stream.Partition[int]{{Values: vals}}}
	encode := func(v int) ([]byte, []byte, error) {
		return []byte("popular_1700000000"), []byte("[" + strconv.Itoa(v) + ", 42]"), nil
	}
	defaults := func() *sarama.Config {
		c := sarama.NewConfig()
		c.Producer.RequiredAcks = sarama.WaitForAll
		c.Producer.Idempotent = true
		c.Net.MaxOpenRequests = 1
		return c
	}
	notIdempotent := sarama.NewConfig()
	notIdempotent.Producer.RequiredAcks = sarama.WaitForAll

	for _, tc := range []struct {
		name string
		cfg  *sarama.Config
	}{{"Write", nil}, {"Write/not-idempotent", notIdempotent}} {
		b.Run(tc.name, func(b *testing.B) {
			broker := startBroker(b, map[string]int32{"out": 4})
			k, err := sink.NewKafka(sink.KafkaConfig{Brokers: broker.Addrs(), Topic: "out", Sarama: tc.cfg}, encode)
			require.NoError(b, err)
			defer k.Close()
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				require.NoError(b, k.Write(context.Background(), batch))
			}
			b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "records/s")
		})
	}
	b.Run("SendMessages", func(b *testing.B) {
		broker := startBroker(b, map[string]int32{"out": 4})
		cfg := defaults()
		cfg.Producer.Return.Successes = true
		p, err := sarama.NewSyncProducer(broker.Addrs(), cfg)
		require.NoError(b, err)
		defer p.Close()
		b.ReportAllocs()
		start := time.Now()
		for b.Loop() {
			msgs := make([]*sarama.ProducerMessage, 0, n)
			for _, v := range vals {
				key, value, _ := encode(v)
				msgs = append(msgs, &sarama.ProducerMessage{Topic: "out", Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(value)})
			}
			require.NoError(b, p.SendMessages(msgs))
		}
		b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "records/s")
	})
}
