package sink_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/stream"
)

// A sink that publishes popular users as the original pipeline did: key
// popular_<unix seconds>, value the JSON pair [user_id, score]. The
// example runs an embedded broker (kfake) in the process; give Brokers
// the addresses of yours instead.
func ExampleNewKafka() {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "popular_users"))
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()

	type user struct{ ID, Score int64 }
	now := time.Unix(1700000000, 0)
	out, err := sink.NewKafka(sink.KafkaConfig{Brokers: broker.ListenAddrs(), Topic: "popular_users"},
		func(u user) (key, value []byte, err error) {
			return fmt.Appendf(nil, "popular_%d", now.Unix()), fmt.Appendf(nil, "[%d, %d]", u.ID, u.Score), nil
		})
	if err != nil {
		log.Fatal(err)
	}
	defer out.Close()

	// A pipeline calls Write with each batch; Write returns once every
	// message is acknowledged.
	batch := &stream.Batch[user]{Partitions: []stream.Partition[user]{{Values: []user{{1042, 17}, {2001, 23}}}}}
	if err := out.Write(context.Background(), batch); err != nil {
		log.Fatal(err)
	}

	// Read the topic back.
	consumer, err := sarama.NewConsumer(broker.ListenAddrs(), sarama.NewConfig())
	if err != nil {
		log.Fatal(err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition("popular_users", 0, sarama.OffsetOldest)
	if err != nil {
		log.Fatal(err)
	}
	defer pc.Close()
	for range len(batch.Partitions[0].Values) {
		m := <-pc.Messages()
		fmt.Printf("%s %s\n", m.Key, m.Value)
	}
	// Output:
	// popular_1700000000 [1042, 17]
	// popular_1700000000 [2001, 23]
}
