package source_test

import (
	"context"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/sink/txn"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// runTxn runs a transactional pipeline from "in" to "out" until ctx is
// done. It returns Run's error as Run returns, and closes closed once the
// sink and the transaction are closed after it.
func runTxn(t *testing.T, ctx context.Context, b *kafkatest.Broker, drain time.Duration) (done <-chan error, closed <-chan struct{}) {
	sc := sarama.NewConfig()
	sc.Producer.Transaction.Retry.Max = 2
	sc.Producer.Transaction.Retry.Backoff = 10 * time.Millisecond
	tx, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "eos", Sarama: sc})
	require.NoError(t, err)
	src := newSource(t, b, "in", "g", func(c *source.KafkaConfig) { c.Transaction = tx; c.InstanceID = "eos" })
	out, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Transaction: tx},
		func(m source.Message) ([]byte, []byte, error) { return nil, m.Value, nil })
	require.NoError(t, err)
	p := stream.NewPipeline(stream.WithTransaction(tx), stream.Interval(20*time.Millisecond), stream.MaxRecords(5), stream.DrainTimeout(drain))
	stream.To(stream.From(p, src), out)
	ran, shut := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(shut)
		ran <- p.Run(ctx)
		out.Close()
		tx.Close()
	}()
	return ran, shut
}

// With a transaction, DrainTimeout still bounds Run when a broker does not
// answer: what the batch sent (the abort is left to finish in the
// background), or the transaction's end (the commit is); the
// transaction's Close waits for them, and a restart with the same
// transactional ID outputs every record exactly once.
func TestTransactionalRunEndsAtItsDrainTimeoutWhenABrokerStalls(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		key        int16
	}{
		{"a write", "abort transaction", kmsg.Produce.Int16()},
		{"the commit", "commit transaction", kmsg.EndTxn.Int16()},
	} {
		t.Run(tc.name, func(t *testing.T) { stalledTransactionalRun(t, tc.key, tc.want) })
	}
}

func stalledTransactionalRun(t *testing.T, key int16, want string) {
	const n = 60
	b := startBroker(t, map[string]int32{"in": 2, "out": 1})
	produce(t, b, "in", 2, 0, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done, closed := runTxn(t, ctx, b, 200*time.Millisecond)
	require.Eventually(t, func() bool { c := b.Committed("g", "in"); return c[0] > 0 || c[1] > 0 }, 20*time.Second, 5*time.Millisecond)
	held, release := b.Stall(key)
	defer release()
	<-held
	cancel()
	start := time.Now()
	time.AfterFunc(10*time.Second, release) // the broker answers 10s later
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	took := time.Since(start)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "batch not finished 200ms after cancellation")
	assert.Contains(t, err.Error(), want)
	assert.Less(t, took, 5*time.Second, "Run returns about DrainTimeout and a second after the cancellation, not when the broker answers")
	release()
	<-closed // the transaction's Close waited for the producer let go

	ctx2, cancel2 := context.WithCancel(context.Background())
	done2, closed2 := runTxn(t, ctx2, b, time.Second)
	require.Eventually(t, func() bool {
		c := b.Committed("g", "in")
		return c[0]+c[1] == n
	}, 30*time.Second, 10*time.Millisecond, "the restart reads the rest")
	cancel2()
	require.NoError(t, <-done2)
	<-closed2
	recs, err := kafkatest.Read(context.Background(), b.Addrs(), "out", sarama.ReadCommitted)
	require.NoError(t, err)
	seen := map[string]int{}
	for _, r := range recs {
		seen[string(r.Value)]++
	}
	assert.Len(t, seen, n, "every record output")
	for v, k := range seen {
		assert.Equal(t, 1, k, "record %s output %d times", v, k)
	}
}
