package txn_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink/txn"
)

func TestMain(m *testing.M) {
	// sarama's metrics start one process-wide goroutine that never ends.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
}

func msg(value string) *sarama.ProducerMessage {
	return &sarama.ProducerMessage{Topic: "out", Value: sarama.StringEncoder(value)}
}

// startBroker starts a broker with topics, closed when the test ends.
func startBroker(t *testing.T, topics map[string]int32) *kafkatest.Broker {
	t.Helper()
	return startBrokerOf(t, kafkatest.Config{Topics: topics})
}

// startBrokerOf is startBroker of cfg.
func startBrokerOf(t *testing.T, cfg kafkatest.Config) *kafkatest.Broker {
	t.Helper()
	b, err := kafkatest.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

// newProducer returns a Producer of the transactional id to b, whose
// Close must succeed when the test ends.
func newProducer(t *testing.T, b *kafkatest.Broker, id string) *txn.Producer {
	t.Helper()
	return newProducerOf(t, b, txn.Config{ID: id})
}

// newProducerOf is newProducer of cfg, whose Brokers are b's.
func newProducerOf(t *testing.T, b *kafkatest.Broker, cfg txn.Config) *txn.Producer {
	t.Helper()
	cfg.Brokers = b.Addrs()
	p, err := txn.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, p.Close()) })
	return p
}

// commitValues writes a transaction of one record per value, and commits it.
func commitValues(t *testing.T, p *txn.Producer, values ...string) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, p.Begin(ctx))
	msgs := make([]*sarama.ProducerMessage, len(values))
	for i, v := range values {
		msgs[i] = msg(v)
	}
	require.NoError(t, p.Send(ctx, msgs))
	require.NoError(t, p.Commit(ctx))
}

// committed returns the values of out that a read_committed consumer sees.
func committed(t *testing.T, b *kafkatest.Broker) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := b.CommittedRecords(ctx, "out")
	require.NoError(t, err)
	var out []string
	for _, r := range recs {
		out = append(out, string(r.Value))
	}
	return out
}

func TestCommittedAndAbortedTransactions(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	p := newProducer(t, b, "test-1")
	ctx := context.Background()

	assert.ErrorIs(t, p.Send(ctx, []*sarama.ProducerMessage{msg("early")}), txn.ErrNoTransaction)
	var ends []bool
	require.NoError(t, p.Begin(ctx))
	p.OnEnd(func(ok bool) { ends = append(ends, ok) })
	assert.ErrorIs(t, p.Begin(ctx), txn.ErrOpen)
	require.NoError(t, p.Send(ctx, []*sarama.ProducerMessage{msg("a"), msg("b")}))
	require.NoError(t, p.Commit(ctx))

	require.NoError(t, p.Begin(ctx))
	p.OnEnd(func(ok bool) { ends = append(ends, ok) })
	require.NoError(t, p.Send(ctx, []*sarama.ProducerMessage{msg("aborted")}))
	require.NoError(t, p.Abort(ctx))

	commitValues(t, p, "c")

	assert.Equal(t, []string{"a", "b", "c"}, committed(t, b), "read_committed sees the committed transactions only")
	assert.Equal(t, []bool{true, false}, ends, "OnEnd tells how each transaction ended")
	all, err := b.Records(ctx, "out")
	require.NoError(t, err)
	var values []string
	for _, r := range all {
		values = append(values, string(r.Value))
	}
	assert.Contains(t, values, "aborted", "the aborted record is in the log, for read_uncommitted readers")
}

// A producer that starts with the same transactional.id fences off the
// one it replaces and aborts what that one left open.
func TestSameIDFencesThePredecessor(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	ctx := context.Background()
	old, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "proc"})
	require.NoError(t, err)
	t.Cleanup(func() { old.Close() })
	require.NoError(t, old.Begin(ctx))
	require.NoError(t, old.Send(ctx, []*sarama.ProducerMessage{msg("left open")}))

	next := newProducer(t, b, "proc")
	require.NoError(t, next.Init(ctx))
	commitValues(t, next, "new")

	err = old.Commit(ctx)
	require.Error(t, err, "the fenced producer cannot commit")
	assert.Equal(t, []string{"new"}, committed(t, b), "what the fenced producer left open is aborted")
	assert.False(t, errors.Is(err, txn.ErrNoTransaction), "%v", err)
}

// A Send cut short by its context leaves its records on their way: the
// abort waits for them to be answered before it ends the transaction, so
// that none lands after it, outside of any transaction; the next
// transaction commits only its own records.
func TestAbortAfterACutShortSend(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	bg := context.Background()
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	// The Send is cut short as its records start on their way.
	cut := &cutShort{cancel: cancel}
	sc := sarama.NewConfig()
	sc.Producer.Interceptors = []sarama.ProducerInterceptor{cut}
	p, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "cut", Sarama: sc})
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Init(bg))
	require.NoError(t, p.Begin(bg))
	msgs := make([]*sarama.ProducerMessage, 50_000)
	for i := range msgs {
		msgs[i] = msg(strconv.Itoa(i))
	}
	require.ErrorIs(t, p.Send(ctx, msgs), context.Canceled, "cut short")

	done := make(chan error, 1)
	go func() { done <- p.Abort(bg) }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Abort after a Send cut short did not return")
	}
	cut.off.Store(true)
	commitValues(t, p, "after")
	assert.Equal(t, []string{"after"}, committed(t, b))
	all, err := b.Records(bg, "out")
	require.NoError(t, err)
	assert.Len(t, all, len(msgs)+1, "the records of the Send cut short were written, and aborted")
}

// cutShort cancels a Send's context as its first record starts on its
// way, and holds the delivery back long enough for the Send to see it.
type cutShort struct {
	cancel context.CancelFunc
	once   sync.Once
	off    atomic.Bool
}

func (c *cutShort) OnSend(*sarama.ProducerMessage) {
	if c.off.Load() {
		return
	}
	c.once.Do(func() {
		c.cancel()
		time.Sleep(100 * time.Millisecond)
	})
}

// A producer fenced off by a newer one with its transactional.id stays
// stopped, and says so: starting again would fence off the newer one and
// let the zombie commit.
func TestFencedProducerStaysStopped(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	ctx := context.Background()
	old, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "proc"})
	require.NoError(t, err)
	t.Cleanup(func() { old.Close() })
	require.NoError(t, old.Begin(ctx))
	require.NoError(t, old.Send(ctx, []*sarama.ProducerMessage{msg("left open")}))

	next := newProducer(t, b, "proc")
	require.NoError(t, next.Init(ctx))
	// The old producer's write is refused, and it asks for a bump of
	// its epoch, which Kafka refuses to a producer that a registration
	// fenced off; kfake grants a bump of any epoch before its own.
	b.RefuseInitProducerID(1, producerFenced)

	require.Error(t, old.Send(ctx, []*sarama.ProducerMessage{msg("after the fence")}))
	assert.ErrorIs(t, old.Abort(ctx), txn.ErrFenced, "the abort tells why the transaction failed")
	assert.ErrorIs(t, old.Begin(ctx), txn.ErrFenced, "no new producer that would fence off the newer one")
	assert.ErrorIs(t, old.Init(ctx), txn.ErrFenced)

	commitValues(t, next, "new")
	assert.Equal(t, []string{"new"}, committed(t, b))
}

