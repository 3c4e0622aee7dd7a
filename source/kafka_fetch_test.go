package source_test

import (
	"context"
	"encoding/binary"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rcrowley/go-metrics"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// startCluster starts a kfake cluster of n brokers with topic, closed at
// the end of the test, and returns it and its addresses.
func startCluster(t *testing.T, n int, topic string, partitions int32) (*kfake.Cluster, []string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(n), kfake.SeedTopics(partitions, topic), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()
}

// produceEach writes the values from..to-1 to topic, value i to partition
// i mod partitions, one request (and record batch) per record when one is
// set, with sarama's producer, as produce does.
func produceEach(t *testing.T, addrs []string, topic string, partitions int32, from, to int, one bool) {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer(addrs, cfg)
	require.NoError(t, err)
	defer p.Close()
	var msgs []*sarama.ProducerMessage
	for i := from; i < to; i++ {
		m := &sarama.ProducerMessage{Topic: topic, Partition: int32(i) % partitions, Key: sarama.StringEncoder("k" + strconv.Itoa(i)), Value: sarama.StringEncoder(strconv.Itoa(i))}
		if one {
			_, _, err := p.SendMessage(m)
			require.NoError(t, err)
			continue
		}
		msgs = append(msgs, m)
	}
	if len(msgs) > 0 {
		require.NoError(t, p.SendMessages(msgs))
	}
}

// runSource runs src in a pipeline whose batches go to each, and returns
// a function that stops it and checks that Run returned nil.
func runSource(t *testing.T, src *source.Kafka, each func(context.Context, *stream.Batch[source.Message]) error, opts ...stream.Option) func() {
	t.Helper()
	p := stream.NewPipeline(append([]stream.Option{stream.Interval(20 * time.Millisecond)}, opts...)...)
	stream.ForEachBatch(stream.From(p, src), each)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			require.NoError(t, stopped(t, done))
		})
	}
	t.Cleanup(stop)
	return stop
}

// captureLog returns a logger and a function that returns what it logged.
func captureLog() (*slog.Logger, func() string) {
	buf := new(source.SyncBuffer)
	return slog.New(slog.NewTextHandler(buf, nil)), buf.String
}

func sourceOn(t *testing.T, addrs []string, topic, group string, log *slog.Logger, edit ...func(*source.KafkaConfig)) *source.Kafka {
	t.Helper()
	cfg := source.KafkaConfig{Brokers: addrs, Topic: topic, Group: group, ConnectTimeout: 10 * time.Second, RevokeTimeout: 5 * time.Second,
		Sarama: fastSarama(), Logger: log}
	for _, f := range edit {
		f(&cfg)
	}
	src, err := source.NewKafka(cfg)
	require.NoError(t, err)
	return src
}

// When the leaders of the partitions move to other brokers while the
// source reads, it follows them: every record comes once, in order.
func TestKafkaFetchFollowsMovedLeaders(t *testing.T) {
	checkLeaks(t)
	const topic, parts, half = "moves", 4, 2000
	c, addrs := startCluster(t, 3, topic, parts)
	produceEach(t, addrs, topic, parts, 0, half, false)

	cnt := counter{partitions: parts}
	log, logged := captureLog()
	stop := runSource(t, sourceOn(t, addrs, topic, "g", log, func(cfg *source.KafkaConfig) {
		cfg.Sarama.Consumer.Retry.Backoff = 50 * time.Millisecond
	}), cnt.count)
	require.Eventually(t, func() bool { return cnt.total() > 0 }, 20*time.Second, 10*time.Millisecond)
	for p := range int32(parts) {
		require.NoError(t, c.MoveTopicPartition(topic, p, (c.LeaderFor(topic, p)+1)%3))
	}
	produceEach(t, addrs, topic, parts, half, 2*half, false)
	require.Eventually(t, func() bool { return cnt.total() >= 2*half }, 20*time.Second, 10*time.Millisecond)
	stop()

	assert.Empty(t, cnt.wrong, "records in the wrong batch partition, or out of order")
	assert.Equal(t, 2*half, cnt.total(), "each record once")
	assert.Len(t, cnt.counts, 2*half)
	assert.Contains(t, logged(), "kafka partition leader moved", "the old leaders said so")
}

// valuesRead keeps the values of the messages of every batch, in order.
type valuesRead struct {
	mu   sync.Mutex
	vals []string
}

func (v *valuesRead) add(_ context.Context, b *stream.Batch[source.Message]) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, p := range b.Partitions {
		for _, m := range p.Values {
			v.vals = append(v.vals, string(m.Value))
		}
	}
	return nil
}

