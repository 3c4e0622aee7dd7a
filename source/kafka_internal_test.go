package source

import (
	"context"
	"fmt"
	"net"
	"strconv"
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
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/stream"
)

// These tests drive the source's bookkeeping of partitions, read-ahead and
// rebalances directly, with the claims sarama would run played by hand;
// kafka_test.go runs the same code against a broker.

// session stands for a sarama group session; only its context is used.
type session struct {
	sarama.ConsumerGroupSession
	ctx context.Context
}

func (s session) Context() context.Context { return s.ctx }

func newTestKafka(t *testing.T, buffer int) *Kafka {
	t.Helper()
	k, err := NewKafka(KafkaConfig{Brokers: []string{"b:9092"}, Topic: "t", Group: "g", Buffer: buffer, RevokeTimeout: time.Second})
	require.NoError(t, err)
	return k
}

// claim plays a claim of partition id that starts at offset start.
type claim struct {
	k     *Kafka
	id    int32
	epoch uint64
	next  int64
	h     *kafkaHandler
	sess  session
	end   context.CancelFunc
}

// startTestFetch returns a source of topic, group "g", on brokers, with
// its client and fetch loops, as Run would set them, stopped and closed as
// the test ends.
func startTestFetch(t *testing.T, brokers []string, topic string) (*Kafka, sarama.Client, *kafkaFetch) {
	t.Helper()
	k, err := NewKafka(KafkaConfig{Brokers: brokers, Topic: topic, Group: "g", RevokeTimeout: time.Second})
	require.NoError(t, err)
	k.sarama.Consumer.MaxWaitTime = 100 * time.Millisecond
	client, err := sarama.NewClient(brokers, k.sarama)
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	f := newKafkaFetch(k, client)
	k.mu.Lock()
	k.client, k.fetch = client, f
	k.mu.Unlock()
	t.Cleanup(f.stop)
	return k, client, f
}

func startTestClaim(k *Kafka, id int32, start int64) *claim {
	return startTestClaimCommitted(k, id, start, start)
}

// startTestClaimCommitted plays a claim of partition id that starts at
// offset start, a sentinel, where the group's committed offset is
// committed.
func startTestClaimCommitted(k *Kafka, id int32, start, committed int64) *claim {
	ctx, end := context.WithCancel(context.Background())
	stop := make(chan struct{})
	close(stop) // no waiting for commits unless a test asks for it
	epoch, _, _ := k.startClaim(id, start, committed)
	return &claim{k: k, id: id, epoch: epoch, next: start, h: &kafkaHandler{k: k, stop: stop}, sess: session{ctx: ctx}, end: end}
}

// push queues n records, offsets following the previous ones.
func (c *claim) push(n int) bool {
	ch := kafkaChunks.Get().(*kafkaChunk)
	ch.partition, ch.epoch, ch.off = c.id, c.epoch, 0
	for range n {
		ch.msgs = append(ch.msgs, &sarama.ConsumerMessage{
			Topic: "t", Partition: c.id, Offset: c.next, Value: []byte(strconv.FormatInt(c.next, 10)),
		})
		c.next++
	}
	return c.k.push(ch, c.sess.ctx.Done())
}

// stopSession ends the claim as a session that ends does.
func (c *claim) stopSession() {
	c.end()
	c.h.endClaim(c.sess, c.id, c.epoch)
}

// poll returns the origins Poll hands out, with a buffer of size n, or
// none if nothing comes within a short while.
func poll(k *Kafka, n int) []stream.Origin {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	buf := make([]stream.Record[Message], n)
	got, _ := k.Poll(ctx, buf)
	var out []stream.Origin
	for _, r := range buf[:got] {
		out = append(out, r.Origin)
	}
	return out
}

func origins(p int32, from, to int64) []stream.Origin {
	var out []stream.Origin
	for o := from; o < to; o++ {
		out = append(out, stream.Origin{Source: "t", Partition: p, Offset: o})
	}
	return out
}

func TestKafkaPollKeepsOrderAcrossSmallBuffers(t *testing.T) {
	k := newTestKafka(t, 100)
	a, b := startTestClaim(k, 0, 10), startTestClaim(k, 1, 0)
	require.True(t, a.push(3))
	require.True(t, b.push(2))
	require.True(t, a.push(1))
	assert.Equal(t, origins(0, 10, 12), poll(k, 2))
	assert.Equal(t, append(origins(0, 12, 13), origins(1, 0, 1)...), poll(k, 2))
	assert.Equal(t, append(origins(1, 1, 2), origins(0, 13, 14)...), poll(k, 5))
	assert.Empty(t, poll(k, 5))
	assert.Equal(t, []int32{0, 1}, k.Assignment())
}

func TestKafkaBufferIsBounded(t *testing.T) {
	k := newTestKafka(t, 4)
	c := startTestClaim(k, 0, 0)
	require.True(t, c.push(3))
	require.True(t, c.push(3), "below the bound, a chunk goes in whole")
	pushed := make(chan bool, 1)
	go func() { pushed <- c.push(1) }()
	select {
	case <-pushed:
		t.Fatal("push did not wait for room")
	case <-time.After(50 * time.Millisecond):
	}
	assert.Len(t, poll(k, 4), 4)
	assert.True(t, <-pushed)
	assert.Len(t, poll(k, 10), 3)
}

