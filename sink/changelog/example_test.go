package changelog_test

import (
	"context"
	"fmt"
	"log"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluicehq/sluice/sink/changelog"
	"github.com/sluicehq/sluice/stream"
)

// A process checkpoints the state of its partitions; another, given
// partition 0 in a rebalance, restores it. In a pipeline the engine makes
// these calls (stream.WithStore); the example runs an embedded broker
// (kfake) in the process.
func ExampleNewKafka() {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()
	cfg := changelog.Config{Brokers: broker.ListenAddrs(), Topic: "popular-state-changelog", Partitions: 2}
	ctx := context.Background()

	first, err := changelog.NewKafka(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer first.Close()
	if _, err := first.Restore(ctx, []int32{0, 1}, func(stream.Entry) error { return nil }); err != nil {
		log.Fatal(err)
	}
	err = first.Checkpoint(ctx, &stream.Changes{
		Batch:   stream.Info{ID: 1},
		Offsets: []stream.Offset{{Source: "messages", Partition: 0, Next: 3}, {Source: "messages", Partition: 1, Next: 5}},
		Entries: []stream.Entry{
			{Op: "totals", Partition: 0, Key: []byte("user 1042"), Value: []byte("17")},
			{Op: "totals", Partition: 1, Key: []byte("user 2001"), Value: []byte("23")},
		},
	})
	if err != nil {
		log.Fatal(err)
	}

	second, err := changelog.NewKafka(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer second.Close()
	offsets, err := second.Restore(ctx, []int32{0}, func(e stream.Entry) error {
		fmt.Printf("%s, partition %d: %s = %s\n", e.Op, e.Partition, e.Key, e.Value)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("resume %s/%d at %d\n", offsets[0].Source, offsets[0].Partition, offsets[0].Next)
	// Output:
	// totals, partition 0: user 1042 = 17
	// resume messages/0 at 3
}