// all returns the values read so far.
func (v *valuesRead) all() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.vals)
}

// txnProducer returns a sarama transactional producer with id, closed at
// the end of the test.
func txnProducer(t *testing.T, addrs []string, id string) sarama.SyncProducer {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Producer.Return.Successes = true
	cfg.Producer.Idempotent = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Transaction.ID = id
	cfg.Net.MaxOpenRequests = 1
	p, err := sarama.NewSyncProducer(addrs, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

// Read committed, the records of aborted transactions and the
// transactions' markers are skipped; read uncommitted, only the markers.
func TestKafkaFetchSkipsAbortedTransactions(t *testing.T) {
	checkLeaks(t)
	const topic = "txns"
	_, addrs := startCluster(t, 1, topic, 1)
	prod := txnProducer(t, addrs, "writer")
	var committed, all []string
	for txn := range 6 {
		require.NoError(t, prod.BeginTxn())
		for i := range 5 {
			v := strconv.Itoa(txn*10 + i)
			_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(v)})
			require.NoError(t, err)
			all = append(all, v)
			if txn%2 == 0 {
				committed = append(committed, v)
			}
		}
		if txn%2 == 0 {
			require.NoError(t, prod.CommitTxn())
		} else {
			require.NoError(t, prod.AbortTxn())
		}
	}

	for _, tc := range []struct {
		isolation sarama.IsolationLevel
		want      []string
	}{{sarama.ReadCommitted, committed}, {sarama.ReadUncommitted, all}} {
		var got valuesRead
		stop := runSource(t, sourceOn(t, addrs, topic, "g"+strconv.Itoa(int(tc.isolation)), testLog(t), func(cfg *source.KafkaConfig) {
			cfg.Sarama.Consumer.IsolationLevel = tc.isolation
		}), got.add)
		assert.Eventually(t, func() bool { return len(got.all()) >= len(tc.want) }, 20*time.Second, 10*time.Millisecond)
		time.Sleep(200 * time.Millisecond) // nothing more comes
		stop()
		assert.Equal(t, tc.want, got.all(), "isolation %d", tc.isolation)
	}
}

// A fetch position that retention (here, records deleted) left behind is
// reset to the oldest record, with a warning, and reading goes on.
func TestKafkaFetchOffsetOutOfRange(t *testing.T) {
	checkLeaks(t)
	const topic, n, deleted = "gone", 100, 60
	_, addrs := startCluster(t, 1, topic, 1)
	produceEach(t, addrs, topic, 1, 0, n, true) // a record batch each

	log, logged := captureLog()
	release := make(chan struct{})
	var mu sync.Mutex
	var got []int64
	stop := runSource(t, sourceOn(t, addrs, topic, "g", log, func(cfg *source.KafkaConfig) {
		cfg.Buffer = 4
		cfg.Sarama.Consumer.Fetch.Default = 1 // one record batch a fetch
	}), func(_ context.Context, b *stream.Batch[source.Message]) error {
		<-release // the source reads ahead only as far as its buffer
		mu.Lock()
		defer mu.Unlock()
		for _, p := range b.Partitions {
			for i := range p.Values {
				got = append(got, p.Origin(i).Offset)
			}
		}
		return nil
	}, stream.MaxRecords(2))
	time.Sleep(300 * time.Millisecond) // the first batch waits, the buffer fills
	admin, err := sarama.NewClusterAdmin(addrs, sarama.NewConfig())
	require.NoError(t, err)
	require.NoError(t, admin.DeleteRecords(topic, map[int32]int64{0: deleted}))
	require.NoError(t, admin.Close())
	close(release)
	ok := assert.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 && got[len(got)-1] == n-1 }, 10*time.Second, 10*time.Millisecond)
	stop()
	if !ok {
		t.Logf("got %v\nlog:\n%s", got, logged())
		return
	}

	mu.Lock()
	defer mu.Unlock()
	var before, after []int64
	for _, o := range got {
		if o < deleted {
			before = append(before, o)
		} else {
			after = append(after, o)
		}
	}
	require.NotEmpty(t, before)
	assert.Less(t, len(before), deleted/2, "the buffer held the fetches back")
	for i, o := range before {
		assert.Equal(t, int64(i), o, "read in order up to the reset")
	}
	for i, o := range after {
		assert.Equal(t, int64(deleted+i), o, "then from the oldest record left")
	}
	assert.Len(t, after, n-deleted)
	assert.Contains(t, logged(), "kafka offset out of range")
}

type countInterceptor struct{ n *atomic.Int64 }

