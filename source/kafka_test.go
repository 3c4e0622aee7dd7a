package source_test

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/rcrowley/go-metrics"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// checkLeaks fails t if a goroutine started during the test is still
// running once the test and its cleanups, the broker's Close among them,
// are done.
func checkLeaks(t *testing.T) {
	// The goroutines to ignore are those running as the test starts: taken
	// in the cleanup, they would be every goroutine the test left behind.
	// sarama's metrics start one process-wide goroutine that never ends.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, before, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
	})
}

// startBroker starts a broker with topics, closed at the end of the test.
// Its group session timeout floor is low, so that rebalances take
// milliseconds instead of seconds.
func startBroker(t testing.TB, topics map[string]int32) *kafkatest.Broker {
	t.Helper()
	b, err := kafkatest.Start(kafkatest.Config{Topics: topics, MinSessionTimeout: 100 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

// fastSarama returns a consumer configuration with short timeouts: a test
// rebalance settles in well under a second. Members that leave say so, so
// the session timeout only bounds how long a busy machine may go without
// a heartbeat.
func fastSarama() *sarama.Config {
	c := sarama.NewConfig()
	c.Consumer.Group.Session.Timeout = 3 * time.Second
	c.Consumer.Group.Heartbeat.Interval = 100 * time.Millisecond
	c.Consumer.Group.Rebalance.Timeout = 10 * time.Second
	c.Consumer.Group.Rebalance.Retry.Backoff = 100 * time.Millisecond
	c.Consumer.MaxWaitTime = 100 * time.Millisecond
	c.Metadata.Retry.Backoff = 50 * time.Millisecond
	return c
}

// testLog returns a logger whose output the test prints if it fails.
func testLog(t testing.TB) *slog.Logger {
	buf := new(source.SyncBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newSource(t testing.TB, b *kafkatest.Broker, topic, group string, edit ...func(*source.KafkaConfig)) *source.Kafka {
	t.Helper()
	cfg := source.KafkaConfig{
		Brokers: b.Addrs(), Topic: topic, Group: group,
		ConnectTimeout: 10 * time.Second, RevokeTimeout: 5 * time.Second,
		Sarama: fastSarama(), Logger: testLog(t),
	}
	for _, f := range edit {
		f(&cfg)
	}
	src, err := source.NewKafka(cfg)
	require.NoError(t, err)
	return src
}

// saramaFetch makes a source fetch through sarama's partition consumers.
func saramaFetch(cfg *source.KafkaConfig) { cfg.SaramaFetch = true }

// produce writes the values from..to-1 to topic, value i to partition
// i mod partitions, keyed "k<i>".
func produce(t testing.TB, b *kafkatest.Broker, topic string, partitions int32, from, to int) {
	t.Helper()
	recs := make([]kafkatest.Record, 0, to-from)
	for i := from; i < to; i++ {
		recs = append(recs, kafkatest.Record{
			Partition: int32(i) % partitions,
			Key:       []byte("k" + strconv.Itoa(i)),
			Value:     []byte(strconv.Itoa(i)),
		})
	}
	require.NoError(t, b.Produce(topic, recs...))
}

// waitCommitted waits until group has committed every record of topic.
func waitCommitted(t testing.TB, b *kafkatest.Broker, group, topic string) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		committed := b.Committed(group, topic)
		for p, hw := range b.HighWatermarks(topic) {
			assert.Equal(c, hw, committed[int32(p)], "partition %d", p)
		}
	}, 20*time.Second, 20*time.Millisecond)
}

// counter counts the values a pipeline's batches hold, and checks that
// each record is in the batch partition of its Kafka partition, at the
// offset produce gave it.
type counter struct {
	partitions int64 // of the topic; 0 means 4
	mu         sync.Mutex
	counts     map[string]int
	wrong      []stream.Origin
}

func (c *counter) count(_ context.Context, b *stream.Batch[source.Message]) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = make(map[string]int)
	}
	for _, p := range b.Partitions {
		for i, m := range p.Values {
			c.counts[string(m.Value)]++
			if o := p.Origin(i); o.Partition != p.ID || string(m.Value) != strconv.FormatInt(o.Offset*cmp.Or(c.partitions, 4)+int64(o.Partition), 10) {
				c.wrong = append(c.wrong, o)
			}
		}
	}
	return nil
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.counts {
		n += v
	}
	return n
}