// One Send may write to several topics, in runs of one topic after
// another: each record lands in its topic, all committed together.
func TestSendToSeveralTopics(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1, "other": 2})
	p := newProducer(t, b, "topics")
	ctx := context.Background()
	other := func(v string, part int32) *sarama.ProducerMessage {
		return &sarama.ProducerMessage{Topic: "other", Partition: part, Value: sarama.StringEncoder(v)}
	}
	require.NoError(t, p.Begin(ctx))
	require.NoError(t, p.SendToPartitions(ctx, []*sarama.ProducerMessage{
		{Topic: "out", Value: sarama.StringEncoder("a")}, other("x", 1), other("y", 0), {Topic: "out", Value: sarama.StringEncoder("b")},
	}))
	require.NoError(t, p.Commit(ctx))

	assert.Equal(t, []string{"a", "b"}, committed(t, b))
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	recs, err := b.CommittedRecords(cctx, "other")
	require.NoError(t, err)
	got := map[string]int32{}
	for _, r := range recs {
		got[string(r.Value)] = r.Partition
	}
	assert.Equal(t, map[string]int32{"x": 1, "y": 0}, got, "each record in its partition")
}

// A producer fenced off between its transactions, whose next transaction
// is aborted before it wrote anything, learns of the fence with its next
// write: it does not start a new producer epoch that would fence off the
// newer producer in turn, and commit as a zombie.
func TestFencedProducerAbortingDoesNotFenceItsSuccessor(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	ctx := context.Background()
	old, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "proc"})
	require.NoError(t, err)
	t.Cleanup(func() { old.Close() })
	commitValues(t, old, "old")

	next := newProducer(t, b, "proc")
	require.NoError(t, next.Init(ctx))

	// The old producer's batch fails before it writes anything.
	require.NoError(t, old.Begin(ctx))
	require.NoError(t, old.Abort(ctx))
	if err := old.Begin(ctx); err == nil {
		assert.ErrorIs(t, old.Send(ctx, []*sarama.ProducerMessage{msg("zombie")}), txn.ErrFenced)
		assert.Error(t, old.Commit(ctx), "the zombie cannot commit")
	} else {
		assert.ErrorIs(t, err, txn.ErrFenced)
	}

	require.NoError(t, next.Begin(ctx), "the newer producer is not fenced off")
	require.NoError(t, next.Send(ctx, []*sarama.ProducerMessage{msg("new")}))
	require.NoError(t, next.Commit(ctx))
	assert.Equal(t, []string{"old", "new"}, committed(t, b))
}

// closeWithin closes p and fails the test unless Close returns within a
// generous bound: well under what the abort's retries would take.
func closeWithin(t *testing.T, p *txn.Producer) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Close with a transaction open and no broker to abort it did not return")
	}
}

// Close with a transaction open and the broker gone gives up the abort,
// which the brokers do themselves when the transaction times out or the
// ID is registered again, instead of retrying it for over a minute.
func TestCloseWithTheBrokerGone(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	p, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "gone"})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, p.Begin(ctx))
	require.NoError(t, p.Send(ctx, []*sarama.ProducerMessage{msg("a")}))
	b.Close()
	closeWithin(t, p)
	assert.ErrorIs(t, p.Begin(ctx), txn.ErrClosed)
}

// A coordinator still completing the transaction before (CONCURRENT_TRANSACTIONS,
// as it writes its markers) is asked again until it is done, for longer
// than Producer.Transaction.Retry's count of attempts at other errors:
// it is not a failure of the transaction.
func TestAddPartitionsWhileTheTransactionBeforeCompletes(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	p := newProducer(t, b, "concurrent")
	commitValues(t, p, "a")

	// More than the 51 attempts of sarama's default retries.
	const concurrentTransactions, n = 51, 60
	refused := b.RefuseAddPartitions(n, concurrentTransactions)
	commitValues(t, p, "b")
	assert.Equal(t, n, refused())
	assert.Equal(t, []string{"a", "b"}, committed(t, b))
}

// Init, waiting for the coordinator to abort what the producer before left
// open, returns when its ctx is done, with ctx's error: a process told to
// stop as it starts is not held for the transaction timeout.
func TestInitReturnsWhenItsContextIsDone(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	p := newProducer(t, b, "init")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	const concurrentTransactions = 51
	refused := b.RefuseInitProducerID(1_000_000, concurrentTransactions)
	done := make(chan error, 1)
	go func() { done <- p.Init(ctx) }()
	require.Eventually(t, func() bool { return refused() > 0 }, 10*time.Second, time.Millisecond)
	stop := errors.New("told to stop")
	cancel(stop)
	select {
	case err := <-done:
		assert.ErrorIs(t, err, stop)
	case <-time.After(20 * time.Second):
		t.Fatal("Init did not return when its context was done")
	}
}

// watchInits records the producer ID and epoch of every InitProducerId
// request b receives from now on.
func watchInits(b *kafkatest.Broker) func() []producerEpoch {
	var (
		mu    sync.Mutex
		inits []producerEpoch
	)
	b.Watch(kmsg.InitProducerID.Int16(), func(r kmsg.Request) {
		req := r.(*kmsg.InitProducerIDRequest)
		mu.Lock()
		defer mu.Unlock()
		inits = append(inits, producerEpoch{req.ProducerID, req.ProducerEpoch})
	})
	return func() []producerEpoch {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(inits)
	}
}

type producerEpoch struct {
	pid   int64
	epoch int16
}

// assertRegisteredThenBumped asserts that inits, of watchInits, are the
// ID registered, then a bump of the producer's own epoch.
func assertRegisteredThenBumped(t *testing.T, inits []producerEpoch) {
	t.Helper()
	require.Len(t, inits, 2)
	assert.Equal(t, producerEpoch{-1, -1}, inits[0], "the first registration")
	assert.GreaterOrEqual(t, inits[1].pid, int64(0), "the bump names the producer ID")
	assert.GreaterOrEqual(t, inits[1].epoch, int16(0), "and its epoch")
}