func TestKafkaRevokedRecordsAreNotHandedOut(t *testing.T) {
	k := newTestKafka(t, 100)
	a, b := startTestClaim(k, 0, 0), startTestClaim(k, 1, 0)
	require.True(t, a.push(2))
	require.True(t, b.push(2))
	assert.Equal(t, []int32{0, 1}, k.Assignment())
	a.stopSession()
	assert.Equal(t, origins(1, 0, 2), poll(k, 10))
	assert.False(t, a.push(1), "a claim that ended queues nothing")
}

func TestKafkaSessionRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		// committed is what the pipeline committed of the 3 records it got.
		committed int64
		// assignmentBetween: the engine calls Assignment between the end
		// of the session and the next claim.
		assignmentBetween bool
		// restart is where the next claim starts: the group's commit, or
		// the oldest record (sarama.OffsetOldest) when that commit,
		// reset, is out of the partition's range; reset is where the
		// claim reads from then.
		restart, reset int64
		// wantBetween is the assignment between the sessions; wantAfter the
		// ones after the next claim started.
		wantBetween []int32
		wantAfter   [][]int32
		// wantFirst is what the pipeline gets first from the next claim.
		wantFirst []stream.Origin
	}{{
		name: "committed and back: the pipeline keeps the partition", committed: 3, assignmentBetween: true, restart: 3,
		wantBetween: []int32{0}, wantAfter: [][]int32{{0}}, wantFirst: origins(0, 3, 5),
	}, {
		name: "uncommitted: dropped, then read again", committed: 0, assignmentBetween: true, restart: 0,
		wantBetween: nil, wantAfter: [][]int32{{0}}, wantFirst: origins(0, 0, 2),
	}, {
		name: "uncommitted and back at once: dropped before the claim's records", committed: 0, restart: 0,
		wantAfter: [][]int32{nil, {0}}, wantFirst: origins(0, 0, 2),
	}, {
		name: "another member went further: dropped before the claim's records", committed: 3, restart: 7,
		wantAfter: [][]int32{nil, {0}}, wantFirst: origins(0, 7, 9),
	}, {
		name: "committed, then deleted past the commit: the pipeline keeps the partition", committed: 3, assignmentBetween: true,
		restart: sarama.OffsetOldest, reset: 7,
		wantBetween: []int32{0}, wantAfter: [][]int32{{0}}, wantFirst: origins(0, 7, 9),
	}, {
		name: "committed, then the log cut short before the commit: dropped before the claim's records", committed: 3,
		restart: sarama.OffsetOldest, reset: 0,
		wantAfter: [][]int32{nil, {0}}, wantFirst: origins(0, 0, 2),
	}, {
		name: "uncommitted, then deleted past the commit: dropped before the claim's records", committed: 0,
		restart: sarama.OffsetOldest, reset: 7,
		wantAfter: [][]int32{nil, {0}}, wantFirst: origins(0, 7, 9),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			k := newTestKafka(t, 100)
			c := startTestClaim(k, 0, 0)
			require.True(t, c.push(3))
			require.Len(t, poll(k, 10), 3)
			require.Equal(t, []int32{0}, k.Assignment())
			k.committed([]stream.Offset{{Source: "t", Partition: 0, Next: tc.committed}})
			c.stopSession()
			if tc.assignmentBetween {
				assert.Equal(t, tc.wantBetween, k.Assignment())
			}

			if tc.restart >= 0 {
				c = startTestClaim(k, 0, tc.restart)
			} else {
				c = startTestClaimCommitted(k, 0, tc.restart, tc.committed)
				c.next = tc.reset
			}
			require.True(t, c.push(2))
			for i, want := range tc.wantAfter {
				if i == len(tc.wantAfter)-1 {
					assert.Equal(t, tc.wantFirst, poll(k, 10))
				} else {
					assert.Empty(t, poll(k, 10), "no record of the claim before the drop")
				}
				assert.Equal(t, want, k.Assignment(), "assignment %d", i)
			}
		})
	}
}

// A claim that started at the oldest record, the group having no commit,
// handed out nothing, but the pipeline holds the partition (its state as
// restored when it came). Another member then held it and committed 7,
// which retention left behind before it came back: the next claim starts
// at the oldest record again, and the pipeline's state misses what that
// member read, as it would had the claim started at 7.
func TestKafkaRestartPastAnotherMembersCommitOutOfRange(t *testing.T) {
	k := newTestKafka(t, 100)
	c := startTestClaimCommitted(k, 0, sarama.OffsetOldest, -1)
	require.Equal(t, []int32{0}, k.Assignment())
	c.stopSession()

	c = startTestClaimCommitted(k, 0, sarama.OffsetOldest, 7)
	c.next = 9
	require.True(t, c.push(2))
	assert.Empty(t, poll(k, 10), "no record of the claim before the drop")
	assert.Empty(t, k.Assignment())
	assert.Equal(t, origins(0, 9, 11), poll(k, 10))
	assert.Equal(t, []int32{0}, k.Assignment())
}

// testClaim stands for a sarama claim of partition 0 of topic "t".
type testClaim struct {
	sarama.ConsumerGroupClaim
	initial int64
	msgs    chan *sarama.ConsumerMessage
}

func (c testClaim) Topic() string                            { return "t" }
func (c testClaim) Partition() int32                         { return 0 }
func (c testClaim) InitialOffset() int64                     { return c.initial }
func (c testClaim) HighWaterMarkOffset() int64               { return 0 }
func (c testClaim) Messages() <-chan *sarama.ConsumerMessage { return c.msgs }