func TestKafkaPipeline(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"in": 4, "out": 2})
	const n = 500
	produce(t, b, "in", 4, 0, n)

	src := newSource(t, b, "in", "doubler")
	out, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out"}, func(v int) ([]byte, []byte, error) {
		return []byte("k" + strconv.Itoa(v/2)), []byte(strconv.Itoa(v)), nil
	})
	require.NoError(t, err)
	defer func() { assert.NoError(t, out.Close()) }()

	var c counter
	p := stream.NewPipeline(stream.Interval(50 * time.Millisecond))
	in := stream.From(p, src)
	stream.ForEachBatch(in, c.count)
	doubled := stream.MapErr(in, func(m source.Message) (int, error) {
		v, err := strconv.Atoi(string(m.Value))
		return 2 * v, err
	})
	stream.To(doubled, out)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitCommitted(t, b, "doubler", "in")
	cancel()
	require.NoError(t, stopped(t, done))

	assert.Empty(t, c.wrong, "records in the wrong batch partition, or out of order")
	assert.Equal(t, n, c.total())
	assert.Len(t, c.counts, n)

	ctx, cancelRead := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelRead()
	recs, err := b.Records(ctx, "out")
	require.NoError(t, err)
	got := make(map[int]string, len(recs))
	for _, r := range recs {
		v, err := strconv.Atoi(string(r.Value))
		require.NoError(t, err)
		_, dup := got[v]
		require.False(t, dup, "value %d written twice", v)
		got[v] = string(r.Key)
	}
	want := make(map[int]string, n)
	for i := range n {
		want[2*i] = "k" + strconv.Itoa(i)
	}
	assert.Equal(t, want, got)
}

func TestKafkaCommitAndResume(t *testing.T) {
	t.Run("own-fetch", func(t *testing.T) { testCommitAndResume(t) })
	t.Run("sarama-fetch", func(t *testing.T) { testCommitAndResume(t, saramaFetch) })
}

// testCommitAndResume stops a pipeline mid-stream and runs another: it
// commits exactly what it processed, and the second goes on from there.
func testCommitAndResume(t *testing.T, edit ...func(*source.KafkaConfig)) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"in": 4})
	const n = 2000
	produce(t, b, "in", 4, 0, n)

	var c counter
	largest := 0
	run := func(stopAfter int) {
		src := newSource(t, b, "in", "resume", edit...)
		p := stream.NewPipeline(stream.Interval(20*time.Millisecond), stream.MaxRecords(100))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stream.ForEachBatch(stream.From(p, src), func(ctx2 context.Context, b *stream.Batch[source.Message]) error {
			largest = max(largest, b.Len())
			err := c.count(ctx2, b)
			if c.total() >= stopAfter {
				cancel() // the engine finishes and commits this batch, then stops
			}
			return err
		})
		require.NoError(t, p.Run(ctx))
		require.ErrorIs(t, ctx.Err(), context.Canceled, "stopped by the test, not by the deadline")
	}
	run(n / 3)
	first := c.total()
	assert.GreaterOrEqual(t, first, n/3)
	assert.Less(t, first, n, "the first run stopped mid-stream")
	committed := b.Committed("resume", "in")
	var sum int64
	for _, off := range committed {
		sum += off
	}
	assert.Equal(t, int64(first), sum, "the first run committed exactly what it processed")

	run(n)
	assert.Equal(t, 100, largest, "a backlog is cut in batches of MaxRecords")
	assert.Empty(t, c.wrong)
	assert.Len(t, c.counts, n)
	for v, k := range c.counts {
		assert.Equal(t, 1, k, "value %s counted %d times", v, k)
	}
}

// stopped waits for the result of a pipeline's Run after its context was
// cancelled, and fails t if Run takes longer than any batch should.
func stopped(t testing.TB, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of its context being cancelled")
		return nil
	}
}

// owned tracks the partitions a pipeline owns, as its engine learns them
// from the source's Assignment.
type owned struct {
	mu  sync.Mutex
	set map[int32]bool
}

func (o *owned) rebalance(_ context.Context, lost, gained []int32) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.set == nil {
		o.set = make(map[int32]bool)
	}
	for _, p := range lost {
		delete(o.set, p)
	}
	for _, p := range gained {
		o.set[p] = true
	}
	return nil
}

func (o *owned) get() []int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Sorted(maps.Keys(o.set))
}