// After a transaction that failed, the abort is followed by a new
// producer epoch asked for as a bump of the producer's own (KIP-360),
// which the coordinator refuses to a producer that a newer one fenced off,
// instead of the ID registered afresh, which would fence off the newer
// one; the new epoch's sequence numbers start again. So after a write
// refused (OUT_OF_ORDER_SEQUENCE), and after the transaction's partitions
// refused, where nothing is open at the coordinator and its abort is
// refused (INVALID_TXN_STATE, the transaction before having committed).
func TestAFailedTransactionBumpsTheProducersOwnEpoch(t *testing.T) {
	const outOfOrderSequence, transactionalIDAuthorizationFailed = 45, 53
	for _, tc := range []struct {
		name   string
		refuse func(b *kafkatest.Broker)
	}{
		{"write refused", func(b *kafkatest.Broker) { b.RefuseProduce(1, outOfOrderSequence) }},
		{"partitions refused", func(b *kafkatest.Broker) { b.RefuseAddPartitions(1, transactionalIDAuthorizationFailed) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, map[string]int32{"out": 1})
			watched := watchInits(b)
			p := newProducer(t, b, "bump")
			ctx := context.Background()
			commitValues(t, p, "a")

			tc.refuse(b)
			require.NoError(t, p.Begin(ctx))
			require.Error(t, p.Send(ctx, []*sarama.ProducerMessage{msg("refused")}))
			require.NoError(t, p.Abort(ctx))
			commitValues(t, p, "b")
			assert.Equal(t, []string{"a", "b"}, committed(t, b))

			assertRegisteredThenBumped(t, watched())
		})
	}
}

// Kafka's error codes the tests answer with.
const (
	invalidProducerEpoch     = 47
	invalidProducerIDMapping = 49
	producerFenced           = 90
)

// A transaction the brokers timed out, whose requests they then refuse
// for the producer's epoch having moved on (INVALID_PRODUCER_EPOCH, a
// Produce's answer, or a coordinator's before Kafka 2.7), fails with
// that error, and is aborted; the next transaction starts by bumping
// the producer's own epoch (KIP-360), which the coordinator grants to a
// producer whose transaction timed out and refuses to one fenced off
// (KIP-588), and commits. Nothing of the failed transaction is
// committed, its offsets neither.
func TestATimedOutTransactionIsFollowedByABumpedEpoch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse func(b *kafkatest.Broker) func() int
	}{
		{"produce", func(b *kafkatest.Broker) func() int { return b.RefuseProduce(1, invalidProducerEpoch) }},
		{"add partitions", func(b *kafkatest.Broker) func() int { return b.RefuseAddPartitions(1, invalidProducerEpoch) }},
		{"end transaction", func(b *kafkatest.Broker) func() int { return b.RefuseEndTxn(1, invalidProducerEpoch) }},
		{"commit offsets", func(b *kafkatest.Broker) func() int { return b.RefuseTxnOffsetCommit(1, invalidProducerEpoch) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, map[string]int32{"out": 2, "in": 1})
			watched := watchInits(b)
			p := newProducer(t, b, "timeout")
			ctx := context.Background()
			commitValues(t, p, "a")

			require.NoError(t, p.Begin(ctx))
			require.NoError(t, p.SendToPartitions(ctx, []*sarama.ProducerMessage{{Topic: "out", Partition: 0, Value: sarama.StringEncoder("timed out")}}))
			group := &sarama.ConsumerGroupMetadata{GroupID: "g", GenerationID: -1}
			require.NoError(t, p.AddOffsets(ctx, group, map[string][]*sarama.PartitionOffsetMetadata{"in": {{Partition: 0, Offset: 10}}}))
			refused := tc.refuse(b)
			err := p.SendToPartitions(ctx, []*sarama.ProducerMessage{{Topic: "out", Partition: 1, Value: sarama.StringEncoder("refused")}})
			if err == nil {
				err = p.Commit(ctx)
			} else {
				assert.NoError(t, p.Abort(ctx))
			}
			assert.ErrorIs(t, err, sarama.ErrInvalidProducerEpoch, "the transaction fails with the broker's answer")
			assert.NotErrorIs(t, err, txn.ErrFenced)
			assert.Equal(t, 1, refused())

			commitValues(t, p, "b")
			assert.ElementsMatch(t, []string{"a", "b"}, committed(t, b), "nothing of the failed transaction is committed")
			assert.Empty(t, b.Committed("g", "in"), "nor its offsets")
			assertRegisteredThenBumped(t, watched())
		})
	}
}

// A producer fenced off stays stopped: so when the brokers answer
// PRODUCER_FENCED, to any request, and when, after INVALID_PRODUCER_EPOCH,
// the coordinator refuses to bump the producer's epoch (PRODUCER_FENCED,
// or INVALID_PRODUCER_EPOCH before Kafka 2.7), or cannot (InitProducerId
// before version 3, Kafka 2.5, or a producer ID it does not know,
// INVALID_PRODUCER_ID_MAPPING): registering the ID afresh instead would
// fence off the newer producer that fenced this one off.
func TestAFencedOffProducerNeverRegistersAfresh(t *testing.T) {
	oldInitProducerID := kversion.Stable()
	oldInitProducerID.SetMaxKeyVersion(kmsg.InitProducerID.Int16(), 2)
	for _, tc := range []struct {
		name     string
		versions *kversion.Versions
		refuse   func(b *kafkatest.Broker)
		bumps    int // bumps asked for
	}{
		{"fenced", nil, func(b *kafkatest.Broker) { b.RefuseProduce(1, producerFenced) }, 0},
		{"fenced at the commit", nil, func(b *kafkatest.Broker) { b.RefuseEndTxn(1, producerFenced) }, 0},
		{"bump refused", nil, func(b *kafkatest.Broker) {
			b.RefuseProduce(1, invalidProducerEpoch)
			b.RefuseInitProducerID(1, producerFenced)
		}, 1},
		{"bump refused before Kafka 2.7", nil, func(b *kafkatest.Broker) {
			b.RefuseAddPartitions(1, invalidProducerEpoch)
			b.RefuseInitProducerID(1, invalidProducerEpoch)
		}, 1},
		{"no bump before Kafka 2.5", oldInitProducerID, func(b *kafkatest.Broker) { b.RefuseProduce(1, invalidProducerEpoch) }, 0},
		{"bump of a producer ID the coordinator does not know", nil, func(b *kafkatest.Broker) {
			b.RefuseProduce(1, invalidProducerEpoch)
			b.RefuseInitProducerID(1, invalidProducerIDMapping)
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBrokerOf(t, kafkatest.Config{Topics: map[string]int32{"out": 1}, MaxVersions: tc.versions})
			watched := watchInits(b)
			p := newProducer(t, b, "fenced")
			ctx := context.Background()
			commitValues(t, p, "a")

			tc.refuse(b)
			require.NoError(t, p.Begin(ctx))
			if err := p.Send(ctx, []*sarama.ProducerMessage{msg("b")}); err == nil {
				assert.Error(t, p.Commit(ctx))
			} else {
				_ = p.Abort(ctx)
			}
			assert.ErrorIs(t, p.Begin(ctx), txn.ErrFenced)
			assert.ErrorIs(t, p.Init(ctx), txn.ErrFenced)
			assert.ErrorIs(t, p.Begin(ctx), txn.ErrFenced, "and stays so")

			inits := watched()
			require.Len(t, inits, 1+tc.bumps)
			for _, e := range inits[1:] {
				assert.NotEqual(t, producerEpoch{-1, -1}, e, "no registration afresh")
			}
			assert.Equal(t, []string{"a"}, committed(t, b))
		})
	}
}

