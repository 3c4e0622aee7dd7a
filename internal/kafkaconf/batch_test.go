package kafkaconf_test

import (
	"context"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/internal/kafkatest"
)

// Send sets the offset of each message delivered, as the changelog reads
// them for its markers, and stores a nil value as a tombstone.
func TestBatchProducerSetsOffsets(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"log": 2}})
	require.NoError(t, err)
	defer b.Close()
	cfg := kafkaconf.Producer(nil)
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	client, err := sarama.NewClient(b.Addrs(), cfg)
	require.NoError(t, err)
	defer client.Close()
	p, err := kafkaconf.NewBatchProducer(client, "log")
	require.NoError(t, err)

	send := func(parts ...int32) []*sarama.ProducerMessage {
		msgs := make([]*sarama.ProducerMessage, len(parts))
		for i, part := range parts {
			msgs[i] = &sarama.ProducerMessage{Topic: "log", Partition: part, Key: sarama.StringEncoder("k"), Offset: -1}
			if i%2 == 0 {
				msgs[i].Value = sarama.StringEncoder("v")
			}
		}
		require.Empty(t, p.Send(msgs))
		return msgs
	}
	first := send(0, 1, 0)
	second := send(1, 0)
	offsets := func(msgs []*sarama.ProducerMessage) (out [][2]int64) {
		for _, m := range msgs {
			out = append(out, [2]int64{int64(m.Partition), m.Offset})
		}
		return out
	}
	assert.Equal(t, [][2]int64{{0, 0}, {1, 0}, {0, 1}}, offsets(first))
	assert.Equal(t, [][2]int64{{1, 1}, {0, 2}}, offsets(second))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := b.Records(ctx, "log")
	require.NoError(t, err)
	var tombstones int
	for _, r := range recs {
		if r.Value == nil {
			tombstones++
		}
	}
	assert.Len(t, recs, 5)
	assert.Equal(t, 2, tombstones, "the messages without a value")
}

func TestBatchProducerNeedsRecordBatches(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	defer b.Close()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V0_10_2_0
	client, err := sarama.NewClient(b.Addrs(), cfg)
	require.NoError(t, err)
	defer client.Close()
	_, err = kafkaconf.NewBatchProducer(client, "log")
	assert.ErrorContains(t, err, "need Kafka 0.11 or later")
}
