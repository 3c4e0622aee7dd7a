package sink_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/stream"
)

// checkLeaks fails t if a goroutine started during the test is still
// running once the test and its cleanups are done.
func checkLeaks(t *testing.T) {
	// The goroutines to ignore are those running as the test starts: taken
	// in the cleanup, they would be every goroutine the test left behind.
	// sarama's metrics start one process-wide goroutine that never ends.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, before, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
	})
}

func startBroker(t testing.TB, topics map[string]int32) *kafkatest.Broker {
	t.Helper()
	b, err := kafkatest.Start(kafkatest.Config{Topics: topics})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

// batch returns a batch of partitions, partition i holding values.
func batch(parts ...[]int) *stream.Batch[int] {
	b := &stream.Batch[int]{Info: stream.Info{ID: 1}}
	for i, vals := range parts {
		p := stream.Partition[int]{ID: int32(i), Values: vals}
		for j := range vals {
			p.Origins = append(p.Origins, stream.Origin{Source: "src", Partition: int32(i), Offset: int64(j)})
		}
		b.Partitions = append(b.Partitions, p)
	}
	return b
}

func pairEncoder(v int) ([]byte, []byte, error) {
	if v < 0 {
		return nil, nil, errors.New("negative")
	}
	return []byte("popular_" + strconv.Itoa(v%3)), []byte("[" + strconv.Itoa(v) + "," + strconv.Itoa(2*v) + "]"), nil
}

func readAll(t *testing.T, b *kafkatest.Broker, topic string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := b.Records(ctx, topic)
	require.NoError(t, err)
	out := make(map[string]string, len(recs))
	for _, r := range recs {
		_, dup := out[string(r.Value)]
		require.False(t, dup, "%s written twice", r.Value)
		out[string(r.Value)] = string(r.Key)
	}
	return out
}

func TestKafkaSinkWrites(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 3})
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out"}, pairEncoder)
	require.NoError(t, err)
	defer func() { assert.NoError(t, k.Close()) }()

	ctx := context.Background()
	assert.False(t, k.Reached(), "before the first Write")
	require.NoError(t, k.Write(ctx, batch([]int{1, 2, 3}, nil, []int{4})))
	assert.True(t, k.Reached())
	require.NoError(t, k.Write(ctx, batch()), "an empty batch")
	require.NoError(t, k.Write(ctx, batch([]int{5})))
	assert.Equal(t, map[string]string{
		"[1,2]": "popular_1", "[2,4]": "popular_2", "[3,6]": "popular_0", "[4,8]": "popular_1", "[5,10]": "popular_2",
	}, readAll(t, b, "out"))
}

func TestKafkaSinkNilKey(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 2})
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out"}, func(v int) ([]byte, []byte, error) {
		return nil, []byte(strconv.Itoa(v)), nil
	})
	require.NoError(t, err)
	defer k.Close()
	require.NoError(t, k.Write(context.Background(), batch([]int{1, 2, 3, 4})))
	assert.Equal(t, map[string]string{"1": "", "2": "", "3": "", "4": ""}, readAll(t, b, "out"))
}

func TestKafkaSinkEncodeErrorSendsNothing(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 1})
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out"}, pairEncoder)
	require.NoError(t, err)
	defer k.Close()

	err = k.Write(context.Background(), batch([]int{1}, []int{2, -3}))
	require.Error(t, err)
	var re *stream.RecordError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, stream.Origin{Source: "src", Partition: 1, Offset: 1}, re.Origin)
	assert.ErrorContains(t, err, "kafka sink out: encode: record src/1@1: negative")
	assert.Equal(t, []int64{0}, b.HighWatermarks("out"))

	// A value with no origin (an aggregate's) is named by its place.
	agg := batch([]int{1}, []int{2, -3})
	agg.Partitions[1].Origins = nil
	err = k.Write(context.Background(), agg)
	assert.EqualError(t, err, "kafka sink out: encode value 1 of partition 1 (no origin): negative")
	assert.Equal(t, []int64{0}, b.HighWatermarks("out"))
}

