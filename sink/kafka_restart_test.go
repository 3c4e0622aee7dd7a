package sink_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink"
)

// A broker stopped, then started again with its data: the sink's writes
// fail while it is down, and go through again soon after it is back, as
// the README's Faults says; sarama's client would otherwise keep the
// broker out of its list until its next periodic metadata refresh.
func TestKafkaSinkAfterABrokerRestart(t *testing.T) {
	addr, err := kafkatest.FreeAddr()
	require.NoError(t, err)
	dir := t.TempDir()
	start := func() *kafkatest.Broker {
		b, err := kafkatest.Start(kafkatest.Config{Addr: addr, DataDir: dir, Topics: map[string]int32{"out": 1}})
		require.NoError(t, err)
		return b
	}
	for _, async := range []bool{false, true} {
		b := start()
		k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Async: async}, pairEncoder)
		require.NoError(t, err)
		ctx := context.Background()
		write := func(vs ...int) error {
			if err := k.Write(ctx, batch(vs)); err != nil || !async {
				return err
			}
			return k.Flush(ctx)
		}
		require.NoError(t, write(1), "async %v", async)

		b.Close() // the broker stops
		require.Error(t, write(2), "async %v: not delivered while the broker is down", async)
		require.Error(t, write(2), "async %v: still down", async)

		b = start() // and starts again, with its data
		var werr error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if werr = write(2); werr == nil {
				break
			}
		}
		require.NoError(t, werr, "async %v: a write goes through once the broker is back", async)
		require.NoError(t, k.Close())
		b.Close()
	}
}
