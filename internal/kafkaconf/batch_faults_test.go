package kafkaconf_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/internal/kafkatest"
)

func faultCluster(t *testing.T, n int, topic string, parts int32) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(n))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.NoError(t, c.CreateTopic(topic, parts, nil))
	return c
}

// Leaders move while batches are sent: every message delivered once, each
// key's messages in order.
func TestBatchProducerLeadersMoveMidSend(t *testing.T) {
	c := faultCluster(t, 3, "out", 6)
	cfg := kafkaconf.Producer(nil)
	cfg.Producer.Retry.Max = 50
	cfg.Producer.Retry.Backoff = 5 * time.Millisecond
	cfg.Producer.MaxMessageBytes = 2000 // several batches per partition
	client, err := sarama.NewClient(c.ListenAddrs(), cfg)
	require.NoError(t, err)
	defer client.Close()
	p, err := kafkaconf.NewBatchProducer(client, "out")
	require.NoError(t, err)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				c.ShufflePartitionLeaders()
			}
		}
	})
	want := map[string][]string{}
	for s := range 40 {
		msgs := make([]*sarama.ProducerMessage, 300)
		for i := range msgs {
			v := s*300 + i
			k := fmt.Sprintf("k%d", v%17)
			msgs[i] = &sarama.ProducerMessage{Topic: "out", Key: sarama.StringEncoder(k), Value: sarama.StringEncoder(fmt.Sprint(v))}
			want[k] = append(want[k], fmt.Sprint(v))
		}
		failed := p.Send(msgs)
		require.Empty(t, failed, "send %d", s)
	}
	close(stop)
	wg.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recs, err := kafkatest.Read(ctx, c.ListenAddrs(), "out", sarama.ReadUncommitted)
	require.NoError(t, err)
	got := map[string][]string{}
	for _, r := range recs {
		got[string(r.Key)] = append(got[string(r.Key)], string(r.Value))
	}
	require.Equal(t, want, got)
}

// metadataControl answers every metadata request of c with the leaders
// leaders() returns (-1: none, LEADER_NOT_AVAILABLE), for topic.
func metadataControl(t *testing.T, c *kfake.Cluster, topic string, leaders func() []int32) {
	t.Helper()
	addrs := c.ListenAddrs()
	c.ControlKey(int16(kmsg.Metadata), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := r.(*kmsg.MetadataRequest)
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		resp.Version = req.Version
		for i, a := range addrs {
			host, port, _ := net.SplitHostPort(a)
			p, _ := strconv.Atoi(port)
			b := kmsg.NewMetadataResponseBroker()
			b.NodeID, b.Host, b.Port = int32(i), host, int32(p)
			resp.Brokers = append(resp.Brokers, b)
		}
		resp.ControllerID = 0
		st := kmsg.NewMetadataResponseTopic()
		st.Topic = kmsg.StringPtr(topic)
		for p, l := range leaders() {
			sp := kmsg.NewMetadataResponseTopicPartition()
			sp.Partition, sp.Leader, sp.LeaderEpoch = int32(p), l, 1
			if l < 0 {
				sp.ErrorCode = 5 // LEADER_NOT_AVAILABLE
			} else {
				sp.Replicas, sp.ISR = []int32{l}, []int32{l}
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
		return resp, nil, true
	})
}

// A partition's batches go to one leader per attempt. Here partition 0's
// leader moved from broker 0 to broker 1 before the send; the client's
// metadata still says broker 0; partition 1 has no leader in it, so that
// looking its leader up refreshes the metadata in the middle of attempt's
// lookups. Partition 0's first batch goes to broker 0 (NOT_LEADER), its
// second, in the same attempt, to broker 1, which stores it; the first is
// stored after it, on the retry.
func oneLeaderPerPartition(t *testing.T, idempotent bool) {
	c := faultCluster(t, 2, "out", 2)
	require.NoError(t, c.MoveTopicPartition("out", 0, 1))
	require.NoError(t, c.MoveTopicPartition("out", 1, 1))
	var fresh atomic.Bool
	metadataControl(t, c, "out", func() []int32 {
		if fresh.Load() {
			return []int32{1, 1}
		}
		return []int32{0, -1} // stale: partition 0 on broker 0, partition 1 electing
	})

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_1_0_0
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.MaxMessageBytes = 300 // about 4 messages per batch
	cfg.Producer.Retry.Backoff = 10 * time.Millisecond
	cfg.Metadata.Retry.Max = 0
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Idempotent = idempotent
	client, err := sarama.NewClient(c.ListenAddrs(), cfg)
	require.NoError(t, err)
	defer client.Close()
	p, err := kafkaconf.NewBatchProducer(client, "out")
	require.NoError(t, err)
	fresh.Store(true) // what the next refresh finds

	var msgs []*sarama.ProducerMessage
	var want []string
	add := func(part int32, v string) {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: "out", Partition: part, Key: sarama.StringEncoder("k"), Value: sarama.StringEncoder(v)})
		if part == 0 {
			want = append(want, v)
		}
	}
	for i := range 3 {
		add(0, fmt.Sprintf("v%02d", i))
	}
	add(1, "other") // partition 1's batch: between partition 0's two batches
	for i := 3; i < 12; i++ {
		add(0, fmt.Sprintf("v%02d", i))
	}
	failed := p.Send(msgs)
	for _, f := range failed {
		t.Logf("failed: partition %d %v: %v", f.Msg.Partition, f.Msg.Value, f.Err)
	}
	require.Empty(t, failed)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c.DropControl() // (no-op outside a control function)
	recs, err := kafkatest.Read(ctx, c.ListenAddrs(), "out", sarama.ReadUncommitted)
	require.NoError(t, err)
	var got []string
	for _, r := range recs {
		if r.Partition == 0 {
			got = append(got, string(r.Value))
		}
	}
	require.Equal(t, want, got, "partition 0's messages in the order sent")
}

func TestBatchProducerOnePartitionOneLeaderInOrder(t *testing.T)    { oneLeaderPerPartition(t, false) }
func TestBatchProducerOnePartitionOneLeaderIdempotent(t *testing.T) { oneLeaderPerPartition(t, true) }

// With sarama's hash partitioner, a message without a key goes to a
// partition that has a leader (sarama's producer picks among
// WritablePartitions when MessageRequiresConsistency is false). Partition 1
// has no leader (its only replica's broker is down).
func TestBatchProducerUnkeyedAvoidsLeaderlessPartitions(t *testing.T) {
	c := faultCluster(t, 2, "out", 2)
	require.NoError(t, c.MoveTopicPartition("out", 0, 0))
	metadataControl(t, c, "out", func() []int32 { return []int32{0, -1} })
	cfg := kafkaconf.Producer(nil)
	cfg.Producer.Retry.Max = 1
	cfg.Producer.Retry.Backoff = 10 * time.Millisecond
	cfg.Metadata.Retry.Max = 0
	client, err := sarama.NewClient(c.ListenAddrs(), cfg)
	require.NoError(t, err)
	defer client.Close()
	p, err := kafkaconf.NewBatchProducer(client, "out")
	require.NoError(t, err)
	msgs := make([]*sarama.ProducerMessage, 20)
	for i := range msgs {
		msgs[i] = &sarama.ProducerMessage{Topic: "out", Value: sarama.StringEncoder(fmt.Sprint(i))}
	}
	failed := p.Send(msgs)
	if len(failed) > 0 {
		t.Errorf("%d of %d unkeyed messages failed, first to partition %d: %v", len(failed), len(msgs), failed[0].Msg.Partition, failed[0].Err)
	}
}
