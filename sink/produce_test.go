package sink_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink"
)

// Kafka error codes the broker answers with in these tests.
const (
	notLeaderForPartition = 6
	messageTooLarge       = 10
)

// valuesInOrder returns the values of topic's records, partition by
// partition, each in offset order.
func valuesInOrder(t *testing.T, b *kafkatest.Broker, topic string) map[int32][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := b.Records(ctx, topic)
	require.NoError(t, err)
	slices.SortFunc(recs, func(a, b kafkatest.Record) int { return int(a.Offset - b.Offset) })
	out := make(map[int32][]string)
	for _, r := range recs {
		out[r.Partition] = append(out[r.Partition], string(r.Value))
	}
	return out
}

func TestKafkaSinkRetriesARefusal(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 2})
	refused := b.RefuseProduce(2, notLeaderForPartition)
	cfg := sarama.NewConfig()
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Retry.Backoff = 10 * time.Millisecond
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Sarama: cfg}, pairEncoder)
	require.NoError(t, err)
	defer k.Close()

	vals := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	require.NoError(t, k.Write(context.Background(), batch(vals)))
	assert.Equal(t, 2, refused(), "refused twice, then stored")
	assert.Len(t, readAll(t, b, "out"), len(vals), "each message once")
}

func TestKafkaSinkGivesUpAndStartsAgain(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 1})
	cfg := quickToFail() // one retry
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Sarama: cfg}, pairEncoder)
	require.NoError(t, err)
	defer k.Close()
	ctx := context.Background()
	require.NoError(t, k.Write(ctx, batch([]int{1, 2})))

	refused := b.RefuseProduce(2, notLeaderForPartition)
	err = k.Write(ctx, batch([]int{3, 4, 5}))
	assert.ErrorContains(t, err, "kafka sink out: 3 of 3 messages not delivered")
	assert.ErrorIs(t, err, sarama.ErrNotLeaderForPartition)
	assert.Equal(t, 2, refused(), "tried, and retried once")

	refused = b.RefuseProduce(1, messageTooLarge)
	err = k.Write(ctx, batch([]int{6}))
	assert.ErrorIs(t, err, sarama.ErrMessageSizeTooLarge)
	assert.Equal(t, 1, refused(), "not retried: the error is not retriable")

	// The idempotent sequence skipped the batches the broker never stored;
	// the sink starts a new producer rather than send a gap.
	require.NoError(t, k.Write(ctx, batch([]int{7, 8})))
	assert.Equal(t, map[int32][]string{0: {"[1,2]", "[2,4]", "[7,14]", "[8,16]"}}, valuesInOrder(t, b, "out"))
}

func TestKafkaSinkSplitsAtMaxMessageBytes(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 1})
	cfg := sarama.NewConfig()
	cfg.Producer.MaxMessageBytes = 400
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Sarama: cfg},
		func(v int) ([]byte, []byte, error) {
			switch v {
			case -1:
				return nil, []byte(strings.Repeat("x", 500)), nil
			case -2: // under the limit, but not with a record batch's header: a batch of its own, as sarama's producer does
				return nil, []byte(strings.Repeat("y", 350)), nil
			}
			return nil, fmt.Appendf(nil, "%03d", v), nil
		})
	require.NoError(t, err)
	defer k.Close()

	var vals, want []string
	ints := make([]int, 0, 102)
	for i := range 100 {
		ints = append(ints, i)
		want = append(want, fmt.Sprintf("%03d", i))
		if i == 50 {
			ints = append(ints, -1) // too large for any batch
		}
		if i == 20 {
			ints = append(ints, -2)
			want = append(want, strings.Repeat("y", 350))
		}
	}
	err = k.Write(context.Background(), batch(ints))
	assert.ErrorContains(t, err, "1 of 102 messages not delivered")
	assert.ErrorIs(t, err, sarama.ErrMessageSizeTooLarge)
	vals = valuesInOrder(t, b, "out")[0]
	assert.Equal(t, want, vals, "the others stored, in order, over several record batches")
}

func TestKafkaSinkAsyncKeepsPartitionOrder(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 3})
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Async: true}, pairEncoder)
	require.NoError(t, err)
	defer k.Close()
	ctx := context.Background()
	want := make(map[string][]string) // by key
	for w := range 5 {
		vals := make([]int, 300)
		for i := range vals {
			v := w*300 + i
			vals[i] = v
			key := fmt.Sprintf("popular_%d", v%3)
			want[key] = append(want[key], fmt.Sprintf("[%d,%d]", v, 2*v))
		}
		require.NoError(t, k.Write(ctx, batch(vals)))
	}
	require.NoError(t, k.Flush(ctx))

	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	recs, err := b.Records(ctx, "out")
	require.NoError(t, err)
	slices.SortFunc(recs, func(a, b kafkatest.Record) int { return int(a.Offset - b.Offset) })
	got := make(map[string][]string)
	parts := make(map[string]int32)
	for _, r := range recs {
		got[string(r.Key)] = append(got[string(r.Key)], string(r.Value))
		if p, seen := parts[string(r.Key)]; seen {
			require.Equal(t, p, r.Partition, "a key stays in its partition")
		}
		parts[string(r.Key)] = r.Partition
	}
	assert.Equal(t, want, got, "each key's messages in the order written")
}

type headerInterceptor struct{}

func (headerInterceptor) OnSend(m *sarama.ProducerMessage) {
	m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte("seen"), Value: []byte("yes")})
}

func TestKafkaSinkRunsInterceptors(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 1})
	cfg := sarama.NewConfig()
	cfg.Producer.Interceptors = []sarama.ProducerInterceptor{headerInterceptor{}}
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Sarama: cfg}, pairEncoder)
	require.NoError(t, err)
	defer k.Close()
	require.NoError(t, k.Write(context.Background(), batch([]int{1, 2})))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := b.Records(ctx, "out")
	require.NoError(t, err)
	require.Len(t, recs, 2)
	for _, r := range recs {
		assert.Equal(t, map[string]string{"seen": "yes"}, r.Headers)
	}
}
