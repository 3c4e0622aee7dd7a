package source_test

import (
	"context"
	"fmt"
	"log"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// A pipeline that reads a topic as a member of a consumer group. Kafka
// partition p is partition p of every batch. The example runs its own
// broker in the process; give Brokers the addresses of yours instead.
func ExampleNewKafka() {
	broker, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"messages": 2}})
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()
	var recs []kafkatest.Record
	for i := range 6 {
		recs = append(recs, kafkatest.Record{Partition: int32(i % 2), Value: []byte(strconv.Itoa(i))})
	}
	if err := broker.Produce("messages", recs...); err != nil {
		log.Fatal(err)
	}

	src, err := source.NewKafka(source.KafkaConfig{
		Brokers: broker.Addrs(),
		Topic:   "messages",
		Group:   "example",
	})
	if err != nil {
		log.Fatal(err)
	}
	p := stream.NewPipeline(stream.Interval(100 * time.Millisecond))
	ctx, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()
	seen := 0
	stream.ForEachBatch(stream.From(p, src), func(_ context.Context, b *stream.Batch[source.Message]) error {
		for _, part := range b.Partitions {
			for i, m := range part.Values {
				fmt.Printf("partition %d: %s at %s\n", part.ID, m.Value, part.Origin(i))
			}
		}
		if seen += b.Len(); seen == len(recs) {
			stop() // the engine commits this batch, then Run returns
		}
		return nil
	})
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Unordered output:
	// partition 0: 0 at messages/0@0
	// partition 0: 2 at messages/0@1
	// partition 0: 4 at messages/0@2
	// partition 1: 1 at messages/1@0
	// partition 1: 3 at messages/1@1
	// partition 1: 5 at messages/1@2
}