func TestKafkaGroupSplitsAndTakesOver(t *testing.T) {
	for _, tc := range []struct {
		name        string
		strategy    sarama.BalanceStrategy
		saramaFetch bool
	}{
		{"cooperative-sticky", nil, false}, // the source's default
		{"range", sarama.NewBalanceStrategyRange(), false},
		{"cooperative-sticky/sarama-fetch", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var edit []func(*source.KafkaConfig)
			if tc.strategy != nil {
				edit = append(edit, func(c *source.KafkaConfig) {
					c.Sarama.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{tc.strategy, sarama.NewBalanceStrategyRoundRobin()}
				})
			}
			if tc.saramaFetch {
				edit = append(edit, saramaFetch)
			}
			testGroupSplitsAndTakesOver(t, edit...)
		})
	}
}

// testGroupSplitsAndTakesOver runs a member, then a second that takes
// half the partitions, then stops the second: the first takes them back.
// Every record is processed once.
func testGroupSplitsAndTakesOver(t *testing.T, edit ...func(*source.KafkaConfig)) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"in": 4})

	// Records keep coming while members join and leave.
	stopProducing := make(chan struct{})
	var produced sync.WaitGroup
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() { close(stopProducing) })
		produced.Wait()
	}
	t.Cleanup(stop)
	var total int
	produced.Go(func() {
		for i := 0; ; i += 40 {
			recs := make([]kafkatest.Record, 0, 40)
			for v := i; v < i+40; v++ {
				recs = append(recs, kafkatest.Record{Partition: int32(v) % 4, Value: []byte(strconv.Itoa(v))})
			}
			if err := b.Produce("in", recs...); err != nil {
				t.Error(err)
				return
			}
			total = i + 40
			select {
			case <-stopProducing:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})

	type member struct {
		c      counter
		owns   owned
		cancel context.CancelFunc
		done   chan error
		wait   func() error
	}
	start := func() *member {
		m := &member{done: make(chan error, 1)}
		p := stream.NewPipeline(stream.Interval(50*time.Millisecond), stream.OnRebalance(m.owns.rebalance))
		stream.ForEachBatch(stream.From(p, newSource(t, b, "in", "split", edit...)), m.c.count)
		var ctx context.Context
		ctx, m.cancel = context.WithCancel(context.Background())
		go func() { m.done <- p.Run(ctx) }()
		m.wait = sync.OnceValue(func() error { return stopped(t, m.done) })
		t.Cleanup(func() {
			m.cancel()
			_ = m.wait()
		})
		return m
	}
	all := []int32{0, 1, 2, 3}

	a := start()
	require.EventuallyWithT(t, func(c *assert.CollectT) { assert.Equal(c, all, a.owns.get()) }, 10*time.Second, 10*time.Millisecond)

	bm := start()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		pa, pb := a.owns.get(), bm.owns.get()
		assert.Len(c, pa, 2)
		assert.Len(c, pb, 2)
		assert.ElementsMatch(c, all, append(pa, pb...))
	}, 15*time.Second, 10*time.Millisecond, "two members split the partitions")
	require.Eventually(t, func() bool { return bm.c.total() > 0 }, 10*time.Second, 10*time.Millisecond, "the second member processes records")

	bm.cancel()
	require.NoError(t, bm.wait())
	require.EventuallyWithT(t, func(c *assert.CollectT) { assert.Equal(c, all, a.owns.get()) }, 15*time.Second, 10*time.Millisecond,
		"the first member takes the partitions of the one that left")

	stop()
	waitCommitted(t, b, "split", "in")
	a.cancel()
	require.NoError(t, a.wait())

	assert.Empty(t, a.c.wrong)
	assert.Empty(t, bm.c.wrong)
	dups := 0
	for i := range total {
		v := strconv.Itoa(i)
		seen := a.c.counts[v] + bm.c.counts[v]
		if !assert.Positive(t, seen, "value %s never processed", v) {
			break
		}
		dups += seen - 1
	}
	// Partitions change owner only after their records are committed, so a
	// clean hand-over processes nothing twice.
	assert.Zero(t, dups, "records processed twice")
	t.Logf("%d records: %d by the first member, %d by the second", total, a.c.total(), bm.c.total())
}

