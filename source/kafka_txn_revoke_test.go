package source_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/sink/txn"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// slowCommit is a stream.Transaction whose Commit (EndTxn) takes a while
// to reach the broker, as on a slow network.
type slowCommit struct {
	*txn.Producer
	delay time.Duration
}

func (s slowCommit) Commit(ctx context.Context) error {
	time.Sleep(s.delay)
	return s.Producer.Commit(ctx)
}

// A partition revoked from a transactional member is let go only once the
// batch's transaction has committed: sarama sends the group's offsets
// (TxnOffsetCommit, with the group's generation) as it commits, not as
// they are added. Let go before, the claim would let the group move to
// its next generation, the broker refuse the offsets, the transaction
// abort and the run stop, whenever the rebalance beat the commit (made
// certain here by a commit 300 ms slow). Both members run on, and every
// record is output once. (An eager rebalance: in a cooperative one, the
// generation moves without the claims ending; see sink/txn's doc.)
func TestTransactionalRunSurvivesAMemberJoining(t *testing.T) {
	for name, strategies := range map[string][]sarama.BalanceStrategy{
		"default": nil, // the source's, for a transactional member
		// An eager rebalance: the group waits for the claims to end,
		// with their transactions, before its next generation.
		"round-robin": {sarama.NewBalanceStrategyRoundRobin()},
	} {
		t.Run(name, func(t *testing.T) { transactionalRunSurvivesAMemberJoining(t, strategies) })
	}
}

func transactionalRunSurvivesAMemberJoining(t *testing.T, strategies []sarama.BalanceStrategy) {
	const in, n = "in", 100
	b := startBroker(t, map[string]int32{in: 2, "out": 1})
	produce(t, b, in, 2, 0, n)

	var gainedB atomic.Int64 // partitions b was given
	run := func(id string, delay time.Duration) (func(), <-chan error) {
		tx, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: id})
		require.NoError(t, err)
		t.Cleanup(func() { tx.Close() })
		src := newSource(t, b, in, "g", func(c *source.KafkaConfig) {
			c.Transaction = tx
			c.Sarama.Consumer.Group.Rebalance.GroupStrategies = strategies
		})
		out, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Transaction: tx},
			func(m source.Message) ([]byte, []byte, error) { return nil, m.Value, nil })
		require.NoError(t, err)
		p := stream.NewPipeline(stream.WithTransaction(slowCommit{tx, delay}), stream.Interval(20*time.Millisecond), stream.MaxRecords(5),
			stream.OnRebalance(func(_ context.Context, _, gained []int32) error {
				if id == "b" {
					gainedB.Add(int64(len(gained)))
				}
				return nil
			}))
		stream.To(stream.From(p, src), out)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		return cancel, done
	}
	stopA, doneA := run("a", 300*time.Millisecond)
	defer stopA()
	// A has committed a batch.
	require.Eventually(t, func() bool {
		c := b.Committed("g", in)
		return c[0] > 0 || c[1] > 0
	}, 20*time.Second, 10*time.Millisecond)
	stopB, doneB := run("b", 0)
	defer stopB()

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		committed := b.Committed("g", in)
		for p, hw := range b.HighWatermarks(in) {
			assert.Equal(c, hw, committed[int32(p)], "partition %d", p)
		}
	}, 60*time.Second, 50*time.Millisecond)
	time.Sleep(time.Second)
	stopA()
	stopB()
	assert.Positive(t, gainedB.Load(), "b joined the group and was given a partition: the rebalance happened")
	for _, d := range []<-chan error{doneA, doneB} {
		select {
		case err := <-d:
			assert.NoError(t, err, "a member joining the group stops the transactional member's run")
		case <-time.After(20 * time.Second):
			t.Fatal("a run did not stop")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := kafkatest.Read(ctx, b.Addrs(), "out", sarama.ReadCommitted)
	require.NoError(t, err)
	seen := map[string]int{}
	var dups []string
	for _, r := range recs {
		seen[string(r.Value)]++
		if seen[string(r.Value)] == 2 {
			dups = append(dups, string(r.Value))
		}
	}
	assert.Len(t, seen, n, "every input record is in the output")
	assert.Empty(t, dups, "input records output twice by committed transactions: %s", strings.Join(dups, ","))
}