func (c countInterceptor) OnConsume(m *sarama.ConsumerMessage) {
	c.n.Add(1)
	m.Headers = append(m.Headers, &sarama.RecordHeader{Key: []byte("seen"), Value: []byte(strconv.FormatInt(m.Offset, 10))})
}

// The consumer interceptors of the Sarama config see every record once,
// before the pipeline does.
func TestKafkaFetchRunsInterceptors(t *testing.T) {
	checkLeaks(t)
	const topic, n = "icpt", 300
	_, addrs := startCluster(t, 1, topic, 2)
	produceEach(t, addrs, topic, 2, 0, n, false)
	var seen atomic.Int64
	var mu sync.Mutex
	var wrong []string
	total := 0
	stop := runSource(t, sourceOn(t, addrs, topic, "g", testLog(t), func(cfg *source.KafkaConfig) {
		cfg.Sarama.Consumer.Interceptors = []sarama.ConsumerInterceptor{countInterceptor{&seen}}
	}), func(_ context.Context, b *stream.Batch[source.Message]) error {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range b.Partitions {
			for i, m := range p.Values {
				total++
				if want := strconv.FormatInt(p.Origin(i).Offset, 10); len(m.Headers) != 1 || m.Headers[0].Key != "seen" || string(m.Headers[0].Value) != want {
					wrong = append(wrong, string(m.Value))
				}
			}
		}
		return nil
	})
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return total >= n }, 20*time.Second, 10*time.Millisecond)
	stop()
	assert.Empty(t, wrong)
	assert.Equal(t, n, total)
	assert.Equal(t, int64(n), seen.Load())
}

// The fetch loops keep sarama's consumer metrics up to date in the
// config's registry, as sarama's partition consumers would: the records a
// fetch brought per partition (consumer-batch-size), the fetches
// (consumer-fetch-rate) and their sizes (consumer-fetch-response-size).
// The records come after the claims began, so that sarama's partition
// consumers, paused, fetch none of them.
func TestKafkaFetchUpdatesSaramaMetrics(t *testing.T) {
	checkLeaks(t)
	const topic, parts, n = "metrics", 2, 400
	_, addrs := startCluster(t, 1, topic, parts)
	produceEach(t, addrs, topic, parts, 0, parts, false)
	reg := metrics.NewRegistry()
	cnt := counter{partitions: parts}
	stop := runSource(t, sourceOn(t, addrs, topic, "g", testLog(t), func(cfg *source.KafkaConfig) {
		cfg.Sarama.MetricRegistry = reg
	}), cnt.count)
	require.Eventually(t, func() bool { return cnt.total() == parts }, 20*time.Second, 10*time.Millisecond)
	sum := func(name string) (n, count int64) {
		switch m := reg.Get(name).(type) {
		case metrics.Histogram:
			return m.Sum(), m.Count()
		case metrics.Meter:
			return 0, m.Count()
		}
		return 0, 0
	}
	records0, _ := sum("consumer-batch-size")
	_, fetches0 := sum("consumer-fetch-rate")
	_, sizes0 := sum("consumer-fetch-response-size")

	produceEach(t, addrs, topic, parts, parts, parts+n, false)
	require.Eventually(t, func() bool { return cnt.total() == parts+n }, 20*time.Second, 10*time.Millisecond)
	records, batches := sum("consumer-batch-size")
	_, fetches := sum("consumer-fetch-rate")
	_, sizes := sum("consumer-fetch-response-size")
	stop()
	assert.Equal(t, int64(n), records-records0, "records in consumer-batch-size, over %d batches", batches)
	assert.Greater(t, fetches, fetches0, "consumer-fetch-rate")
	assert.Greater(t, sizes, sizes0, "consumer-fetch-response-size")
	assert.Nil(t, reg.Get("consumer-batch-size"), "left in the registry after the run")
	assert.Empty(t, cnt.wrong)
}