func TestKafkaSurvivesBrokerRestart(t *testing.T) {
	checkLeaks(t)
	addr, err := kafkatest.FreeAddr()
	require.NoError(t, err)
	cfg := kafkatest.Config{Addr: addr, DataDir: t.TempDir(), Topics: map[string]int32{"in": 2}, MinSessionTimeout: 100 * time.Millisecond}
	b, err := kafkatest.Start(cfg)
	require.NoError(t, err)
	defer func() { b.Close() }()
	produce(t, b, "in", 2, 0, 100)

	var logs source.SyncBuffer
	src, err := source.NewKafka(source.KafkaConfig{
		Brokers: []string{addr}, Topic: "in", Group: "restart", ConnectTimeout: 20 * time.Second,
		Sarama: fastSarama(), Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	c := counter{partitions: 2}
	p := stream.NewPipeline(stream.Interval(50 * time.Millisecond))
	stream.ForEachBatch(stream.From(p, src), c.count)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitCommitted(t, b, "restart", "in")

	b.Close()
	time.Sleep(time.Second) // the group session fails and is retried
	b, err = kafkatest.Start(cfg)
	require.NoError(t, err)
	produce(t, b, "in", 2, 100, 200)
	waitCommitted(t, b, "restart", "in")
	cancel()
	require.NoError(t, stopped(t, done))

	assert.Len(t, c.counts, 200, "every record processed")
	assert.Equal(t, 200, c.total(), "nothing processed twice: the first records were committed before the broker went away")
	assert.Empty(t, c.wrong)
	assert.Contains(t, logs.String(), "retrying", "the outage is reported")
}

func TestKafkaConnectTimeout(t *testing.T) {
	checkLeaks(t)
	addr, err := kafkatest.FreeAddr() // nothing listens there
	require.NoError(t, err)

	src, err := source.NewKafka(source.KafkaConfig{
		Brokers: []string{addr}, Topic: "in", Group: "g", ConnectTimeout: 500 * time.Millisecond,
	})
	require.NoError(t, err)
	p := stream.NewPipeline()
	stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[source.Message]) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = p.Run(ctx)
	require.Error(t, err)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.ErrorContains(t, err, "unreachable")
	assert.ErrorContains(t, err, addr)
	assert.ErrorIs(t, err, sarama.ErrOutOfBrokers)
}

// Brokers that take connections and never answer (a hung broker, another
// service on the port) fail the run within ConnectTimeout too, not after
// sarama's reads and retries have each waited its Net.ReadTimeout (30s).
func TestKafkaConnectTimeoutSilentBrokers(t *testing.T) {
	// With Metadata.Full off, sarama's NewClient asks the brokers nothing:
	// the first contact must still wait for an answer.
	for _, full := range []bool{true, false} {
		t.Run("full metadata "+strconv.FormatBool(full), func(t *testing.T) {
			checkLeaks(t)
			addr, _ := kafkatest.SilentBrokers(t)
			sc := sarama.NewConfig()
			sc.Metadata.Full = full
			src, err := source.NewKafka(source.KafkaConfig{
				Brokers: []string{addr}, Topic: "in", Group: "g", ConnectTimeout: time.Second, Sarama: sc,
			})
			require.NoError(t, err)
			p := stream.NewPipeline()
			stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[source.Message]) error { return nil })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			err = p.Run(ctx)
			require.Error(t, err, "Run fails before its context ends")
			assert.Less(t, time.Since(start), 10*time.Second)
			assert.ErrorContains(t, err, "unreachable")
			assert.ErrorContains(t, err, addr)
			assert.False(t, src.Reached())
		})
	}
}

// A Run whose ctx ends while the brokers take connections and never
// answer returns soon after, well before ConnectTimeout.
func TestKafkaConnectCancelledSilentBrokers(t *testing.T) {
	checkLeaks(t)
	addr, hangUp := kafkatest.SilentBrokers(t)
	src, err := source.NewKafka(source.KafkaConfig{Brokers: []string{addr}, Topic: "in", Group: "g"}) // the default ConnectTimeout
	require.NoError(t, err)
	p := stream.NewPipeline()
	stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[source.Message]) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Errorf("Run still blocked %v after its ctx ended", time.Since(start))
		hangUp() // the reads fail, and sarama gives up
		<-done
	}
	assert.False(t, src.Reached())
}