// A claim at a sentinel cut short by a rebalance while it asks the group
// for its committed offset does not learn it, and never hands out a
// record: it does not start. The partition the pipeline holds, committed
// up to where it ends, stays with it for the next generation's claim,
// which finds the commit.
func TestKafkaClaimCutShortByARebalanceKeepsThePartition(t *testing.T) {
	k := newTestKafka(t, 100)
	c := startTestClaim(k, 0, 0)
	require.True(t, c.push(3))
	require.Len(t, poll(k, 10), 3)
	require.Equal(t, []int32{0}, k.Assignment())
	k.committed([]stream.Offset{{Source: "t", Partition: 0, Next: 3}})
	c.stopSession()

	ended, end := context.WithCancel(context.Background())
	end()
	h := &kafkaHandler{k: k, stop: make(chan struct{})}
	require.NoError(t, h.ConsumeClaim(session{ctx: ended}, testClaim{initial: sarama.OffsetOldest, msgs: make(chan *sarama.ConsumerMessage)}))
	assert.Equal(t, []int32{0}, k.Assignment(), "the pipeline keeps the partition")

	c = startTestClaim(k, 0, 3)
	require.True(t, c.push(2))
	assert.Equal(t, origins(0, 3, 5), poll(k, 10))
	assert.Equal(t, []int32{0}, k.Assignment())
}

// revokeWaits ends claim c as a cooperative revoke does, the generation
// going on, and fails t if the claim lets go within 50ms, before its
// records are committed. revoked is closed once it lets go.
func revokeWaits(t *testing.T, c *claim) (revoked <-chan struct{}) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		c.h.endClaim(c.sess, c.id, c.epoch)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("the claim let go before its records were committed")
	case <-time.After(50 * time.Millisecond):
	}
	return done
}

func TestKafkaRevokeWaitsForCommit(t *testing.T) {
	k := newTestKafka(t, 100)
	c := startTestClaim(k, 0, 0)
	c.h.stop = make(chan struct{}) // Run goes on: the claim waits for commits
	require.True(t, c.push(3))
	require.Len(t, poll(k, 10), 3)
	require.Equal(t, []int32{0}, k.Assignment())

	revoked := revokeWaits(t, c)
	assert.Equal(t, []int32{0}, k.Assignment(), "the pipeline keeps the partition while it commits")
	k.committed([]stream.Offset{{Source: "t", Partition: 0, Next: 3}})
	<-revoked
	assert.Empty(t, k.Assignment(), "then the partition is lost")
}

// The pipeline kept a partition, committed at 3, across a claim that
// started at the oldest record past that commit, out of range; the
// claim's first record is 0 (the topic was made again), so the pipeline
// drops the partition and reads from there. Revoked after it read 0 and
// 1, the claim waits for them to be committed, as any claim does: the
// group's commit of 3, from before, is not theirs.
func TestKafkaRevokeAfterARestartBeforeTheCommitWaitsForCommit(t *testing.T) {
	k := newTestKafka(t, 100)
	c := startTestClaim(k, 0, 0)
	require.True(t, c.push(3))
	require.Len(t, poll(k, 10), 3)
	require.Equal(t, []int32{0}, k.Assignment())
	k.committed([]stream.Offset{{Source: "t", Partition: 0, Next: 3}})
	c.stopSession()

	c = startTestClaimCommitted(k, 0, sarama.OffsetOldest, 3)
	c.h.stop = make(chan struct{}) // Run goes on: the claim waits for commits
	c.next = 0
	require.True(t, c.push(2))
	require.Empty(t, poll(k, 10))
	require.Empty(t, k.Assignment(), "dropped before the claim's records")
	require.Equal(t, origins(0, 0, 2), poll(k, 10))
	require.Equal(t, []int32{0}, k.Assignment())

	revoked := revokeWaits(t, c)
	k.committed([]stream.Offset{{Source: "t", Partition: 0, Next: 2}})
	<-revoked
	assert.Empty(t, k.Assignment(), "then the partition is lost")
}

// testLoop is a fetch loop of k that fetches nothing: a test hands its
// take the blocks of responses.
func testLoop(k *Kafka, c *claim, from int64) *fetchLoop {
	f := &kafkaFetch{k: k, loops: map[int32]*fetchLoop{}, claims: map[int32]uint64{c.id: c.epoch}, done: make(chan struct{})}
	l := &fetchLoop{f: f, parts: map[int32]*fetchPart{c.id: {id: c.id, epoch: c.epoch, pos: from, size: 1 << 20, replica: -1}}, stop: make(chan struct{})}
	f.loops[0] = l
	return l
}

// values returns the values Poll hands out, with a buffer of n.
func values(k *Kafka, n int) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	buf := make([]stream.Record[Message], n)
	got, _ := k.Poll(ctx, buf)
	var out []string
	for _, r := range buf[:got] {
		out = append(out, strconv.FormatInt(r.Origin.Offset, 10)+"="+string(r.Value.Value))
	}
	return out
}

