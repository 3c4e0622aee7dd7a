package exchange

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/kafkatest"
)

func TestMain(m *testing.M) {
	// sarama's metrics start one process-wide goroutine that never ends.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
}

// running starts x.Run until the end of the test.
func running(t *testing.T, x *Kafka) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
		assert.NoError(t, x.Close())
		assert.NoError(t, x.Close(), "Close twice")
	})
}

func newExchange(t *testing.T, b *kafkatest.Broker, member string) *Kafka {
	t.Helper()
	return started(t, b, Config{Member: member})
}

// started returns an exchange of cfg on b's topic "digests", running
// until the end of the test.
func started(t *testing.T, b *kafkatest.Broker, cfg Config) *Kafka {
	t.Helper()
	cfg.Brokers, cfg.Topic = b.Addrs(), "digests"
	x, err := New(cfg)
	require.NoError(t, err)
	running(t, x)
	return x
}

// textLogger returns a logger that writes text to w.
func textLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

func synced(t *testing.T, x *Kafka) []Partial {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, x.Sync(ctx))
	return x.Latest()
}

// values returns the partition -> member:value of partials.
func values(ps []Partial) map[int32]string {
	out := map[int32]string{}
	for _, p := range ps {
		out[p.Partition] = p.Member + ":" + string(p.Value)
	}
	return out
}

func TestProcessesSeeEachOthersLatestPartials(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	a, c := newExchange(t, b, "a"), newExchange(t, b, "c")
	ctx := context.Background()
	now := time.Unix(1700000000, 5)

	require.NoError(t, a.Publish(ctx, []Partial{{Partition: 0, Value: []byte("a0"), Batch: 1, Time: now}, {Partition: 1, Value: []byte("a1"), Batch: 1, Time: now}}))
	require.NoError(t, c.Publish(ctx, []Partial{{Partition: 2, Value: []byte("c2"), Batch: 7, Time: now}}))
	want := map[int32]string{0: "a:a0", 1: "a:a1", 2: "c:c2"}
	assert.Equal(t, want, values(synced(t, a)), "a sees its own and c's, once synced")
	assert.Equal(t, want, values(synced(t, c)))
	got := synced(t, c)
	assert.Equal(t, int64(7), got[2].Batch)
	assert.True(t, now.Equal(got[2].Time))

	// Partition 1 moves to c: its value replaces a's, stale, for everyone.
	require.NoError(t, c.Publish(ctx, []Partial{{Partition: 1, Value: []byte("c1"), Batch: 8, Time: now}}))
	want[1] = "c:c1"
	assert.Equal(t, want, values(synced(t, a)))
	before := synced(t, a)[0].Offset
	require.NoError(t, a.Publish(ctx, []Partial{{Partition: 2, Value: []byte("a2")}}))
	after := synced(t, c)
	assert.Equal(t, before, after[0].Offset, "an unchanged partition keeps its offset")

	// A process that starts later reads every partition's latest value.
	late := newExchange(t, b, "late")
	want[2] = "a:a2"
	assert.Equal(t, want, values(synced(t, late)))
}

func TestBadRecordsAreSkipped(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	x := newExchange(t, b, "x")
	synced(t, x) // the topic exists
	require.NoError(t, b.Produce("digests",
		kafkatest.Record{Key: []byte("three"), Value: encode(Partial{Value: []byte("v")})},
		kafkatest.Record{Key: []byte("3"), Value: []byte{9, 9}},
		kafkatest.Record{Key: []byte("4"), Value: encode(Partial{Value: []byte("ok"), Member: "m"})},
	))
	assert.Equal(t, map[int32]string{4: "m:ok"}, values(synced(t, x)))
	assert.Equal(t, int64(2), x.Skipped())
}

func TestSyncGivesUpWithItsContext(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	x, err := New(Config{Brokers: b.Addrs(), Topic: "digests"})
	require.NoError(t, err)
	defer x.Close()
	// Not running: nothing reads what is published.
	require.NoError(t, x.Publish(context.Background(), []Partial{{Partition: 0, Value: []byte("v")}}))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = x.Sync(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "read up to offset 0 of 1")
	require.NoError(t, x.Close())
	assert.True(t, errors.Is(x.Publish(context.Background(), []Partial{{}}), ErrClosed))
}