func TestKafkaMissingTopicFails(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, nil)
	src, err := source.NewKafka(source.KafkaConfig{
		Brokers: b.Addrs(), Topic: "missing", Group: "g", ConnectTimeout: time.Second, Sarama: fastSarama(),
	})
	require.NoError(t, err)
	p := stream.NewPipeline()
	stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[source.Message]) error { return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = p.Run(ctx)
	require.Error(t, err)
	assert.ErrorContains(t, err, "no session with group g")
	assert.ErrorIs(t, err, sarama.ErrUnknownTopicOrPartition)
	assert.True(t, src.Reached(), "the brokers answered")
}

func TestKafkaStaticMembership(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"in": 4})
	produce(t, b, "in", 4, 0, 100)
	cfg := source.KafkaConfig{
		Brokers: b.Addrs(), Topic: "in", Group: "static", InstanceID: "worker-1", Sarama: fastSarama(),
	}
	for run := range 2 {
		src, err := source.NewKafka(cfg)
		require.NoError(t, err)
		var c counter
		p := stream.NewPipeline(stream.Interval(20 * time.Millisecond))
		stream.ForEachBatch(stream.From(p, src), c.count)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		if run == 1 {
			produce(t, b, "in", 4, 100, 200)
		}
		waitCommitted(t, b, "static", "in")
		cancel()
		require.NoError(t, stopped(t, done))
		assert.Equal(t, 100, c.total(), "run %d reads only what the previous one left", run)
	}
}

// A member whose InstanceID a second process takes is fenced: its run
// fails at once with sarama.ErrFencedInstancedId, instead of retrying a
// join the group refuses until its ConnectTimeout.
func TestKafkaFencedInstanceFails(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"in": 2})
	produce(t, b, "in", 2, 0, 10)
	start := func() func() error {
		src := newSource(t, b, "in", "fenced", func(c *source.KafkaConfig) {
			c.InstanceID = "worker-1"
			c.ConnectTimeout = time.Minute
		})
		p := stream.NewPipeline(stream.Interval(20 * time.Millisecond))
		stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[source.Message]) error { return nil })
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		wait := sync.OnceValue(func() error { return stopped(t, done) })
		t.Cleanup(func() {
			cancel()
			_ = wait()
		})
		return wait
	}
	first := start()
	waitCommitted(t, b, "fenced", "in")
	began := time.Now()
	start()
	err := first()
	require.ErrorIs(t, err, sarama.ErrFencedInstancedId)
	assert.Less(t, time.Since(began), 15*time.Second, "the fenced member fails at once, not after its ConnectTimeout")
}

func TestNewKafkaValidates(t *testing.T) {
	good := source.KafkaConfig{Brokers: []string{"localhost:9092"}, Topic: "t", Group: "g"}
	old := sarama.NewConfig()
	old.Version = sarama.V2_0_0_0
	short := sarama.NewConfig()
	short.Consumer.Group.Rebalance.Timeout = time.Second
	for _, tc := range []struct {
		name string
		edit func(*source.KafkaConfig)
		want string
	}{
		{"no brokers", func(c *source.KafkaConfig) { c.Brokers = nil }, "no brokers"},
		{"no topic", func(c *source.KafkaConfig) { c.Topic = "" }, "no topic"},
		{"no group", func(c *source.KafkaConfig) { c.Group = "" }, "no group"},
		{"negative buffer", func(c *source.KafkaConfig) { c.Buffer = -1 }, "negative"},
		{"negative timeout", func(c *source.KafkaConfig) { c.ConnectTimeout = -time.Second }, "negative"},
		{"static member on an old version", func(c *source.KafkaConfig) { c.InstanceID = "a"; c.Sarama = old }, "InstanceId"},
		{"revoke timeout too long", func(c *source.KafkaConfig) { c.Sarama = short; c.RevokeTimeout = 2 * time.Second }, "revoke timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			_, err := source.NewKafka(cfg)
			assert.ErrorContains(t, err, tc.want)
		})
	}
	_, err := source.NewKafka(good)
	assert.NoError(t, err)
}

