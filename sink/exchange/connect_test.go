package exchange

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/internal/kafkatest"
)

// A digest topic that exists already with several partitions (made by an
// operator, or by a broker's auto-creation) loses no partial: they all go
// to partition 0, which Run reads.
func TestExistingTopicWithSeveralPartitions(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"digests": 3}})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	var logs strings.Builder
	x, err := New(Config{Brokers: b.Addrs(), Topic: "digests", Member: "x", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	running(t, x)
	ctx := context.Background()
	var ps []Partial
	want := map[int32]string{}
	for i := range int32(8) {
		ps = append(ps, Partial{Partition: i, Value: []byte("v")})
		want[i] = "x:v"
	}
	require.NoError(t, x.Publish(ctx, ps))
	assert.Equal(t, want, values(synced(t, x)), "partials published must be read (high watermarks %v)", b.HighWatermarks("digests"))
	assert.Contains(t, logs.String(), `level=WARN msg="exchange topic has several partitions: the partials use partition 0 alone" exchange=digests partitions=3`)
	// Made without configs, the topic is not compacted either.
	assert.Contains(t, logs.String(), `level=WARN msg="exchange topic is not compacted: it keeps every partial published within its retention, and every process reads them all as it starts; set cleanup.policy=compact" exchange=digests policy=delete`)
}

// A topic that Run made, or that is compacted, draws no warning from the
// processes that find it.
func TestExistingCompactedTopic(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	var logs [2]strings.Builder
	for i := range logs {
		x, err := New(Config{Brokers: b.Addrs(), Topic: "digests", Member: strconv.Itoa(i), Logger: slog.New(slog.NewTextHandler(&logs[i], nil))})
		require.NoError(t, err)
		running(t, x)
		require.NoError(t, x.Publish(context.Background(), []Partial{{Partition: int32(i), Value: []byte("v")}}))
	}
	assert.Contains(t, logs[0].String(), `msg="exchange topic created"`)
	assert.NotContains(t, logs[1].String(), `msg="exchange topic created"`, "the second process finds the topic")
	for i := range logs {
		assert.NotContains(t, logs[i].String(), "level=WARN", "process %d", i)
	}
}

// silent accepts connections and never answers: a broker that hangs.
func silent(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// Sync honours its context even while Run is connecting to a broker that
// does not answer.
func TestSyncGivesUpWhileRunConnects(t *testing.T) {
	sc := sarama.NewConfig()
	sc.Net.ReadTimeout = 3 * time.Second // sarama's default is 30s, with 3 retries
	sc.Metadata.Retry.Max = 0
	x, err := New(Config{Brokers: []string{silent(t)}, Topic: "digests", Sarama: sc})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(runCtx) }()
	time.Sleep(100 * time.Millisecond) // Run is connecting

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	synced := make(chan error, 1)
	go func() { synced <- x.Sync(ctx) }()
	select {
	case err := <-synced:
		assert.Error(t, err)
	case <-time.After(time.Second):
		t.Errorf("Sync with a 200ms context still blocked after %v", time.Since(start))
		<-synced
	}
	latest := make(chan struct{})
	go func() { x.Latest(); close(latest) }()
	select {
	case <-latest:
	case <-time.After(time.Second):
		t.Errorf("Latest blocked while Run connects")
		<-latest
	}

	stop()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(time.Second):
		t.Errorf("Run did not return within 1s of its context's end")
		<-done // let everything end, so that the leak check passes
	}
	x.Close()
}

// Close while partials are being published waits for them: every Publish
// returns nil or ErrClosed, and none sends on a closed producer.
func TestCloseWhilePublishing(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	for round := range 5 {
		x, err := New(Config{Brokers: b.Addrs(), Topic: "digests", Member: "x"})
		require.NoError(t, err)
		ctx := context.Background()
		require.NoError(t, x.Publish(ctx, []Partial{{Partition: 0, Value: []byte("first")}}))
		var wg sync.WaitGroup
		errs := make(chan error, 4*100)
		for w := range 4 {
			wg.Go(func() {
				for i := range 100 {
					err := x.Publish(ctx, []Partial{{Partition: int32(w), Value: []byte(strconv.Itoa(i))}})
					errs <- err
					if err != nil {
						return
					}
				}
			})
		}
		time.Sleep(time.Duration(round) * 5 * time.Millisecond)
		require.NoError(t, x.Close())
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				assert.ErrorIs(t, err, ErrClosed, "round %d", round)
			}
		}
		assert.ErrorIs(t, x.Publish(ctx, []Partial{{Partition: 0}}), ErrClosed, "Publish after Close")
	}
}

// Publish returns when its context is done, though the broker does not
// answer the produce request.
func TestPublishGivesUpWithItsContext(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	x, err := New(Config{Brokers: b.Addrs(), Topic: "digests", Member: "x"})
	require.NoError(t, err)
	require.NoError(t, x.Publish(context.Background(), []Partial{{Partition: 0, Value: []byte("first")}}))

	held, release := b.Stall(kmsg.Produce.Int16())
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	published := make(chan error, 1)
	go func() { published <- x.Publish(ctx, []Partial{{Partition: 0, Value: []byte("held")}}) }()
	<-held
	select {
	case err := <-published:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(2 * time.Second):
		t.Errorf("Publish with a 200ms context still blocked after %v", time.Since(start))
		release()
		<-published
	}
	release()
	assert.NoError(t, x.Close())
}

// A topic whose records were all deleted (retention, DeleteRecords) keeps
// its offsets: a process that starts then is up to date at once, not when
// Sync's context ends.
func TestSyncOnATopicWithItsRecordsDeleted(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	first := newExchange(t, b, "first")
	require.NoError(t, first.Publish(context.Background(), []Partial{{Partition: 0, Value: []byte("a")}, {Partition: 1, Value: []byte("b")}}))
	synced(t, first)
	admin, err := sarama.NewClusterAdmin(b.Addrs(), sarama.NewConfig())
	require.NoError(t, err)
	require.NoError(t, admin.DeleteRecords("digests", map[int32]int64{0: 2}))
	require.NoError(t, admin.Close())

	late := newExchange(t, b, "late")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	require.NoError(t, late.Sync(ctx))
	assert.Empty(t, late.Latest())
}

// Brokers that take connections and never answer: Run fails within
// ConnectTimeout, and a Run ended by its context leaves nothing for Close
// to wait for, not sarama's reads of 30s each and their retries, for
// minutes.
func TestSilentBrokers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		ctxAt   time.Duration // 0: never
	}{
		{"connect timeout", time.Second, 0},
		{"ctx", 0, 200 * time.Millisecond}, // the default ConnectTimeout
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, hangUp := kafkatest.SilentBrokers(t)
			x, err := New(Config{Brokers: []string{addr}, Topic: "digests", ConnectTimeout: tc.timeout})
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if tc.ctxAt > 0 {
				ctx, cancel = context.WithTimeout(ctx, tc.ctxAt)
				defer cancel()
			}
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				err := x.Run(ctx)
				done <- errors.Join(err, x.Close())
			}()
			select {
			case err := <-done:
				if tc.ctxAt > 0 {
					assert.NoError(t, err)
				} else {
					assert.ErrorContains(t, err, "exchange digests: brokers ["+addr+"] unreachable")
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run and Close still blocked after %v", time.Since(start))
				hangUp() // the reads fail, and sarama gives up
				<-done
			}
		})
	}
}