// The messages of the format before Kafka 0.11, compressed (offsets
// relative to the wrapper's) or not, are read as sarama's consumer reads
// them, and the position moves past them.
func TestKafkaFetchTakesOldMessageFormat(t *testing.T) {
	k := newTestKafka(t, 100)
	c := startTestClaim(k, 0, 0)
	l := testLoop(k, c, 1)
	msg := func(off int64, v string) *sarama.MessageBlock {
		return &sarama.MessageBlock{Offset: off, Msg: &sarama.Message{Version: 1, Value: []byte(v), Timestamp: time.UnixMilli(1000 + off)}}
	}
	inner := &sarama.MessageSet{Messages: []*sarama.MessageBlock{msg(0, "c"), msg(1, "d"), msg(2, "e")}}
	wrapper := &sarama.MessageBlock{Offset: 5, Msg: &sarama.Message{Version: 1, Codec: sarama.CompressionGZIP, Set: inner, Timestamp: time.UnixMilli(9)}}
	block := &sarama.FetchResponseBlock{HighWaterMarkOffset: 6, RecordsSet: []*sarama.Records{
		{MsgSet: &sarama.MessageSet{Messages: []*sarama.MessageBlock{msg(0, "a"), msg(1, "b"), msg(2, "x")}}},
		{MsgSet: &sarama.MessageSet{Messages: []*sarama.MessageBlock{wrapper}}},
	}}
	require.True(t, l.take(*l.parts[0], block))
	assert.Equal(t, []string{"1=b", "2=x", "3=c", "4=d", "5=e"}, values(k, 10), "from the position on, inner offsets after the wrapper's base")
	assert.Equal(t, int64(6), l.parts[0].pos)

	// The same block again (a fetch from before the position) queues nothing.
	l.parts[0].pos = 0
	require.True(t, l.take(*l.parts[0], block))
	assert.Empty(t, values(k, 10))
}

// At a claim's start, the records sarama's partition consumer fetched
// before its pause and those of the fetch loop overlap: each is handed out
// once, in order.
func TestKafkaFetchAndPausedConsumerOverlap(t *testing.T) {
	k := newTestKafka(t, 100)
	c := startTestClaim(k, 0, 0)
	require.True(t, c.push(6)) // offsets 0..5 from the partition consumer
	l := testLoop(k, c, 0)
	batch := &sarama.RecordBatch{FirstOffset: 0, LastOffsetDelta: 9, Version: 2}
	for i := range int64(10) {
		batch.Records = append(batch.Records, &sarama.Record{OffsetDelta: i, Value: []byte(strconv.FormatInt(i, 10))})
	}
	block := &sarama.FetchResponseBlock{HighWaterMarkOffset: 10, RecordsSet: []*sarama.Records{{RecordBatch: batch}}}
	require.True(t, l.take(*l.parts[0], block))
	c.next = 4
	require.True(t, c.push(8)) // the partition consumer's last: 4..11, 4..9 again
	var want []string
	for i := range 12 {
		want = append(want, strconv.Itoa(i)+"="+strconv.Itoa(i))
	}
	assert.Equal(t, want, values(k, 20))
	assert.Equal(t, int64(10), l.parts[0].pos, "the loop's position is its own")
}

// A batch larger than the bytes asked of its partition comes cut short
// (a broker gives whole only the first partition of a response): sarama
// keeps none of it and marks the block Partial. The next fetch asks for
// more, until the batch fits, instead of the same bytes forever.
func TestKafkaFetchGrowsPastABatchCutShort(t *testing.T) {
	k := newTestKafka(t, 100)
	c := startTestClaim(k, 0, 0)
	l := testLoop(k, c, 7)
	l.parts[0].size = 1000
	block := &sarama.FetchResponseBlock{HighWaterMarkOffset: 20, Partial: true}
	require.True(t, l.take(*l.parts[0], block))
	assert.Equal(t, int64(7), l.parts[0].pos, "nothing taken")
	assert.Greater(t, l.parts[0].size, int32(1000), "more asked next time")

	// At the high watermark an empty block is no batch cut short.
	l.parts[0].pos, l.parts[0].size = 20, 1000
	require.True(t, l.take(*l.parts[0], &sarama.FetchResponseBlock{HighWaterMarkOffset: 20}))
	assert.Equal(t, int32(1000), l.parts[0].size)
}

// A revoked claim whose RevokeTimeout ends while commits come in reads
// what it logs under the source's lock: no data race with the commits.
func TestRevokeTimeoutLogsUnderTheLock(t *testing.T) {
	for range 200 {
		k, err := NewKafka(KafkaConfig{Brokers: []string{"b:9092"}, Topic: "t", Group: "g", Buffer: 100, RevokeTimeout: time.Millisecond})
		require.NoError(t, err)
		c := startTestClaim(k, 0, 0)
		c.h.stop = make(chan struct{}) // Run goes on: the claim waits for commits
		require.True(t, c.push(3))
		require.Len(t, poll(k, 10), 3)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				k.committed([]stream.Offset{{Source: "t", Partition: 0, Next: 1}}) // not all: the claim waits on
			}
		}()
		c.h.endClaim(c.sess, c.id, c.epoch)
		cancel()
		<-done
	}
}

