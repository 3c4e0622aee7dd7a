package kafkaconf_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/internal/kafkatest"
)

// Near the request size limit, a partition's batch that does not fit in
// the request waits for the next one, and so do the partition's batches
// after it, however small: they reach the broker in order, with or
// without idempotence (which would refuse them out of order, every time).
func TestBatchesOfAPartitionStayInOrderAcrossRequests(t *testing.T) {
	for _, idempotent := range []bool{false, true} {
		t.Run(fmt.Sprintf("idempotent=%v", idempotent), func(t *testing.T) { splitOrder(t, idempotent) })
	}
}

func splitOrder(t *testing.T, idempotent bool) {
	old := sarama.MaxRequestSize
	sarama.MaxRequestSize = 60_000
	t.Cleanup(func() { sarama.MaxRequestSize = old })

	c := faultCluster(t, 1, "out", 2)
	cfg := kafkaconf.Producer(nil)
	cfg.Producer.Idempotent = idempotent
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.MaxMessageBytes = 25_000
	cfg.Producer.Retry.Backoff = time.Millisecond
	client, err := sarama.NewClient(c.ListenAddrs(), cfg)
	require.NoError(t, err)
	defer client.Close()
	p, err := kafkaconf.NewBatchProducer(client, "out")
	require.NoError(t, err)

	var msgs []*sarama.ProducerMessage
	var want []string
	add := func(part int32, v string) {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: "out", Partition: part, Value: sarama.StringEncoder(v)})
		if part == 0 {
			want = append(want, v[:6])
		}
	}
	big := strings.Repeat("x", 24_900)
	add(1, "p1-000"+big) // partition 1's batch, ~24 KB
	add(0, "p0-000"+big) // partition 0's first batch, ~24 KB: 48 KB > 60 KB-10 KB, deferred
	add(0, "p0-001")     // partition 0's second batch, small: fits in the first request
	failed := p.Send(msgs)
	for _, f := range failed {
		t.Errorf("failed: partition %d: %v", f.Msg.Partition, f.Err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := kafkatest.Read(ctx, c.ListenAddrs(), "out", sarama.ReadUncommitted)
	require.NoError(t, err)
	var got []string
	for _, r := range recs {
		if r.Partition == 0 {
			got = append(got, string(r.Value)[:6])
		}
	}
	require.Equal(t, want, got, "partition 0 in the order sent")
}
