package txn_test

import (
	"context"
	"encoding/binary"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink/txn"
)

// BenchmarkTransaction writes a transaction the size of a changelog
// checkpoint of the popular-users pipeline: 60,000 records of about 20
// bytes over 4 partitions, then commits it. Run it with
//
//	go test -run '^$' -bench Transaction ./sink/txn
func BenchmarkTransaction(b *testing.B) {
	const records, partitions = 60_000, 4
	broker, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"out": partitions}})
	if err != nil {
		b.Fatal(err)
	}
	defer broker.Close()
	p, err := txn.New(txn.Config{Brokers: broker.Addrs(), ID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	msgs := make([]*sarama.ProducerMessage, records)
	fill := func() {
		for i := range msgs {
			key := binary.BigEndian.AppendUint64([]byte{1}, uint64(i))
			msgs[i] = &sarama.ProducerMessage{Topic: "out", Partition: int32(i % partitions),
				Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(binary.AppendVarint(nil, int64(i)))}
		}
	}
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		b.StopTimer()
		fill()
		b.StartTimer()
		if err := p.Begin(ctx); err != nil {
			b.Fatal(err)
		}
		if err := p.SendToPartitions(ctx, msgs); err != nil {
			b.Fatal(err)
		}
		if err := p.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*records), "ns/record")
	// The process's CPU, the broker's included: steadier than the time on
	// a shared machine.
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(b.N*records), "cpu-ns/record")
}

// processCPU returns the CPU time the process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