// A partition taken out of its fetch loop to be routed again (after a
// failed fetch, or a leader move) while its claim ends is not put back in
// a loop once the claim removed it: nothing would ever remove it again,
// and its loop would fetch it for nothing until Run ends.
func TestKafkaFetchRouteAfterTheClaimEnded(t *testing.T) {
	const topic = "orphan"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	require.NoError(t, err)
	t.Cleanup(c.Close) // after the fetch (startTestFetch)
	// A fetch the broker parks (MaxWaitTime) comes back through the
	// control when it wakes: the requests are counted once each.
	var (
		fetchMu sync.Mutex
		fetched = map[kmsg.Request]bool{}
	)
	fetches := func() int {
		fetchMu.Lock()
		defer fetchMu.Unlock()
		return len(fetched)
	}
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		fetchMu.Lock()
		fetched[req] = true
		fetchMu.Unlock()
		return nil, nil, false // counted, then served as usual
	})

	k, _, f := startTestFetch(t, c.ListenAddrs(), topic)

	pcfg := sarama.NewConfig()
	pcfg.Producer.Return.Successes = true
	prod, err := sarama.NewSyncProducer(c.ListenAddrs(), pcfg)
	require.NoError(t, err)
	defer prod.Close()
	for i := range 50 {
		_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(strconv.Itoa(i))})
		require.NoError(t, err)
	}

	// The claim starts, as ConsumeClaim starts it, and its records come.
	cl := startTestClaim(k, 0, 0)
	f.add(0, cl.epoch, 0)
	require.Eventually(t, func() bool { return len(poll(k, 100)) > 0 }, 5*time.Second, 10*time.Millisecond)

	// A reroute takes the partition out of its loop, to route it again.
	f.mu.Lock()
	var part *fetchPart
	for _, l := range f.loops {
		if p := l.parts[0]; p != nil {
			part = p
			delete(l.parts, 0)
		}
	}
	f.mu.Unlock()
	require.NotNil(t, part)

	// The claim ends (ConsumeClaim's deferred remove, then endClaim), with
	// the reroute's route in between.
	f.remove(0, cl.epoch)
	f.route(part)
	cl.end()
	cl.h.endClaim(cl.sess, cl.id, cl.epoch)
	k.Assignment()

	f.mu.Lock()
	left := 0
	for _, l := range f.loops {
		left += len(l.parts)
	}
	f.mu.Unlock()
	assert.Zero(t, left, "the partition of an ended claim is back in a fetch loop")

	// A fetch sent before the claim ended is answered within MaxWaitTime.
	// Then records keep coming (another member reads them): no fetch of
	// them here. (A partition left in a loop would be fetched every
	// MaxWaitTime at least; one fetch is allowed for a loop that took the
	// partition before the claim ended and was slow to send it.)
	time.Sleep(3 * k.sarama.Consumer.MaxWaitTime)
	before := fetches()
	for i := 50; i < 60; i++ {
		_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(strconv.Itoa(i))})
		require.NoError(t, err)
	}
	time.Sleep(6 * k.sarama.Consumer.MaxWaitTime)
	assert.LessOrEqual(t, fetches()-before, 1, "fetches with no partition claimed")
}

// Owns follows the claims: owned while a claim runs and while it ends
// waiting for the pipeline's commit, not once it let go (a cooperative
// revoke), between sessions (an eager rebalance) or before any claim; and
// asking changes nothing of what Assignment then says.
func TestKafkaOwns(t *testing.T) {
	k := newTestKafka(t, 100)
	assert.False(t, k.Owns(0), "no claim yet")
	c := startTestClaim(k, 0, 0)
	c.h.stop = make(chan struct{}) // Run goes on: the claim waits for commits
	require.True(t, c.push(3))
	require.Len(t, poll(k, 10), 3)
	assert.True(t, k.Owns(0))
	assert.False(t, k.Owns(1))
	require.Equal(t, []int32{0}, k.Assignment())

	revoked := make(chan struct{})
	go func() {
		c.h.endClaim(c.sess, c.id, c.epoch) // cooperative: the session goes on
		close(revoked)
	}()
	assert.Never(t, func() bool {
		select {
		case <-revoked:
			return true
		default:
			return !k.Owns(0)
		}
	}, 50*time.Millisecond, 5*time.Millisecond, "owned while the claim waits for the commit")
	k.committed([]stream.Offset{{Source: "t", Partition: 0, Next: 3}})
	<-revoked
	assert.False(t, k.Owns(0), "the claim let go")
	assert.Empty(t, k.Assignment())

	// An eager rebalance: the session ends, the partition is between
	// sessions, and the pipeline keeps it (committed) until the next.
	c = startTestClaim(k, 1, 0)
	require.True(t, c.push(2))
	require.Len(t, poll(k, 10), 2)
	require.Equal(t, []int32{1}, k.Assignment())
	k.committed([]stream.Offset{{Source: "t", Partition: 1, Next: 2}})
	c.stopSession()
	assert.False(t, k.Owns(1), "between sessions")
	assert.Equal(t, []int32{1}, k.Assignment(), "Owns took nothing from the assignment")
	c = startTestClaim(k, 1, 2)
	assert.True(t, k.Owns(1), "claimed again")
}