// An abort after INVALID_PRODUCER_EPOCH whose bump of the producer's
// epoch is given up (its ctx done) is followed by a bump at the next
// Begin as well, never by the ID registered afresh, which would fence off
// the newer producer if a newer producer is what moved the epoch on. The
// abort returns nil: the transaction is over at the coordinator.
func TestAnAbortWhoseBumpIsGivenUpIsFollowedByABump(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	watched := watchInits(b)
	p := newProducer(t, b, "given-up")
	ctx := context.Background()
	commitValues(t, p, "a")

	b.RefuseProduce(1, invalidProducerEpoch)
	require.NoError(t, p.Begin(ctx))
	require.ErrorIs(t, p.Send(ctx, []*sarama.ProducerMessage{msg("refused")}), sarama.ErrInvalidProducerEpoch)
	held, release := b.Stall(kmsg.InitProducerID.Int16())
	actx, cancel := context.WithCancel(ctx)
	go func() {
		<-held
		cancel()
		release()
	}()
	assert.NoError(t, p.Abort(actx))

	commitValues(t, p, "b")
	assert.Equal(t, []string{"a", "b"}, committed(t, b))
	inits := watched()
	require.Len(t, inits, 3, "the registration, the bump given up, the bump")
	for _, e := range inits[1:] {
		assert.NotEqual(t, producerEpoch{-1, -1}, e, "a bump, not the ID registered afresh")
	}
}

// A commit whose answers are lost after the coordinator committed the
// transaction (the connection lost, for the retries too) is found
// committed by the abort that follows, which the coordinator refuses for
// having no transaction open (INVALID_TXN_STATE, its last one committed):
// Commit returns nil, and OnEnd says committed, instead of failing a
// transaction whose records and offsets are committed, which a caller
// told that nothing of it was would write again.
func TestACommitWhoseAnswersAreLostIsFoundCommitted(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	sc := sarama.NewConfig()
	sc.Producer.Transaction.Retry.Max = 2
	sc.Producer.Transaction.Retry.Backoff = 10 * time.Millisecond
	p := newProducerOf(t, b, txn.Config{ID: "lost", Sarama: sc})
	ctx := context.Background()

	require.NoError(t, p.Begin(ctx))
	var ends []bool
	p.OnEnd(func(ok bool) { ends = append(ends, ok) })
	require.NoError(t, p.Send(ctx, []*sarama.ProducerMessage{msg("a")}))
	lost := b.LoseCommitAnswers(3)
	assert.NoError(t, p.Commit(ctx), "the transaction is committed")
	assert.Equal(t, 3, lost(), "every attempt's answer lost")
	assert.Equal(t, []bool{true}, ends)

	commitValues(t, p, "b")
	assert.Equal(t, []string{"a", "b"}, committed(t, b))
}

// Close gives up, at CloseTimeout, the delivery of a Send to a broker
// that takes its produce requests and never answers, as it does the
// abort waiting for it, instead of waiting for every retry of the
// delivery to time out (Producer.Retry, Net.ReadTimeout each).
func TestCloseGivesUpADeliveryToABrokerThatDoesNotAnswer(t *testing.T) {
	p := stalledDelivery(t, 0)
	start := time.Now()
	closeWithin(t, p)
	assert.Less(t, time.Since(start), txn.CloseTimeout+5*time.Second, "Close took its time out, and a request's")
}

// Config.CloseTimeout bounds Close as CloseTimeout does by default.
func TestCloseTimeoutIsConfigured(t *testing.T) {
	_, err := txn.New(txn.Config{Brokers: []string{"localhost:9092"}, ID: "x", CloseTimeout: -time.Second})
	require.ErrorContains(t, err, "close timeout -1s")

	p := stalledDelivery(t, 500*time.Millisecond)
	start := time.Now()
	closeWithin(t, p)
	assert.Less(t, time.Since(start), txn.CloseTimeout, "Close gave up at its own time out, not the default's")
}

// stalledDelivery returns a producer, of Config.CloseTimeout closeTimeout,
// whose transaction holds a Send given up by its ctx while the broker
// takes its produce requests and never answers: its delivery goes on
// being retried (Producer.Retry, Net.ReadTimeout each) for 50 s.
func stalledDelivery(t *testing.T, closeTimeout time.Duration) *txn.Producer {
	t.Helper()
	b := startBroker(t, map[string]int32{"out": 1})
	sc := sarama.NewConfig()
	sc.Net.ReadTimeout = 500 * time.Millisecond
	sc.Producer.Retry.Max = 100 // 50s of attempts
	sc.Producer.Retry.Backoff = 10 * time.Millisecond
	p, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "stalled", Sarama: sc, CloseTimeout: closeTimeout})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, p.Begin(ctx))

	release := b.Ignore(kmsg.Produce.Int16())
	t.Cleanup(release)
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, p.Send(sctx, []*sarama.ProducerMessage{msg("a")}), context.DeadlineExceeded)
	return p
}

