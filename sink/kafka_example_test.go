package sink_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/stream"
)

// A sink that publishes popular users as the original pipeline did: key
// popular_<unix seconds>, value the JSON pair [user_id, score]. The
// example runs its own broker in the process.
func ExampleNewKafka() {
	broker, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"popular_users": 1}})
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()

	type user struct{ ID, Score int64 }
	now := time.Unix(1700000000, 0)
	out, err := sink.NewKafka(sink.KafkaConfig{Brokers: broker.Addrs(), Topic: "popular_users"},
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

	recs, err := broker.Records(context.Background(), "popular_users")
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range recs {
		fmt.Printf("%s %s\n", r.Key, r.Value)
	}
	// Output:
	// popular_1700000000 [1042, 17]
	// popular_1700000000 [2001, 23]
}