func TestKafkaRunTwice(t *testing.T) {
	src, err := source.NewKafka(source.KafkaConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", Group: "g", ConnectTimeout: 10 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.NoError(t, src.Run(ctx))
	err = src.Run(ctx)
	assert.ErrorContains(t, err, "Run called twice")
	assert.False(t, errors.Is(err, context.Canceled))
}

// lagHook keeps the lag of every batch's inputs, by partition.
type lagHook struct {
	mu      sync.Mutex
	read    map[int32]int64
	bad     []string
	checked int
}

func (h *lagHook) BatchDone(s stream.BatchStats) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, in := range s.Inputs {
		h.read[in.Partition] += int64(in.Records)
		if in.Lag < 0 {
			continue // no commit yet
		}
		h.checked++
		// Everything was produced before the pipeline started, so the
		// high watermark it fetched is the last one.
		if want := 250 - h.read[in.Partition]; in.Lag != want {
			h.bad = append(h.bad, "batch "+strconv.FormatInt(s.Info.ID, 10)+" partition "+strconv.Itoa(int(in.Partition))+
				": lag "+strconv.FormatInt(in.Lag, 10)+", want "+strconv.FormatInt(want, 10))
		}
	}
}

func TestKafkaLag(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"in": 2})
	produce(t, b, "in", 2, 0, 500)

	src := newSource(t, b, "in", "lag")
	h := &lagHook{read: map[int32]int64{}}
	p := stream.NewPipeline(stream.Interval(50*time.Millisecond), stream.MaxRecords(60), stream.WithHook(h))
	stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[source.Message]) error { return nil })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitCommitted(t, b, "lag", "in")
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.read[0]+h.read[1] == 500
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, stopped(t, done))

	h.mu.Lock()
	defer h.mu.Unlock()
	assert.Empty(t, h.bad)
	assert.GreaterOrEqual(t, h.checked, 8, "500 records in batches of 60 give the lag of both partitions several times")
	n, ok := src.Lag(0)
	assert.False(t, ok, "a stopped member owns no partition, and knows no lag: %d", n)
}

// A commit in flight as Run ends, its connection to the coordinator
// closed under it, fails at once, saying the source stopped: it does not
// try again until the rebalance timeout, for a coordinator that the
// source no longer asks.
func TestKafkaCommitInFlightAsRunEnds(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"in": 1})
	src := newSource(t, b, "in", "ends", func(cfg *source.KafkaConfig) {
		cfg.Sarama.Consumer.Group.Rebalance.Timeout = time.Minute
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- src.Run(ctx) }()
	require.Eventually(t, func() bool { return src.Owns(0) }, 20*time.Second, 10*time.Millisecond)

	held, release := b.Stall(kmsg.OffsetCommit.Int16())
	defer release()
	committed := make(chan error, 1)
	go func() {
		committed <- src.Commit(context.Background(), []stream.Offset{{Source: "in", Partition: 0, Next: 1}})
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("no OffsetCommit")
	}
	cancel()
	require.NoError(t, stopped(t, ran))
	select {
	case err := <-committed:
		assert.ErrorContains(t, err, "commit in/0@1")
		assert.ErrorContains(t, err, "source stopped")
	case <-time.After(10 * time.Second):
		t.Error("the commit went on after Run ended")
		release()
		<-committed
	}
}

// A run leaves no meter of its own registered in the Sarama config's
// metric registry: a meter registered stays ticked by go-metrics until it
// is unregistered, and a process that runs source after source, each with
// a registry of its own (sarama.NewConfig's), would keep them all.
func TestKafkaRunLeavesNoMeters(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*source.KafkaConfig)
	}{
		{"own-fetch", func(*source.KafkaConfig) {}},
		{"sarama-fetch", saramaFetch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			b := startBroker(t, map[string]int32{"in": 2})
			produce(t, b, "in", 2, 0, 100)
			registry := metrics.NewRegistry()
			src := newSource(t, b, "in", "meters", tc.edit, func(cfg *source.KafkaConfig) {
				cfg.Sarama.MetricRegistry = registry
			})
			p := stream.NewPipeline(stream.Interval(20 * time.Millisecond))
			stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[source.Message]) error { return nil })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			waitCommitted(t, b, "meters", "in")
			cancel()
			require.NoError(t, stopped(t, done))

			// sarama's client closes its connections after its Close
			// returns.
			assert.EventuallyWithT(t, func(c *assert.CollectT) {
				var left []string
				registry.Each(func(name string, m any) {
					if _, ok := m.(metrics.Meter); ok {
						left = append(left, name)
					}
				})
				assert.Empty(c, left, "meters left registered")
			}, 10*time.Second, 20*time.Millisecond)
		})
	}
}