// A transaction that outlives Config.Timeout is aborted by the broker
// itself, which moves the producer's epoch on: the next write fails
// (INVALID_PRODUCER_EPOCH), Abort ends the transaction with a bump of
// the producer's own epoch instead of an EndTxn of the old one, which the
// coordinator would refuse (PRODUCER_FENCED), and the next transaction
// commits. A read_committed reader sees it, and nothing of the one timed
// out.
func TestATransactionTimedOutByTheBrokerIsFollowedByTheNext(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	watched := watchInits(b)
	p := newProducerOf(t, b, txn.Config{ID: "timed-out", Timeout: time.Second})
	ctx := context.Background()

	require.NoError(t, p.Begin(ctx))
	require.NoError(t, p.Send(ctx, []*sarama.ProducerMessage{msg("timed out")}))
	// The broker's abort writes its marker after the record.
	require.Eventually(t, func() bool { return b.HighWatermarks("out")[0] == 2 }, 20*time.Second, 10*time.Millisecond, "the broker times the transaction out")

	err := p.Send(ctx, []*sarama.ProducerMessage{msg("late")})
	if err == nil {
		err = p.Commit(ctx)
	} else {
		assert.NoError(t, p.Abort(ctx))
	}
	// A partition leader answers INVALID_PRODUCER_EPOCH, or (kfake)
	// INVALID_TXN_STATE for the transaction being over.
	assert.True(t, errors.Is(err, sarama.ErrInvalidProducerEpoch) || errors.Is(err, sarama.ErrInvalidTxnState), "the transaction fails with the broker's answer: %v", err)
	assert.NotErrorIs(t, err, txn.ErrFenced)

	commitValues(t, p, "next")
	assert.Equal(t, []string{"next"}, committed(t, b), "the next transaction is committed, nothing of the one timed out")
	inits := watched()
	require.Len(t, inits, 2)
	assert.Equal(t, producerEpoch{-1, -1}, inits[0], "the first registration")
	assert.NotEqual(t, producerEpoch{-1, -1}, inits[1], "a bump, not the ID registered afresh")
}

// A producer fenced off by a newer one's registration, whose write is
// then refused for the transaction being over (as after a timeout), asks
// for a bump of its epoch instead of an EndTxn, and the coordinator
// refuses it (PRODUCER_FENCED; Kafka does, kfake grants it, so the test
// answers as Kafka): the producer is fenced off, never registers the ID
// afresh, and commits nothing; the newer producer commits.
func TestAProducerFencedOffByARegistrationHasItsBumpRefused(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	ctx := context.Background()
	old := newProducer(t, b, "proc")
	commitValues(t, old, "old")
	require.NoError(t, old.Begin(ctx))
	require.NoError(t, old.Send(ctx, []*sarama.ProducerMessage{msg("zombie")}))

	next := newProducer(t, b, "proc")
	require.NoError(t, next.Init(ctx))
	watched := watchInits(b)
	refused := b.RefuseInitProducerID(1, producerFenced)

	err := old.Send(ctx, []*sarama.ProducerMessage{msg("zombie after the fence")})
	require.Error(t, err)
	assert.NotErrorIs(t, err, txn.ErrFenced, "the write alone does not tell a fence from a timeout")
	assert.ErrorIs(t, old.Abort(ctx), txn.ErrFenced, "the bump does")
	assert.Equal(t, 1, refused())
	assert.ErrorIs(t, old.Begin(ctx), txn.ErrFenced)
	assert.ErrorIs(t, old.Init(ctx), txn.ErrFenced)

	commitValues(t, next, "new")
	assert.Equal(t, []string{"old", "new"}, committed(t, b))
	inits := watched()
	require.Len(t, inits, 1, "the bump, and nothing after")
	assert.NotEqual(t, producerEpoch{-1, -1}, inits[0], "a bump, not the ID registered afresh")
}

// A commit the coordinator refuses for having no transaction open
// (INVALID_TXN_STATE) was not committed: a commit of a transaction it
// committed is answered with success, even when asked again. The abort
// that follows, refused alike, does not make it committed: Commit fails,
// OnEnd says not committed, and nothing of it is.
func TestACommitRefusedForNoTransactionOpenIsNotCommitted(t *testing.T) {
	const invalidTxnState = 48
	b := startBroker(t, map[string]int32{"out": 1})
	p := newProducer(t, b, "refused")
	ctx := context.Background()

	require.NoError(t, p.Begin(ctx))
	var ends []bool
	p.OnEnd(func(ok bool) { ends = append(ends, ok) })
	require.NoError(t, p.Send(ctx, []*sarama.ProducerMessage{msg("a")}))
	refused := b.RefuseEndTxn(2, invalidTxnState)
	err := p.Commit(ctx)
	assert.ErrorIs(t, err, sarama.ErrInvalidTxnState, "the commit fails with the coordinator's answer")
	assert.Equal(t, 2, refused(), "the commit and the abort refused")
	assert.Equal(t, []bool{false}, ends)
	assert.Empty(t, committed(t, b), "nothing of it is committed")
}

// waitLog is a slog.Handler that closes a channel once a record of a
// given message is logged.
type waitLog struct {
	msg  string
	once *sync.Once
	seen chan struct{}
}

func newWaitLog(msg string) waitLog {
	return waitLog{msg: msg, once: new(sync.Once), seen: make(chan struct{})}
}

func (w waitLog) Enabled(context.Context, slog.Level) bool { return true }

func (w waitLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == w.msg {
		w.once.Do(func() { close(w.seen) })
	}
	return nil
}

func (w waitLog) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w waitLog) WithGroup(string) slog.Handler      { return w }

// giveUpCommit commits p's open transaction with a ctx done once b holds
// the EndTxn, which b then refuses with the error code code, and waits
// for ended, closed as the commit let go ends in the background.
func giveUpCommit(t *testing.T, b *kafkatest.Broker, p *txn.Producer, code int16, ended <-chan struct{}) {
	t.Helper()
	held, release := b.Stall(kmsg.EndTxn.Int16())
	refused := b.RefuseEndTxn(1, code)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-held
		cancel()
	}()
	assert.ErrorIs(t, p.Commit(ctx), context.Canceled, "given up waiting for")
	release()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the commit let go did not end")
	}
	assert.Equal(t, 1, refused(), "the commit goes on, and is refused")
}

// A commit given up waiting for (its ctx done) goes on in the
// background, where the coordinator may refuse it for the producer's
// epoch having moved on (INVALID_PRODUCER_EPOCH): a timeout, or a newer
// producer's registration. The next Begin then asks for a bump of that
// epoch, which the coordinator refuses to a producer fenced off, and
// does not register the ID afresh, which would fence off the newer
// producer.
func TestACommitGivenUpAndRefusedForItsEpochIsFollowedByABump(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	watched := watchInits(b)
	ended := newWaitLog("transaction ended by the coordinator, which moved the producer's epoch on")
	p := newProducerOf(t, b, txn.Config{ID: "commit-given-up", Logger: slog.New(ended)})
	ctx := context.Background()
	commitValues(t, p, "a")

	require.NoError(t, p.Begin(ctx))
	require.NoError(t, p.Send(ctx, []*sarama.ProducerMessage{msg("refused")}))
	giveUpCommit(t, b, p, invalidProducerEpoch, ended.seen)

	commitValues(t, p, "b")
	assert.Equal(t, []string{"a", "b"}, committed(t, b))
	inits := watched()
	require.Len(t, inits, 2, "the registration, the bump")
	assert.NotEqual(t, producerEpoch{-1, -1}, inits[1], "a bump, not the ID registered afresh")
}

