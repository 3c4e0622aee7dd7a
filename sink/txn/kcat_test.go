package txn_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest/kcat"
	"github.com/sluicehq/sluice/sink/txn"
)

// A read_committed kcat sees the records of the committed transactions
// only, each with its key, value, headers and timestamp, whatever the
// compression, and none of the aborted one's.
func TestKcatReadsCommittedTransactions(t *testing.T) {
	kc := kcat.Path(t)
	for _, codec := range []sarama.CompressionCodec{sarama.CompressionNone, sarama.CompressionGZIP, sarama.CompressionZSTD} {
		t.Run(codec.String(), func(t *testing.T) {
			b := startBroker(t, map[string]int32{"out": 2})
			sc := sarama.NewConfig()
			sc.Producer.Compression = codec
			p := newProducerOf(t, b, txn.Config{ID: "kcat-" + codec.String(), Sarama: sc})
			ctx := context.Background()
			at := time.UnixMilli(1_700_000_000_123)
			rec := func(key, value string, part int32) *sarama.ProducerMessage {
				return &sarama.ProducerMessage{Topic: "out", Partition: part, Key: sarama.StringEncoder(key), Value: sarama.StringEncoder(value),
					Timestamp: at, Headers: []sarama.RecordHeader{{Key: []byte("h"), Value: []byte(value)}}}
			}
			require.NoError(t, p.Begin(ctx))
			require.NoError(t, p.SendToPartitions(ctx, []*sarama.ProducerMessage{rec("k1", "a", 0), rec("k2", "b", 1)}))
			require.NoError(t, p.Commit(ctx))
			require.NoError(t, p.Begin(ctx))
			require.NoError(t, p.SendToPartitions(ctx, []*sarama.ProducerMessage{rec("k3", "aborted", 0), rec("k4", "aborted", 1)}))
			require.NoError(t, p.Abort(ctx))
			require.NoError(t, p.Begin(ctx))
			require.NoError(t, p.SendToPartitions(ctx, []*sarama.ProducerMessage{rec("k5", "c", 0)}))
			require.NoError(t, p.Commit(ctx))

			out := kcat.Run(t, kc, "", "-C", "-b", b.Addrs()[0], "-t", "out", "-e", "-q",
				"-X", "isolation.level=read_committed", "-f", "%p %k %s %T %h\n")
			lines := strings.Split(strings.TrimSpace(out), "\n")
			assert.ElementsMatch(t, []string{
				"0 k1 a 1700000000123 h=a",
				"0 k5 c 1700000000123 h=c",
				"1 k2 b 1700000000123 h=b",
			}, lines)
		})
	}
}
