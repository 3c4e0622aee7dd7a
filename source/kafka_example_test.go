package source_test

import (
	"context"
	"fmt"
	"log"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// A pipeline that reads a topic as a member of a consumer group. Kafka
// partition p is partition p of every batch. The example runs an embedded
// broker (kfake) in the process; give Brokers the addresses of yours
// instead.
func ExampleNewKafka() {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "messages"))
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()

	// Six records, alternately to partitions 0 and 1.
	cfg := sarama.NewConfig()
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.Return.Successes = true
	producer, err := sarama.NewSyncProducer(broker.ListenAddrs(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	const records = 6
	for i := range records {
		msg := &sarama.ProducerMessage{Topic: "messages", Partition: int32(i % 2), Value: sarama.StringEncoder(strconv.Itoa(i))}
		if _, _, err := producer.SendMessage(msg); err != nil {
			log.Fatal(err)
		}
	}
	if err := producer.Close(); err != nil {
		log.Fatal(err)
	}

	src, err := source.NewKafka(source.KafkaConfig{
		Brokers: broker.ListenAddrs(),
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
		if seen += b.Len(); seen == records {
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