// The messages sarama's partition consumer (SaramaFetch) hands a claim
// at a sentinel while it waits for the group's committed offset are
// handed out first once it starts, none lost; a claim whose messages
// close meanwhile (a cooperative rebalance revoked it) does not start.
func TestKafkaClaimStartKeepsTheMessagesThatCameMeanwhile(t *testing.T) {
	k := newTestKafka(t, 100) // no client: each fetch of the commit fails at once, as after Run's end
	stop := make(chan struct{})
	close(stop) // no waiting for commits
	h := &kafkaHandler{k: k, stop: stop}
	ctx, end := context.WithCancel(context.Background())
	defer end()
	msgs := make(chan *sarama.ConsumerMessage)
	claimed := make(chan error, 1)
	go func() {
		claimed <- h.ConsumeClaim(session{ctx: ctx}, testClaim{initial: sarama.OffsetOldest, msgs: msgs})
	}()
	for off := int64(80); off < 85; off++ {
		msgs <- &sarama.ConsumerMessage{Topic: "t", Partition: 0, Offset: off}
	}
	require.Eventually(t, func() bool { return k.Owns(0) }, 10*time.Second, time.Millisecond)
	msgs <- &sarama.ConsumerMessage{Topic: "t", Partition: 0, Offset: 85}
	var got []stream.Origin
	require.Eventually(t, func() bool {
		got = append(got, poll(k, 10)...)
		return len(got) >= 6
	}, 10*time.Second, time.Millisecond)
	assert.Equal(t, origins(0, 80, 86), got)
	close(msgs)
	require.NoError(t, <-claimed)

	// Revoked while it waits.
	k.Assignment()
	msgs = make(chan *sarama.ConsumerMessage)
	go func() {
		claimed <- h.ConsumeClaim(session{ctx: ctx}, testClaim{initial: sarama.OffsetOldest, msgs: msgs})
	}()
	msgs <- &sarama.ConsumerMessage{Topic: "t", Partition: 0, Offset: 86}
	close(msgs)
	select {
	case err := <-claimed:
		require.NoError(t, err)
	case <-time.After(100 * time.Millisecond):
		t.Fatal("the claim revoked went on waiting")
	}
	assert.False(t, k.Owns(0), "the claim did not start")
	assert.Empty(t, poll(k, 10))
}

// simpleSession commits as a client outside any group generation does,
// which a group with no members takes.
type simpleSession struct {
	session
}

func (simpleSession) GenerationID() int32 { return -1 }
func (simpleSession) MemberID() string    { return "" }

// The source looks the group coordinator up (FindCoordinator, on a
// connection of its own) without its lock: while a commit's or a claim's
// offset fetch waits for the answer, the claims still queue records and
// Poll still hands them out. Once the lookup is answered, both go through
// on connections of their own.
func TestKafkaCoordinatorLookupDoesNotHoldUpRecords(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
	commit := func(k *Kafka, client sarama.Client, next int64) error {
		done, err := k.commit(context.Background(), client, simpleSession{session{ctx: context.Background()}},
			[]stream.Offset{{Source: "t", Partition: 0, Next: next}})
		if err == nil && len(done) != 1 {
			return fmt.Errorf("%d offsets committed, want 1", len(done))
		}
		return err
	}
	for _, tc := range []struct {
		name string
		// held is what waits for the coordinator: a commit, or a claim's
		// offset fetch.
		held func(k *Kafka, client sarama.Client) error
	}{
		{"commit", func(k *Kafka, client sarama.Client) error { return commit(k, client, 2) }},
		{"offset fetch", func(k *Kafka, client sarama.Client) error {
			off, err := k.fetchCommitted(client, 0)
			if err == nil && off != 1 {
				return fmt.Errorf("committed offset %d, want 1", off)
			}
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"t": 1}})
			require.NoError(t, err)
			defer b.Close()
			newSource := func() (*Kafka, sarama.Client) { return newClientSource(t, b.Addrs(), nil) }
			// The group has a commit: the broker knows it.
			k, client := newSource()
			require.NoError(t, commit(k, client, 1))
			k.closeCoordinators()
			require.NoError(t, client.Close())

			// A new client knows no coordinator yet, as one whose
			// coordinator went away with its broker: the next request
			// to the coordinator looks it up.
			k, client = newSource()
			defer client.Close()
			defer k.closeCoordinators()

			// The first FindCoordinator is held until release, as by
			// brokers that do not answer.
			came, release := b.Stall(kmsg.FindCoordinator.Int16())
			defer release()

			cl := startTestClaim(k, 0, 0)
			defer cl.end()
			held := make(chan error, 1)
			go func() { held <- tc.held(k, client) }()
			select {
			case <-came:
			case <-time.After(10 * time.Second):
				t.Fatal("no FindCoordinator")
			}

			var wg sync.WaitGroup
			got := make(chan []stream.Origin, 1)
			wg.Go(func() {
				cl.push(3)
				got <- poll(k, 10)
			})
			select {
			case o := <-got:
				assert.Equal(t, origins(0, 0, 3), o)
			case <-time.After(2 * time.Second):
				t.Error("records held up while the coordinator is looked up")
			}
			release()
			wg.Wait()
			select {
			case err := <-held:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("no answer once the coordinator was found")
			}

			require.NoError(t, commit(k, client, 3))
			off, err := k.fetchCommitted(client, 0)
			require.NoError(t, err)
			assert.Equal(t, int64(3), off)
		})
	}
}

// Closing the dialer of a lookup of the coordinator ends a dial in
// progress through the config's proxy dialer, which the lookup waits for
// with the broker's lock held, as Run's end and a claim that gives up its
// fetch do.
func TestKafkaCoordinatorLookupDialEndsWithItsDialer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	defer c.Close()
	client, err := sarama.NewClient(c.ListenAddrs(), sarama.NewConfig())
	require.NoError(t, err)
	defer client.Close()
	hang := kafkatest.NewHangingDialer(t)
	sc := sarama.NewConfig()
	sc.Net.Proxy.Enable, sc.Net.Proxy.Dialer = true, hang
	k, err := NewKafka(KafkaConfig{Brokers: c.ListenAddrs(), Topic: "t", Group: "g", RevokeTimeout: time.Second, Sarama: sc})
	require.NoError(t, err)
	dial := kafkaconf.NewCutDialer(k.sarama)
	looked := make(chan error, 1)
	go func() {
		b, err := k.openCoordinator(client, dial)
		if b != nil {
			_ = b.Close()
		}
		looked <- err
	}()
	<-hang.Dialing()
	dial.Close()
	select {
	case err := <-looked:
		assert.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("the lookup's dial went on after its dialer closed")
	}
}