// A commit given up waiting for (its ctx done) goes on in the
// background, where the coordinator may refuse it for a newer producer
// having registered the ID (PRODUCER_FENCED): the Producer is fenced off
// then, as if it had waited, and the next Begin fails with ErrFenced
// instead of registering the ID afresh, which would fence off the newer
// producer in turn.
func TestACommitGivenUpAndFencedOffFencesTheProducerOff(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	watched := watchInits(b)
	aborted := newWaitLog("transaction aborted")
	p, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "commit-fenced", Logger: slog.New(aborted)})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	ctx := context.Background()
	require.NoError(t, p.Begin(ctx))
	require.NoError(t, p.Send(ctx, []*sarama.ProducerMessage{msg("fenced")}))
	// kfake, unlike Kafka, takes the abort that follows.
	giveUpCommit(t, b, p, producerFenced, aborted.seen)

	assert.ErrorIs(t, p.Begin(ctx), txn.ErrFenced)
	assert.Len(t, watched(), 1, "no registration after the fence")
}

// Close stops a registration in progress (Init, or a Begin registering)
// that a coordinator keeps waiting, busy or hung, instead of waiting for
// it, for as long as the caller's ctx lasts: Close returns within a
// request's time, and the Init or Begin fails with ErrClosed.
func TestCloseStopsARegistrationInProgress(t *testing.T) {
	const concurrentTransactions = 51
	for _, tc := range []struct {
		name  string
		hang  func(b *kafkatest.Broker) (asked func() bool)
		start func(p *txn.Producer, ctx context.Context) error
	}{
		{"init, coordinator busy", func(b *kafkatest.Broker) func() bool {
			// Asked again every 20ms for the transaction timeout.
			refused := b.RefuseInitProducerID(1_000_000, concurrentTransactions)
			return func() bool { return refused() > 0 }
		}, (*txn.Producer).Init},
		{"begin, coordinator hung", func(b *kafkatest.Broker) func() bool {
			asked, release := hangRequests(b, kmsg.InitProducerID.Int16())
			t.Cleanup(release)
			return asked
		}, (*txn.Producer).Begin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, map[string]int32{"out": 1})
			sc := sarama.NewConfig()
			// Each attempt waits for a second: 1,000 of them, longer
			// than the test may take.
			sc.Net.ReadTimeout = time.Second
			sc.Producer.Transaction.Retry.Max = 1_000
			sc.Producer.Transaction.Retry.Backoff = 10 * time.Millisecond
			p, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "hung", Timeout: 10 * time.Minute, Sarama: sc})
			require.NoError(t, err)
			asked := tc.hang(b)

			started := make(chan error, 1)
			go func() { started <- tc.start(p, context.Background()) }()
			require.Eventually(t, asked, 10*time.Second, time.Millisecond, "the registration is under way")
			closed := make(chan error, 1)
			go func() { closed <- p.Close() }()
			select {
			case err := <-closed:
				assert.NoError(t, err)
			case <-time.After(20 * time.Second):
				t.Fatal("Close did not stop the registration in progress")
			}
			select {
			case err := <-started:
				assert.ErrorIs(t, err, txn.ErrClosed)
			case <-time.After(20 * time.Second):
				t.Fatal("the registration in progress did not end")
			}
			assert.ErrorIs(t, p.Begin(context.Background()), txn.ErrClosed)
			assert.NoError(t, p.Close(), "again")
		})
	}
}

// waitBlockedInClose waits until a goroutine in Close waits for a lock.
func waitBlockedInClose(t *testing.T) {
	t.Helper()
	waitIn(t, "Close", "sync.Mutex.Lock", "Close waits for the lock")
}

// waitInClose waits until a goroutine in Close is blocked in state, as
// a goroutine dump names it ("select", "sync.Mutex.Lock").
func waitInClose(t *testing.T, state, what string) {
	t.Helper()
	waitIn(t, "Close", state, what)
}

// waitIn waits until a goroutine in the Producer's method is blocked in
// state, as a goroutine dump names it ("select", "sync.Mutex.Lock").
func waitIn(t *testing.T, method, state, what string) {
	t.Helper()
	require.Eventually(t, func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "txn.(*Producer)."+method+"(") && strings.Contains(g, " ["+state) {
				return true
			}
		}
		return false
	}, 10*time.Second, time.Millisecond, what)
}

// A Commit or Abort whose ctx is done once Close has started is not let
// go to end in the background, where Close might no longer wait for it:
// it returns once its end has, its outcome known. A Begin after Close has
// started fails with ErrClosed, registering nothing: no transaction
// starts whose commit or abort Close would not wait for.
func TestACommitOrAbortIsNotLetGoOnceCloseHasStarted(t *testing.T) {
	for _, tc := range []struct {
		name      string
		end       func(p *txn.Producer, ctx context.Context) error
		committed []string
	}{
		{"commit", (*txn.Producer).Commit, []string{"a"}},
		{"abort", (*txn.Producer).Abort, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, map[string]int32{"out": 1})
			// Close gives nothing up before the test releases the end.
			p, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "closing-" + tc.name, CloseTimeout: time.Minute})
			require.NoError(t, err)
			bg := context.Background()
			require.NoError(t, p.Begin(bg))
			var ends []bool
			p.OnEnd(func(ok bool) { ends = append(ends, ok) })
			require.NoError(t, p.Send(bg, []*sarama.ProducerMessage{msg("a")}))
			inits := watchInits(b)

			held, release := b.Stall(kmsg.EndTxn.Int16())
			defer release()
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			ended := make(chan error, 1)
			go func() { ended <- tc.end(p, ctx) }()
			<-held
			closed := make(chan error, 1)
			go func() { closed <- p.Close() }()
			waitBlockedInClose(t)

			cancel()
			select {
			case err := <-ended:
				t.Fatalf("the %s returned before its end: %v", tc.name, err)
			case <-time.After(500 * time.Millisecond):
			}
			began := make(chan error, 1)
			go func() { began <- p.Begin(bg) }()
			release()
			select {
			case err := <-ended:
				assert.NoError(t, err, "the end answered")
			case <-time.After(20 * time.Second):
				t.Fatalf("the %s did not return", tc.name)
			}
			select {
			case err := <-closed:
				assert.NoError(t, err)
			case <-time.After(20 * time.Second):
				t.Fatal("Close did not return")
			}
			assert.ErrorIs(t, <-began, txn.ErrClosed)
			assert.Empty(t, inits(), "nothing registered after Close started")
			assert.Equal(t, []bool{tc.committed != nil}, ends)
			assert.Equal(t, tc.committed, committed(t, b))
		})
	}
}