// quickToFail is a producer configuration that gives up on a message
// after one retry, 10 ms later.
func quickToFail() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Producer.Retry.Max = 1
	cfg.Producer.Retry.Backoff = 10 * time.Millisecond
	cfg.Metadata.Retry.Max = 1
	cfg.Metadata.Retry.Backoff = 10 * time.Millisecond
	return cfg
}

func TestKafkaSinkDeliveryFailure(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, nil)
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "missing", Sarama: quickToFail()}, pairEncoder)
	require.NoError(t, err)
	defer k.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = k.Write(ctx, batch([]int{1, 2}))
	require.Error(t, err)
	assert.ErrorContains(t, err, "kafka sink missing: 2 of 2 messages not delivered")
	assert.ErrorIs(t, err, sarama.ErrUnknownTopicOrPartition)
}

func TestKafkaSinkBrokerGone(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 1})
	cfg := sarama.NewConfig()
	cfg.Producer.Retry.Max = 2
	cfg.Producer.Retry.Backoff = 10 * time.Millisecond
	cfg.Metadata.Retry.Backoff = 10 * time.Millisecond
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Sarama: cfg}, pairEncoder)
	require.NoError(t, err)
	defer k.Close()
	require.NoError(t, k.Write(context.Background(), batch([]int{1})))

	b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = k.Write(ctx, batch([]int{2, 3}))
	require.Error(t, err)
	assert.ErrorContains(t, err, "kafka sink out")
	assert.NoError(t, ctx.Err(), "Write failed by itself rather than waiting forever")
}

func TestKafkaSinkClose(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 1})
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out"}, pairEncoder)
	require.NoError(t, err)
	assert.NoError(t, k.Close(), "before any Write")
	assert.NoError(t, k.Close(), "twice")
	assert.ErrorIs(t, k.Write(context.Background(), batch([]int{1})), sink.ErrClosed)

	k, err = sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out"}, pairEncoder)
	require.NoError(t, err)
	require.NoError(t, k.Write(context.Background(), batch([]int{1})))
	assert.NoError(t, k.Close())
	assert.NoError(t, k.Close())
}

func TestKafkaSinkCancelledWrite(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 1})
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out"}, pairEncoder)
	require.NoError(t, err)
	defer k.Close()
	require.NoError(t, k.Write(context.Background(), batch([]int{1}))) // connect

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	vals := make([]int, 1000)
	for i := range vals {
		vals[i] = 100 + i
	}
	err = k.Write(ctx, batch(vals))
	require.ErrorIs(t, err, context.Canceled)
	// Acknowledgements of the abandoned Write are not counted for the next.
	require.NoError(t, k.Write(context.Background(), batch([]int{2})))
	got := readAll(t, b, "out")
	assert.Contains(t, got, "[1,2]")
	assert.Contains(t, got, "[2,4]")
}

func TestNewKafkaSinkValidates(t *testing.T) {
	enc := pairEncoder
	bad := sarama.NewConfig()
	bad.Producer.Idempotent = true // without WaitForAll and one open request
	old := sarama.NewConfig()
	old.Version = sarama.V0_10_2_0
	for _, tc := range []struct {
		name string
		cfg  sink.KafkaConfig
		enc  func(int) ([]byte, []byte, error)
		want string
	}{
		{"no brokers", sink.KafkaConfig{Topic: "t"}, enc, "no brokers"},
		{"no topic", sink.KafkaConfig{Brokers: []string{"b:9092"}}, enc, "no topic"},
		{"no encoder", sink.KafkaConfig{Brokers: []string{"b:9092"}, Topic: "t"}, nil, "no encoder"},
		{"bad sarama config", sink.KafkaConfig{Brokers: []string{"b:9092"}, Topic: "t", Sarama: bad}, enc, "sarama config"},
		{"kafka before 0.11", sink.KafkaConfig{Brokers: []string{"b:9092"}, Topic: "t", Sarama: old}, enc, "need Kafka 0.11 or later"},
		{"negative connect timeout", sink.KafkaConfig{Brokers: []string{"b:9092"}, Topic: "t", ConnectTimeout: -time.Second}, enc, "negative connect timeout -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sink.NewKafka(tc.cfg, tc.enc)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}