// A leader that prefers the consumer fetch from a replica of its rack
// (KIP-392, a broker with a replica selector, given the source's RackID)
// answers its fetches with no records and that replica: the source reads
// the partition from the replica, as sarama's consumer does, instead of
// asking the leader again and again for nothing.
//
// A failure on the replica, out of range included (a replica may lag its
// leader), sends the partition back to its leader, not to the oldest
// record.
func TestKafkaFetchFromThePreferredReplica(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		saramaFetch, failsOnce bool
	}{{"own loops", false, false}, {"own loops, replica out of range once", false, true}, {"sarama", true, false}} {
		saramaFetch := tc.saramaFetch
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			const topic, n = "rack", 200
			c, addrs := startCluster(t, 2, topic, 1)
			leader := c.LeaderFor(topic, 0)
			follower := (leader + 1) % 2
			c.SetFollowers(topic, 0, []int32{follower})
			produceEach(t, addrs, topic, 1, 0, n, false)

			// kfake has no replica selector: its leader answers as one
			// that has does, to a consumer of rack r1.
			var redirected, failed atomic.Int64
			c.ControlKey(int16(kmsg.Fetch), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				req := kreq.(*kmsg.FetchRequest)
				if c.CurrentNode() == follower && tc.failsOnce && failed.Add(1) == 1 {
					return kafkatest.FetchAnswer(req, func(sp *kmsg.FetchResponseTopicPartition) { sp.ErrorCode = kerr.OffsetOutOfRange.Code }), nil, true
				}
				if c.CurrentNode() != leader || req.Rack != "r1" || req.Version < 11 {
					return nil, nil, false
				}
				redirected.Add(1)
				return kafkatest.FetchAnswer(req, func(sp *kmsg.FetchResponseTopicPartition) {
					sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = n, n, 0
					sp.PreferredReadReplica = follower
				}), nil, true
			})

			cnt := counter{partitions: 1}
			log, logged := captureLog()
			stop := runSource(t, sourceOn(t, addrs, topic, "g", log, func(cfg *source.KafkaConfig) {
				cfg.Sarama.RackID = "r1"
				cfg.SaramaFetch = saramaFetch
				cfg.Sarama.Consumer.Retry.Backoff = 50 * time.Millisecond
			}), cnt.count)
			require.Eventually(t, func() bool { return cnt.total() >= n }, 20*time.Second, 10*time.Millisecond, "all records read")
			stop()
			if tc.failsOnce {
				assert.Equal(t, int64(2), min(failed.Load(), 2), "the replica failed a fetch")
				assert.Contains(t, logged(), "back to the leader")
			}
			assert.NotContains(t, logged(), "starting again from", "a replica out of range is not the partition's")
			assert.Equal(t, n, cnt.total(), "each record once")
			assert.Empty(t, cnt.wrong)
			assert.Positive(t, redirected.Load(), "the leader sent the fetch to the replica")
			assert.Less(t, redirected.Load(), int64(10), "fetches the leader sent to the replica")
		})
	}
}

// Read committed, StartNewest starts at the last stable offset, before a
// transaction open at the start, as a Kafka consumer does: its records,
// committed after the start, are read, not skipped for good.
func TestKafkaFetchStartNewestReadCommittedKeepsAnOpenTransaction(t *testing.T) {
	checkLeaks(t)
	const topic = "open"
	c, addrs := startCluster(t, 1, topic, 1)
	up := txnProducer(t, addrs, "upstream")
	require.NoError(t, up.BeginTxn())
	// fetchedAt0 is closed by the first fetch from offset 0: the source
	// has resolved its start.
	fetchedAt0 := make(chan struct{})
	var fetched sync.Once
	c.ControlKey(int16(kmsg.Fetch), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, rt := range kreq.(*kmsg.FetchRequest).Topics {
			for _, rp := range rt.Partitions {
				if rp.FetchOffset == 0 {
					fetched.Do(func() { close(fetchedAt0) })
				}
			}
		}
		return nil, nil, false
	})
	for i := range 3 {
		_, _, err := up.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(strconv.Itoa(i))})
		require.NoError(t, err)
	}
	// The transaction is open: the last stable offset is 0, the high
	// watermark 3.

	log, logged := captureLog()
	var got valuesRead
	stop := runSource(t, sourceOn(t, addrs, topic, "g", log, func(c *source.KafkaConfig) {
		c.StartNewest = true
		c.Sarama.Consumer.IsolationLevel = sarama.ReadCommitted
	}), got.add)
	require.Eventually(t, func() bool { return strings.Contains(logged(), "kafka group session started") }, 20*time.Second, 10*time.Millisecond)
	select {
	case <-fetchedAt0:
	case <-time.After(20 * time.Second):
		t.Fatal("no fetch from the last stable offset, 0")
	}

	require.NoError(t, up.CommitTxn())
	produceEach(t, addrs, topic, 1, 3, 4, true) // one more record, after the transaction
	require.Eventually(t, func() bool { return slices.Contains(got.all(), "3") }, 10*time.Second, 10*time.Millisecond)
	stop()
	assert.Equal(t, []string{"0", "1", "2", "3"}, got.all(), "the transaction committed after the start is read, once, in order")
}