// A claim that starts at a sentinel during a failover of the group
// coordinator, while the brokers answer its lookup with
// COORDINATOR_NOT_AVAILABLE, waits for the new coordinator and fetches the
// group's committed offset: the lookup retries as sarama's client does
// (Metadata.Retry), and the claim tries again while the coordinator is
// not available: without the commit, it would drop the pipeline's state.
func TestKafkaClaimStartDuringACoordinatorFailover(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	defer c.Close()
	newSource := func() (*Kafka, sarama.Client) {
		sc := sarama.NewConfig()
		sc.Metadata.Retry.Backoff = 10 * time.Millisecond
		return newClientSource(t, c.ListenAddrs(), sc)
	}
	k, client := newSource()
	done, err := k.commit(context.Background(), client, simpleSession{session{ctx: context.Background()}},
		[]stream.Offset{{Source: "t", Partition: 0, Next: 5}})
	require.NoError(t, err)
	require.Len(t, done, 1)
	k.closeCoordinators()
	require.NoError(t, client.Close())

	k, client = newSource()
	defer client.Close()
	defer k.closeCoordinators()
	// More lookups refused than the claim's quick tries (5), fewer than
	// sarama's retries of each cover.
	var refused atomic.Int32
	c.ControlKey(kmsg.FindCoordinator.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if refused.Add(1) > 8 {
			return nil, nil, false
		}
		c.KeepControl()
		r := req.(*kmsg.FindCoordinatorRequest)
		resp := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		for _, key := range r.CoordinatorKeys {
			resp.Coordinators = append(resp.Coordinators,
				kmsg.FindCoordinatorResponseCoordinator{Key: key, ErrorCode: kerr.CoordinatorNotAvailable.Code})
		}
		return resp, nil, true
	})
	off, _, ok := k.committedOffset(session{ctx: context.Background()}, nil, 0)
	k.offsetFetches.Wait()
	assert.True(t, ok)
	assert.Equal(t, int64(5), off, "the group's committed offset")
	assert.Greater(t, refused.Load(), int32(8), "the lookups refused")
}

// Closing the dialer of a lookup that waits to try the brokers again
// ends it at once, as Run's end and a claim that gives up its fetch do.
func TestKafkaCoordinatorLookupRetryEndsWithItsDialer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	defer c.Close()
	sc := sarama.NewConfig()
	sc.Metadata.Retry.Backoff = time.Minute
	k, err := NewKafka(KafkaConfig{Brokers: c.ListenAddrs(), Topic: "t", Group: "g", RevokeTimeout: time.Second, Sarama: sc})
	require.NoError(t, err)
	client, err := sarama.NewClient(c.ListenAddrs(), k.sarama)
	require.NoError(t, err)
	defer client.Close()
	refused := make(chan struct{})
	c.ControlKey(kmsg.FindCoordinator.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.FindCoordinatorRequest)
		resp := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		close(refused)
		return resp, nil, true
	})
	dial := kafkaconf.NewCutDialer(k.sarama)
	looked := make(chan error, 1)
	go func() {
		b, err := k.openCoordinator(client, dial)
		if b != nil {
			_ = b.Close()
		}
		looked <- err
	}()
	select {
	case <-refused:
	case <-time.After(10 * time.Second):
		t.Fatal("no FindCoordinator")
	}
	// The answer comes, and the lookup waits a minute to ask again.
	time.Sleep(time.Second)
	dial.Close()
	select {
	case err := <-looked:
		assert.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the lookup waited on after its dialer closed")
	}
}