// Send, SendToPartitions and AddOffsets once Close has started fail with
// ErrClosed, as Begin does, not with ErrNoTransaction: so while Close
// waits for a commit let go, and after it.
func TestWritesOnceCloseHasStartedFailWithErrClosed(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	p, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "after-close"})
	require.NoError(t, err)
	bg := context.Background()
	require.NoError(t, p.Begin(bg))
	require.NoError(t, p.Send(bg, []*sarama.ProducerMessage{msg("a")}))
	held, release := b.Stall(kmsg.EndTxn.Int16())
	defer release()
	ctx, cancel := context.WithCancel(bg)
	go func() {
		<-held
		cancel()
	}()
	require.ErrorIs(t, p.Commit(ctx), context.Canceled, "the commit let go")

	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	waitInClose(t, "select", "Close waits for the commit let go")
	writes := func() {
		t.Helper()
		assert.ErrorIs(t, p.Send(bg, []*sarama.ProducerMessage{msg("b")}), txn.ErrClosed)
		assert.ErrorIs(t, p.SendToPartitions(bg, []*sarama.ProducerMessage{msg("b")}), txn.ErrClosed)
		group := &sarama.ConsumerGroupMetadata{GroupID: "g", GenerationID: -1}
		assert.ErrorIs(t, p.AddOffsets(bg, group, map[string][]*sarama.PartitionOffsetMetadata{"out": {{Partition: 0, Offset: 1}}}), txn.ErrClosed)
	}
	writes()
	release()
	select {
	case err := <-closed:
		assert.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return")
	}
	writes()
	assert.Equal(t, []string{"a"}, committed(t, b), "the commit let go went through")
}

// Close stops a Send in progress whose produce requests a hung broker
// takes and never answers, instead of waiting for every retry of its
// delivery (Producer.Retry, Net.ReadTimeout each) as long as the Send's
// ctx lasts: the Send fails with ErrClosed, and Close returns, the
// transaction aborted, within a request's time.
func TestCloseStopsASendInProgress(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	sc := sarama.NewConfig()
	// 100 attempts of 2s each, longer than the test may take.
	sc.Net.ReadTimeout = 2 * time.Second
	sc.Producer.Retry.Max = 100
	sc.Producer.Retry.Backoff = 10 * time.Millisecond
	p, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "send-hung", Sarama: sc})
	require.NoError(t, err)
	bg := context.Background()
	require.NoError(t, p.Begin(bg))
	var ends []bool
	p.OnEnd(func(ok bool) { ends = append(ends, ok) })

	asked, release := hangRequests(b, kmsg.Produce.Int16())
	defer release()
	sent := make(chan error, 1)
	go func() { sent <- p.Send(bg, []*sarama.ProducerMessage{msg("a")}) }()
	require.Eventually(t, asked, 10*time.Second, time.Millisecond, "the Send is under way")

	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-sent:
		assert.ErrorIs(t, err, txn.ErrClosed)
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not stop the Send in progress")
	}
	select {
	case err := <-closed:
		assert.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return")
	}
	release()
	assert.Equal(t, []bool{false}, ends, "the transaction was aborted")
	assert.Empty(t, committed(t, b))
	assert.ErrorIs(t, p.Send(bg, []*sarama.ProducerMessage{msg("b")}), txn.ErrClosed)
}

// A Begin once Close has started fails with ErrClosed, as Begin's doc
// says, not with ErrOpen, though the transaction Close is about to abort
// is still open: so a Begin that waited for a Send in progress, which
// Close stops.
func TestABeginOnceCloseHasStartedFailsWithErrClosed(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	sc := sarama.NewConfig()
	sc.Net.ReadTimeout = 2 * time.Second
	sc.Producer.Retry.Max = 100
	sc.Producer.Retry.Backoff = 10 * time.Millisecond
	p, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "begin-closing", Sarama: sc})
	require.NoError(t, err)
	bg := context.Background()
	require.NoError(t, p.Begin(bg))
	asked, release := hangRequests(b, kmsg.Produce.Int16())
	defer release()
	sent := make(chan error, 1)
	go func() { sent <- p.Send(bg, []*sarama.ProducerMessage{msg("a")}) }()
	require.Eventually(t, asked, 10*time.Second, time.Millisecond, "the Send is under way")
	began := make(chan error, 1)
	go func() { began <- p.Begin(bg) }()
	waitIn(t, "Begin", "sync.Mutex.Lock", "Begin waits for the Send")

	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	for _, c := range []struct {
		name string
		ch   chan error
		want error
	}{{"Send", sent, txn.ErrClosed}, {"Begin", began, txn.ErrClosed}, {"Close", closed, nil}} {
		select {
		case err := <-c.ch:
			if c.want == nil {
				assert.NoError(t, err, c.name)
			} else {
				assert.ErrorIs(t, err, c.want, c.name)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not return", c.name)
		}
	}
}

// A registration stopped, by its ctx or by Close, ends the request it has
// in progress, to a coordinator that takes it and never answers, or the
// lookup of that coordinator, at once, instead of waiting for its answer
// until Net.ReadTimeout, each of sarama's retries of the lookup too.
func TestAStoppedRegistrationEndsItsRequestInProgress(t *testing.T) {
	for _, hung := range []struct {
		name string
		key  int16
	}{
		{"init producer id", kmsg.InitProducerID.Int16()},
		{"coordinator lookup", kmsg.FindCoordinator.Int16()},
	} {
		for _, stop := range []string{"ctx", "close"} {
			t.Run(hung.name+", "+stop, func(t *testing.T) {
				b := startBroker(t, map[string]int32{"out": 1})
				sc := sarama.NewConfig()
				sc.Net.ReadTimeout = 2 * time.Minute // longer than the test may take
				p, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "hung-" + stop, Sarama: sc})
				require.NoError(t, err)
				asked, release := hangRequests(b, hung.key)
				t.Cleanup(release)

				stopRegistration(t, p, stop, p.Begin, func() {
					require.Eventually(t, asked, 10*time.Second, time.Millisecond, "the request is under way")
				})
			})
		}
	}
}