// With StartNewest, a group with no committed offset starts at the end of
// the partition: none of the records there before is read, and every
// record after the start is, in order.
func TestKafkaFetchStartNewest(t *testing.T) {
	checkLeaks(t)
	const topic = "newest"
	_, addrs := startCluster(t, 1, topic, 1)
	produceEach(t, addrs, topic, 1, 0, 100, false)
	var mu sync.Mutex
	var got []int
	stop := runSource(t, sourceOn(t, addrs, topic, "g", testLog(t), func(cfg *source.KafkaConfig) {
		cfg.StartNewest = true
	}), func(_ context.Context, b *stream.Batch[source.Message]) error {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range b.Partitions {
			for _, m := range p.Values {
				v, err := strconv.Atoi(string(m.Value))
				if err != nil {
					return err
				}
				got = append(got, v)
			}
		}
		return nil
	})
	// Records keep coming until some are read: when the source starts is
	// not known from outside.
	next := 100
	for deadline := time.Now().Add(20 * time.Second); ; next += 5 {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 20 || time.Now().After(deadline) {
			break
		}
		produceEach(t, addrs, topic, 1, next, next+5, false)
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, len(got), 20)
	assert.GreaterOrEqual(t, got[0], 100, "none of the records there before the start")
	for i, v := range got {
		assert.Equal(t, got[0]+i, v, "every record after the start, in order")
	}
	assert.Equal(t, next, got[len(got)-1]+1, "up to the last")
}

// A fetch failure that a retry does not cure, as the Java consumer's poll
// would throw it, fails Run with an error naming the partition and its
// offset, instead of warnings retried forever while the partition, or
// every partition of the broker, stands still: the topic not authorized,
// the broker's log corrupt, or a record batch whose CRC does not match
// (a response that does not decode, twice).
func TestKafkaFetchFailsOnWhatARetryDoesNotCure(t *testing.T) {
	// badCRC is a record batch of one record, "x" at offset 0, whose CRC
	// is 0.
	badCRC := func() []byte {
		rb := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
			NumRecords: 1, Records: []byte{14, 0, 0, 0, 1, 2, 'x', 0}}
		raw := rb.AppendTo(nil)
		binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12)) // the batch's length
		return raw
	}
	for _, tc := range []struct {
		name string
		fill func(*kmsg.FetchResponseTopicPartition)
		want error
	}{
		{"topic not authorized", func(sp *kmsg.FetchResponseTopicPartition) { sp.ErrorCode = kerr.TopicAuthorizationFailed.Code }, sarama.ErrTopicAuthorizationFailed},
		{"corrupt message", func(sp *kmsg.FetchResponseTopicPartition) { sp.ErrorCode = kerr.CorruptMessage.Code }, sarama.ErrInvalidMessage},
		{"CRC mismatch", func(sp *kmsg.FetchResponseTopicPartition) {
			sp.HighWatermark, sp.LastStableOffset, sp.RecordBatches = 1, 1, badCRC()
		}, sarama.PacketDecodingError{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			const topic = "bad"
			c, addrs := startCluster(t, 1, topic, 2)
			produceEach(t, addrs, topic, 2, 0, 10, false)
			var fetches atomic.Int64
			c.ControlKey(int16(kmsg.Fetch), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				req := kreq.(*kmsg.FetchRequest)
				at := map[int32]int64{}
				for _, rt := range req.Topics {
					for _, rp := range rt.Partitions {
						at[rp.Partition] = rp.FetchOffset
					}
				}
				fetches.Add(1)
				return kafkatest.FetchAnswer(req, func(sp *kmsg.FetchResponseTopicPartition) {
					if sp.Partition == 1 {
						tc.fill(sp)
					} else { // nothing new
						sp.HighWatermark, sp.LastStableOffset = at[sp.Partition], at[sp.Partition]
					}
				}), nil, true
			})

			src := sourceOn(t, addrs, topic, "g", slog.New(slog.DiscardHandler), func(cfg *source.KafkaConfig) {
				cfg.Sarama.Consumer.Retry.Backoff = 20 * time.Millisecond
			})
			p := stream.NewPipeline(stream.Interval(20 * time.Millisecond))
			stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[source.Message]) error { return nil })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				cancel()
				<-done
				t.Fatalf("Run still going after %d fetches", fetches.Load())
			}
			require.Error(t, err)
			if _, ok := tc.want.(sarama.PacketDecodingError); ok {
				require.ErrorAs(t, err, new(sarama.PacketDecodingError))
				assert.Contains(t, err.Error(), "partition 1 at offset 0")
			} else {
				require.ErrorIs(t, err, tc.want)
				assert.Contains(t, err.Error(), "partition 1 at offset 0")
			}
		})
	}
}