// The source's own connections to the coordinator register in the Sarama
// config's metric registry, beside the client's: closing one after a
// failure, or at Run's end, leaves the metrics they share with the
// client's connections (request-rate, ...) registered, and the client's
// requests go on counting in them.
func TestKafkaCoordinatorCloseKeepsSharedMetrics(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	defer c.Close()
	k, client := newClientSource(t, c.ListenAddrs(), nil)
	defer client.Close()
	registry := k.sarama.MetricRegistry
	// counted checks that the client's requests count in the request-rate
	// registered.
	counted := func(when string) {
		t.Helper()
		m, ok := registry.Get("request-rate").(metrics.Meter)
		require.True(t, ok, "request-rate registered %s", when)
		before := m.Count()
		require.NoError(t, client.RefreshMetadata("t"))
		assert.Greater(t, m.Count(), before, "the client's requests count in request-rate %s", when)
	}
	commit := func(next int64) {
		t.Helper()
		done, err := k.commit(context.Background(), client, simpleSession{session{ctx: context.Background()}},
			[]stream.Offset{{Source: "t", Partition: 0, Next: next}})
		require.NoError(t, err)
		require.Len(t, done, 1)
	}
	commit(1)
	counted("after a commit")

	// The next commit is refused a few times: each time, the source
	// drops its connection to the coordinator, and makes another, which
	// registers nothing new.
	registered := len(registry.GetAll())
	var refused atomic.Int32
	c.ControlKey(kmsg.OffsetCommit.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if refused.Add(1) < 5 {
			c.KeepControl()
		} else {
			c.DropControl() // KeepControl, once called, lasts
		}
		r := req.(*kmsg.OffsetCommitRequest)
		resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetCommitResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.NotCoordinator.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	commit(2)
	require.Equal(t, int32(5), refused.Load(), "commits refused")
	counted("after a coordinator connection dropped")
	assert.Equal(t, registered, len(registry.GetAll()), "metrics registered")
	_, err = k.fetchCommitted(client, 0)
	require.NoError(t, err)

	k.closeCoordinators()
	counted("after Run's end closed the coordinator connections")
}

// So do the fetch loops' connections: a loop that closes its connection
// after a failure leaves the metrics it shares with the client's
// registered, and counted in.
func TestKafkaFetchConnectionCloseKeepsSharedMetrics(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	t.Cleanup(c.Close) // after the fetch (startTestFetch)
	k, client, f := startTestFetch(t, c.ListenAddrs(), "t")

	pcfg := sarama.NewConfig()
	pcfg.Producer.Return.Successes = true
	prod, err := sarama.NewSyncProducer(c.ListenAddrs(), pcfg)
	require.NoError(t, err)
	defer prod.Close()
	_, _, err = prod.SendMessage(&sarama.ProducerMessage{Topic: "t", Value: sarama.StringEncoder("v")})
	require.NoError(t, err)
	cl := startTestClaim(k, 0, 0)
	f.add(0, cl.epoch, 0)
	require.Eventually(t, func() bool { return len(poll(k, 100)) > 0 }, 10*time.Second, 10*time.Millisecond)

	// The loop closes its connection, as after a failed fetch.
	f.mu.Lock()
	var l *fetchLoop
	for _, fl := range f.loops {
		l = fl
	}
	f.mu.Unlock()
	require.NotNil(t, l)
	f.mu.Lock()
	conn := l.conn
	f.mu.Unlock()
	require.NotNil(t, conn)
	l.reroute(conn, nil)

	m, ok := k.sarama.MetricRegistry.Get("request-rate").(metrics.Meter)
	require.True(t, ok, "request-rate registered")
	before := m.Count()
	require.NoError(t, client.RefreshMetadata("t"))
	assert.Greater(t, m.Count(), before, "the client's requests count in request-rate")
}

// A claim with SaramaFetch that waits through a coordinator failover for
// the group's committed offset, and whose messages filled the Buffer
// meanwhile, still sees its messages close (a cooperative rebalance
// revoked it) and lets the partition go at once: the rebalance would
// wait for it, the partition with no owner, up to the rebalance timeout.
func TestKafkaClaimRevokedWhileItsEarlyMessagesFillTheBuffer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	require.NoError(t, err)
	defer c.Close()
	k, err := NewKafka(KafkaConfig{Brokers: c.ListenAddrs(), Topic: "t", Group: "g", Buffer: 3, RevokeTimeout: time.Second})
	require.NoError(t, err)
	client, err := sarama.NewClient(c.ListenAddrs(), k.sarama)
	require.NoError(t, err)
	defer client.Close()
	group, err := sarama.NewConsumerGroupFromClient("g", client)
	require.NoError(t, err)
	defer group.Close()
	k.mu.Lock()
	k.client, k.group = client, group
	k.mu.Unlock()
	defer k.closeCoordinators()
	// The coordinator loads the group's offsets for as long as the test.
	c.ControlKey(kmsg.OffsetFetch.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return kafkatest.OffsetFetchError(r.(*kmsg.OffsetFetchRequest), kerr.CoordinatorLoadInProgress.Code), nil, true
	})

	msgs := make(chan *sarama.ConsumerMessage)
	type result struct {
		off int64
		ok  bool
	}
	fetched := make(chan result, 1)
	go func() {
		off, _, ok := k.committedOffset(session{ctx: context.Background()}, msgs, 0)
		fetched <- result{off, ok}
	}()
	for off := int64(0); off < 3; off++ {
		select {
		case msgs <- &sarama.ConsumerMessage{Topic: "t", Partition: 0, Offset: off}:
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d not taken", off)
		}
	}
	// What sarama's partition consumer fetched before the claim paused it
	// still comes.
	select {
	case msgs <- &sarama.ConsumerMessage{Topic: "t", Partition: 0, Offset: 3}:
	case <-time.After(10 * time.Second):
		t.Fatal("the claim stopped taking messages: a revoke would go unseen")
	}
	close(msgs)
	select {
	case r := <-fetched:
		assert.False(t, r.ok, "the claim revoked goes on")
	case <-time.After(10 * time.Second):
		t.Fatal("the claim revoked went on waiting for the coordinator")
	}
	k.offsetFetches.Wait()
}

// newClientSource returns a source of topic "t", group "g" on brokers,
// under sc (nil: the default), with a client of its own as Run would
// have made, for the tests of what its claims and commits ask the
// coordinator; the caller closes the client.
func newClientSource(t *testing.T, brokers []string, sc *sarama.Config) (*Kafka, sarama.Client) {
	t.Helper()
	k, err := NewKafka(KafkaConfig{Brokers: brokers, Topic: "t", Group: "g", RevokeTimeout: time.Second, Sarama: sc})
	require.NoError(t, err)
	client, err := sarama.NewClient(brokers, k.sarama)
	require.NoError(t, err)
	k.mu.Lock()
	k.client = client
	k.mu.Unlock()
	return k, client
}