func TestEncodeDecode(t *testing.T) {
	p := Partial{Partition: 12, Value: []byte("payload"), Batch: -3, Time: time.Unix(5, 6), Member: "host-1", Kind: "exact", Input: "messages", Epoch: 9}
	for name, enc := range map[string]func(Partial) []byte{"current": encode, "version 1": encodeV1} {
		got, err := decode([]byte("12"), enc(p))
		require.NoError(t, err, name)
		assert.Equal(t, p.Partition, got.Partition, name)
		assert.Equal(t, p.Value, got.Value, name)
		assert.Equal(t, p.Batch, got.Batch, name)
		assert.True(t, p.Time.Equal(got.Time), name)
		assert.Equal(t, p.Member, got.Member, name)
		if name == "current" {
			assert.Equal(t, p.Kind, got.Kind)
			assert.Equal(t, p.Input, got.Input)
			assert.Equal(t, p.Epoch, got.Epoch)
		} else {
			assert.Empty(t, got.Kind, "a version 1 value has no kind")
			assert.Empty(t, got.Input)
			assert.Zero(t, got.Epoch)
		}
	}
	for _, bad := range [][]byte{nil, {1}, {1, 2}, {1, 2, 2, 200}, {2}, {2, 5, 'e'}, {2, 0, 0, 2}, {2, 0, 0, 0x80}, {2, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 2, 2, 0}, {3, 0, 0, 2, 2, 2, 0}} {
		_, err := decode([]byte("1"), bad)
		assert.Error(t, err, "%v", bad)
	}
	_, err := decode([]byte("-1"), encode(p))
	assert.Error(t, err)
}

// A tombstone of a partition (a null value, how a compacted topic deletes
// a key) removes its partial: the processes that read it drop it, as
// those that start after compaction never see it.
func TestTombstoneRemovesAPartial(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	x := newExchange(t, b, "x")
	require.NoError(t, x.Publish(context.Background(), []Partial{{Partition: 4, Value: []byte("stale")}, {Partition: 5, Value: []byte("v")}}))
	assert.Equal(t, map[int32]string{4: "x:stale", 5: "x:v"}, values(synced(t, x)))
	require.NoError(t, b.Produce("digests", kafkatest.Record{Key: []byte("4")}))
	assert.Equal(t, map[int32]string{5: "x:v"}, values(synced(t, x)), "the tombstone deletes partition 4's partial")
	assert.Zero(t, x.Skipped(), "a tombstone is not a bad record")
}

// The topic Run creates rolls its segments often: Kafka never compacts
// the one being written, so that at its default (1 GiB, 7 days) a process
// starting would read hours of old partials.
func TestTheTopicMadeRollsItsSegments(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	x := newExchange(t, b, "x")
	synced(t, x) // the topic exists
	admin, err := sarama.NewClusterAdmin(b.Addrs(), sarama.NewConfig())
	require.NoError(t, err)
	defer admin.Close()
	results, err := admin.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: "digests", ConfigNames: []string{"segment.ms", "cleanup.policy"}}}, sarama.DescribeConfigsOptions{})
	require.NoError(t, err)
	require.Len(t, results, 1)
	got := map[string]string{}
	for _, e := range results[0].Configs {
		got[e.Name] = e.Value
	}
	assert.Equal(t, map[string]string{"segment.ms": "600000", "cleanup.policy": "compact"}, got)
}

// When the reader's offset falls out of the topic's range (its next
// records deleted while it was behind), sarama's consumer stops the
// partition: Run reads on from the oldest record kept, instead of failing
// the process.
func TestReadingGoesOnWhenItsOffsetFallsOutOfRange(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	x := newExchange(t, b, "x")
	ctx := context.Background()
	require.NoError(t, x.Publish(ctx, []Partial{{Partition: 0, Value: []byte("a")}}))
	synced(t, x)
	const offsetOutOfRange = 1
	refused := b.RefuseFetch(1, offsetOutOfRange)
	require.Eventually(t, func() bool { return refused() == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, x.Publish(ctx, []Partial{{Partition: 1, Value: []byte("b")}}))
	assert.Equal(t, map[int32]string{0: "x:a", 1: "x:b"}, values(synced(t, x)))
}
