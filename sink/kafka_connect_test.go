package sink_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink"
)

// writeWithin returns how long k's first Write took and its error,
// failing t when it takes longer than limit, after ending the Write with
// hangUp.
func writeWithin(t *testing.T, ctx context.Context, k *sink.Kafka[int], limit time.Duration, hangUp func()) (time.Duration, error) {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- k.Write(ctx, batch([]int{1})) }()
	select {
	case err := <-done:
		return time.Since(start), err
	case <-time.After(limit):
		hangUp()
		<-done
		t.Fatalf("Write still blocked after %v", limit)
		return 0, nil
	}
}

// Brokers that take connections and never answer fail the first Write
// within ConnectTimeout, not after sarama's reads and retries have each
// waited its Net.ReadTimeout (30s), for minutes.
func TestKafkaSinkConnectTimeoutSilentBrokers(t *testing.T) {
	checkLeaks(t)
	addr, hangUp := kafkatest.SilentBrokers(t)
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: []string{addr}, Topic: "out", ConnectTimeout: 2 * time.Second}, pairEncoder)
	require.NoError(t, err)
	defer k.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	took, err := writeWithin(t, ctx, k, 30*time.Second, hangUp)
	require.Error(t, err)
	assert.NoError(t, ctx.Err(), "Write failed by itself")
	assert.Less(t, took, 15*time.Second, "within about ConnectTimeout")
	assert.ErrorContains(t, err, "kafka sink out: brokers ["+addr+"] unreachable")
	assert.False(t, k.Reached())
	assert.NoError(t, k.Close())
}

// A Write whose ctx ends while the brokers do not answer returns soon
// after, with the ctx's error, well before ConnectTimeout.
func TestKafkaSinkConnectCancelled(t *testing.T) {
	checkLeaks(t)
	addr, hangUp := kafkatest.SilentBrokers(t)
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: []string{addr}, Topic: "out"}, pairEncoder) // the default ConnectTimeout
	require.NoError(t, err)
	defer k.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	took, err := writeWithin(t, ctx, k, 20*time.Second, hangUp)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, took, 10*time.Second, "well before the default ConnectTimeout")
	assert.ErrorContains(t, err, "kafka sink out: connect to ["+addr+"]")
	assert.NoError(t, k.Close())
}

// A proxy dialer of the user's (Net.Proxy.Dialer) that dials with a
// context, and whose dial hangs, as one to an address that drops what it
// is sent does, until its own timeout: the first Write fails within
// ConnectTimeout, or soon after its ctx ends, its dial cancelled.
func TestKafkaSinkConnectProxyDialerHangs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration // the Write's ctx's
		connect time.Duration // ConnectTimeout
		err     string        // of the brokers' addresses
	}{
		{"connect timeout", time.Minute, time.Second, "kafka sink out: brokers %v unreachable"},
		{"ctx done", 500 * time.Millisecond, 0, "kafka sink out: connect to %v"}, // the default ConnectTimeout
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			b := startBroker(t, map[string]int32{"out": 1})
			hang := kafkatest.NewHangingDialer(t)
			sc := sarama.NewConfig()
			sc.Net.Proxy.Enable, sc.Net.Proxy.Dialer = true, hang
			k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", ConnectTimeout: tc.connect, Sarama: sc}, pairEncoder)
			require.NoError(t, err)
			defer k.Close()

			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			took, err := writeWithin(t, ctx, k, 20*time.Second, hang.HangUp)
			require.Error(t, err)
			assert.Less(t, took, 10*time.Second, "within about ConnectTimeout, or soon after ctx ends")
			assert.ErrorContains(t, err, fmt.Sprintf(tc.err, b.Addrs()))
			if ctx.Err() != nil {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
			}
			assert.NoError(t, k.Close())
		})
	}
}

// With Metadata.Full off in the Sarama config, sarama's client asks the
// brokers nothing as it is made: the first Write still fails within
// ConnectTimeout against brokers that never answer, and Reached stays
// false, instead of sending the messages to them.
func TestKafkaSinkConnectTimeoutWithoutFullMetadata(t *testing.T) {
	checkLeaks(t)
	addr, hangUp := kafkatest.SilentBrokers(t)
	sc := sarama.NewConfig()
	sc.Metadata.Full = false
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: []string{addr}, Topic: "out", ConnectTimeout: 2 * time.Second, Sarama: sc}, pairEncoder)
	require.NoError(t, err)
	defer k.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	took, err := writeWithin(t, ctx, k, 20*time.Second, hangUp)
	require.Error(t, err)
	assert.Less(t, took, 15*time.Second, "within about ConnectTimeout")
	assert.ErrorContains(t, err, "kafka sink out: brokers ["+addr+"] unreachable")
	assert.False(t, k.Reached())
	assert.NoError(t, k.Close())
}
