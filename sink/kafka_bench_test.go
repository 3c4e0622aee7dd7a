package sink_test

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/stream"
)

// BenchmarkKafkaWrite writes batches of 10,000 popular users to a broker in
// this process: through sink.Kafka (one produce request per batch),
// idempotent as by default or not, and Async then flushed as the example
// runs it; and through sarama's SyncProducer.SendMessages with the
// default's settings, sarama's way to deliver a whole batch, for a
// reference measured in the same run. cpu-ns/msg is the process's CPU time
// (the client's and the broker's) per message.
func BenchmarkKafkaWrite(b *testing.B) {
	const n = 10_000
	vals := make([]int, n)
	for i := range vals {
		vals[i] = 1000 + i
	}
	batch := &stream.Batch[int]{Partitions: []stream.Partition[int]{{Values: vals}}}
	// As the example writes them: the batch's key and header, shared.
	key := []byte("popular_1700000000")
	headers := []sink.Header{{Key: "batch", Value: []byte("1700000000123456789")}}
	encode := func(v int) (sink.Message, error) {
		return sink.Message{Key: key, Value: []byte("[" + strconv.Itoa(v) + ", 42]"), Headers: headers}, nil
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
		name  string
		cfg   *sarama.Config
		async bool
	}{{"Write", nil, false}, {"Write/not-idempotent", notIdempotent, false}, {"Write/async-flushed", nil, true}} {
		b.Run(tc.name, func(b *testing.B) {
			broker := startBroker(b, map[string]int32{"out": 4})
			k, err := sink.NewKafkaMessages(sink.KafkaConfig{Brokers: broker.Addrs(), Topic: "out", Sarama: tc.cfg, Async: tc.async}, encode)
			require.NoError(b, err)
			defer k.Close()
			b.ReportAllocs()
			start, cpu := time.Now(), processCPU()
			for b.Loop() {
				require.NoError(b, k.Write(context.Background(), batch))
				require.NoError(b, k.Flush(context.Background()))
			}
			reportRates(b, n, start, cpu)
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
		start, cpu := time.Now(), processCPU()
		for b.Loop() {
			msgs := make([]*sarama.ProducerMessage, 0, n)
			for _, v := range vals {
				m, _ := encode(v)
				msgs = append(msgs, &sarama.ProducerMessage{Topic: "out", Key: sarama.ByteEncoder(m.Key), Value: sarama.ByteEncoder(m.Value),
					Headers: []sarama.RecordHeader{{Key: []byte(m.Headers[0].Key), Value: m.Headers[0].Value}}})
			}
			require.NoError(b, p.SendMessages(msgs))
		}
		reportRates(b, n, start, cpu)
	})
}

// reportRates reports the records/s and CPU time per message of b.N
// batches of n messages since start and cpu.
func reportRates(b *testing.B, n int, start time.Time, cpu time.Duration) {
	msgs := float64(n * b.N)
	b.ReportMetric(msgs/time.Since(start).Seconds(), "records/s")
	b.ReportMetric(float64(processCPU()-cpu)/msgs, "cpu-ns/msg")
}

// processCPU returns the CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
