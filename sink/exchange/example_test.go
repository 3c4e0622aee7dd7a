package exchange_test

import (
	"context"
	"fmt"
	"log"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sluicehq/sluice/sink/exchange"
)

// Two processes of a group, each owning one partition of the input topic
// "messages", share their partials through the exchange topic "digests"
// and both find every partition's. Kind and Input let each leave out
// what a run of another kind, or on another input, left on the topic.
// The example runs an embedded broker (kfake) in the process.
func Example() {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "messages"))
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var xs []*exchange.Kafka
	for _, member := range []string{"host-a", "host-b"} {
		x, err := exchange.New(exchange.Config{
			Brokers: broker.ListenAddrs(), Topic: "digests", Member: member,
			Kind: "counts", Input: "messages",
		})
		if err != nil {
			log.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- x.Run(ctx) }() // reads the topic until ctx is done
		defer func() {
			cancel()
			if err := <-done; err != nil {
				log.Print(err)
			}
			x.Close()
		}()
		xs = append(xs, x)
	}

	// Each process publishes the partial of the partition it owns, every
	// batch.
	for i, x := range xs {
		p := exchange.Partial{Partition: int32(i), Value: fmt.Appendf(nil, "partial %d", i), Batch: 1}
		if err := x.Publish(ctx, []exchange.Partial{p}); err != nil {
			log.Fatal(err)
		}
	}

	// Before merging, a process waits until it has read what was
	// published before.
	if err := xs[0].Sync(ctx); err != nil {
		log.Fatal(err)
	}
	for _, p := range xs[0].Latest() {
		fmt.Printf("%s/%d from %s: %s (%s)\n", p.Input, p.Partition, p.Member, p.Value, p.Kind)
	}
	// Output:
	// messages/0 from host-a: partial 0 (counts)
	// messages/1 from host-b: partial 1 (counts)
}