// Close ends the request in progress of a commit it gives up at
// CloseTimeout, to a coordinator that takes it and never answers, instead
// of waiting for its answer until Net.ReadTimeout.
func TestCloseEndsTheRequestOfACommitItGivesUp(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	sc := sarama.NewConfig()
	sc.Net.ReadTimeout = 2 * time.Minute // longer than the test may take
	p, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "end-hung", Sarama: sc})
	require.NoError(t, err)
	bg := context.Background()
	require.NoError(t, p.Begin(bg))
	require.NoError(t, p.Send(bg, []*sarama.ProducerMessage{msg("a")}))
	asked, release := hangRequests(b, kmsg.EndTxn.Int16())
	t.Cleanup(release)

	committed := make(chan error, 1)
	go func() { committed <- p.Commit(bg) }()
	require.Eventually(t, asked, 10*time.Second, time.Millisecond, "the commit is under way")
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	bound := txn.CloseTimeout + 15*time.Second
	select {
	case err := <-committed:
		assert.ErrorIs(t, err, txn.ErrClosed)
	case <-time.After(bound):
		t.Fatal("Close did not end the commit")
	}
	select {
	case err := <-closed:
		assert.NoError(t, err)
	case <-time.After(bound - time.Since(start)):
		t.Fatal("Close did not return")
	}
}

// A registration stopped, by its ctx or by Close, as its client connects
// to a broker that takes its requests and never answers them, ends at
// once, instead of when the client's first metadata fetch has timed out,
// each of its retries (Net.ReadTimeout, Metadata.Retry): minutes with
// sarama's defaults.
func TestAStoppedRegistrationEndsItsClientsFirstMetadataFetch(t *testing.T) {
	for _, stop := range []string{"ctx", "close"} {
		t.Run(stop, func(t *testing.T) {
			addr, _ := kafkatest.SilentBrokers(t)
			p, err := txn.New(txn.Config{Brokers: []string{addr}, ID: "silent-" + stop})
			require.NoError(t, err)
			stopRegistration(t, p, stop, p.Init, func() {
				time.Sleep(200 * time.Millisecond) // connecting
			})
		})
	}
}

// A registration stopped, by its ctx or by Close, gives up sarama's own
// retries of the coordinator's lookup, and of the client's first metadata
// fetch, at once, instead of waiting out their backoffs
// (Metadata.Retry), which nothing else ends.
func TestAStoppedRegistrationGivesUpSaramasRetries(t *testing.T) {
	for _, hung := range []struct {
		name    string
		brokers func(t *testing.T) []string
		hang    func(t *testing.T, b *kafkatest.Broker) (asked func() bool)
	}{
		{"coordinator lookup", func(t *testing.T) []string { return nil }, func(t *testing.T, b *kafkatest.Broker) func() bool {
			asked, release := hangRequests(b, kmsg.FindCoordinator.Int16())
			t.Cleanup(release)
			return asked
		}},
		{"first metadata fetch", func(t *testing.T) []string {
			addr, _ := kafkatest.SilentBrokers(t)
			return []string{addr}
		}, nil},
	} {
		for _, stop := range []string{"ctx", "close"} {
			t.Run(hung.name+", "+stop, func(t *testing.T) {
				sc := sarama.NewConfig()
				sc.Net.ReadTimeout = 2 * time.Minute
				// 1,000 attempts 50ms apart: longer than the test may take.
				sc.Metadata.Retry.Max = 1_000
				sc.Metadata.Retry.Backoff = 50 * time.Millisecond
				brokers := hung.brokers(t)
				asked := func() bool { return true }
				if brokers == nil {
					b := startBroker(t, map[string]int32{"out": 1})
					brokers = b.Addrs()
					asked = hung.hang(t, b)
				}
				p, err := txn.New(txn.Config{Brokers: brokers, ID: "retries-" + stop, Sarama: sc})
				require.NoError(t, err)

				stopRegistration(t, p, stop, p.Init, func() {
					require.Eventually(t, asked, 10*time.Second, time.Millisecond, "the request is under way")
					time.Sleep(200 * time.Millisecond)
				})
			})
		}
	}
}

// hangRequests makes b take the requests of key and answer none, until
// release, and returns whether one was taken so far.
func hangRequests(b *kafkatest.Broker, key int16) (asked func() bool, release func()) {
	var taken atomic.Bool
	b.Watch(key, func(kmsg.Request) { taken.Store(true) })
	return taken.Load, b.Ignore(key)
}

// stopRegistration runs register (p's Init or Begin) with a ctx, waits
// for underway, then stops the registration by its ctx or by Close (stop:
// "ctx" or "close"), and checks that it ends at once, failing with the
// ctx's cause or ErrClosed, and that Close returns.
func stopRegistration(t *testing.T, p *txn.Producer, stop string, register func(context.Context) error, underway func()) {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	registered := make(chan error, 1)
	go func() { registered <- register(ctx) }()
	underway()
	closed := make(chan error, 1)
	want := errors.New("told to stop")
	if stop == "ctx" {
		cancel(want)
	} else {
		want = txn.ErrClosed
		go func() { closed <- p.Close() }()
	}
	select {
	case err := <-registered:
		assert.ErrorIs(t, err, want)
	case <-time.After(15 * time.Second):
		t.Fatal("the registration did not end")
	}
	if stop == "ctx" {
		go func() { closed <- p.Close() }()
	}
	select {
	case err := <-closed:
		assert.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("Close did not return")
	}
}

// countingDialer is a proxy dialer (Net.Proxy.Dialer) without DialContext,
// which counts its dials.
type countingDialer struct{ dials atomic.Int32 }

func (d *countingDialer) Dial(network, addr string) (net.Conn, error) {
	d.dials.Add(1)
	return net.Dial(network, addr)
}

// A producer dials through the proxy dialer of its Sarama config, and a
// registration stopped closes the connections it dialed all the same,
// ending the request in progress.
func TestTheProxyDialerOfTheConfigIsKept(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 1})
	sc := sarama.NewConfig()
	sc.Net.ReadTimeout = 2 * time.Minute // longer than the test may take
	var d countingDialer
	sc.Net.Proxy.Enable, sc.Net.Proxy.Dialer = true, &d
	p := newProducerOf(t, b, txn.Config{ID: "proxied", Sarama: sc})
	commitValues(t, p, "a")
	assert.Equal(t, []string{"a"}, committed(t, b))
	assert.Positive(t, d.dials.Load(), "dialed through the config's dialer")

	// A new registration, hung.
	asked, release := hangRequests(b, kmsg.InitProducerID.Int16())
	t.Cleanup(release)
	q, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "proxied", Sarama: sc})
	require.NoError(t, err)
	inited := make(chan error, 1)
	go func() { inited <- q.Init(context.Background()) }()
	require.Eventually(t, asked, 10*time.Second, time.Millisecond, "the registration is under way")
	closed := make(chan error, 1)
	go func() { closed <- q.Close() }()
	for _, c := range []struct {
		name string
		ch   chan error
		want error
	}{{"Init", inited, txn.ErrClosed}, {"Close", closed, nil}} {
		select {
		case err := <-c.ch:
			if c.want == nil {
				assert.NoError(t, err, c.name)
			} else {
				assert.ErrorIs(t, err, c.want, c.name)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s did not return", c.name)
		}
	}
}
