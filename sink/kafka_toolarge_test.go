package sink_test

import (
	"context"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/sink"
)

// A message too large, refused before it is sent, is named in the error by
// the partition its key goes to.
func TestKafkaSinkTooLargeNamesItsPartition(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 3})
	key := keyFor(t, 2, 3)
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out"},
		func(v int) ([]byte, []byte, error) { return []byte(key), []byte(strings.Repeat("x", 2<<20)), nil })
	require.NoError(t, err)
	defer k.Close()
	err = k.Write(context.Background(), batch([]int{1}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "first to partition 2:")
}

// keyFor returns a key that sarama's hash partitioner sends to partition
// part of n.
func keyFor(t *testing.T, part, n int32) string {
	hp := sarama.NewHashPartitioner("out")
	for i := 0; ; i++ {
		k := string(rune('a'+i%26)) + strings.Repeat("k", i/26)
		got, err := hp.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(k)}, n)
		require.NoError(t, err)
		if got == part {
			return k
		}
	}
}
