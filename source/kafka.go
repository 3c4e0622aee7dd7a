package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/rcrowley/go-metrics"

	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/stream"
)

// Defaults of a Kafka source.
const (
	DefaultKafkaConnectTimeout = 30 * time.Second
	DefaultKafkaRevokeTimeout  = 10 * time.Second
	DefaultKafkaBuffer         = 131072
)

// Message is a Kafka record as a Kafka source hands it to a pipeline. Its
// topic, partition and offset are in the record's stream.Origin.
type Message struct {
	Key       []byte
	Value     []byte
	Timestamp time.Time
	Headers   []Header
}

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// KafkaConfig configures a Kafka source. Brokers, Topic and Group are
// required; the zero value of every other field means its default.
type KafkaConfig struct {
	// Brokers are the "host:port" addresses to bootstrap from.
	Brokers []string
	// Topic is the topic to read. Its partition p is partition p of every
	// batch, so that state kept by key lives with the Kafka partition the
	// producers keyed the record to. A source reads one topic: a batch's
	// partitions are numbered, not named, so partition p of two topics
	// could not be told apart when the group moves one of them.
	Topic string
	// Group is the consumer group. Processes that run with the same Group
	// split the partitions of Topic between them.
	Group string
	// StartNewest makes a group that has no committed offset for a
	// partition start at its end. By default it starts at the beginning:
	// a new pipeline reads what is already there. A group whose committed
	// offset retention left behind starts there too, skipping the records
	// in between with a warning (see Kafka). Read committed (with a
	// Transaction, or Consumer.IsolationLevel), the end is the last stable
	// offset, as for a Kafka consumer: a transaction open at the start is
	// read once committed. (With SaramaFetch, sarama's consumer starts at
	// the high watermark, after it.)
	StartNewest bool
	// InstanceID turns on static membership (KIP-345): a member that
	// restarts with the same InstanceID within the session timeout gets its
	// partitions back without a rebalance, and a member that dies while it
	// joins cannot linger in the group under an unknown member ID. Each
	// process of a group needs its own InstanceID: a process that joins
	// with the InstanceID of one that runs fences it, whose Run then fails
	// (sarama.ErrFencedInstancedId).
	InstanceID string
	// ConnectTimeout bounds how long Run may go without a working group
	// session: at start, while it cannot reach the brokers, and later,
	// while it fails to rejoin the group. Run then fails. A proxy dialer
	// of the Sarama config (Net.Proxy.Dialer) without a DialContext method
	// cannot be cut off: a dial of it that hangs holds Run, even past its
	// ctx, until the dialer gives up. Default DefaultKafkaConnectTimeout.
	ConnectTimeout time.Duration
	// RevokeTimeout bounds how long a partition that is taken away waits
	// for the pipeline to commit the records it already has, so that its
	// new owner starts where this one stopped. Past it, those records are
	// dropped from the pipeline uncommitted and the new owner reads them
	// again. It must be shorter than the Sarama config's
	// Consumer.Group.Rebalance.Timeout. Default DefaultKafkaRevokeTimeout, or
	// half the rebalance timeout if that is shorter.
	RevokeTimeout time.Duration
	// Buffer is how many records the source reads ahead of the pipeline
	// (default DefaultKafkaBuffer). When it is full, the source stops
	// reading, and Kafka's fetches wait. The source reads on while the
	// pipeline works on a batch only as far as this, so a Buffer of at
	// least a batch (the pipeline's MaxRecords) keeps Kafka's fetches
	// going all the time: the default is a little over the popular-users
	// pipeline's 100,000, and 16,384 read 10 to 20% fewer records a second
	// there (BENCHMARKS.md). A record read ahead holds about 200 bytes
	// besides its key and value, so the default holds about 26 MB and
	// its payloads at most.
	Buffer int
	// Logger receives broker errors, retries and rebalances. Nil discards
	// them.
	Logger *slog.Logger
	// Sarama is the client configuration to start from, for what the
	// source does not decide: TLS, SASL, the Kafka version, timeouts,
	// fetch sizes. The source copies it and then overrides what its
	// guarantees depend on: automatic commits are off, errors are
	// returned to it, Consumer.Offsets.Initial follows StartNewest, and
	// InstanceID, when set, replaces Consumer.Group.InstanceId. Sarama's
	// default assignor (range alone) is replaced by cooperative-sticky when
	// the Kafka version allows it (2.4 and later), so that a rebalance moves
	// only the partitions that change owner; with a Transaction, by sticky,
	// eager (see Transaction). Any other list of strategies is kept. Nil
	// starts from sarama.NewConfig().
	Sarama *sarama.Config
	// Transaction, when set, commits the offsets into the open Kafka
	// transaction of a pipeline (stream.WithTransaction), such as a
	// sink/txn.Producer's, instead of with the group's own commit: the
	// group's offsets move when the transaction commits, with the batch's
	// output and state. The source then reads read_committed, and a commit
	// of a partition this member no longer owns fails, so that the
	// transaction is aborted rather than committing output that the
	// partition's new owner will make again. The default assignor is then
	// an eager one (sticky): the group moves to its next generation, which
	// the offsets of a transaction name, only once the claims have ended
	// and their transaction committed, so that a member joining or leaving
	// does not fail the batch in flight. A cooperative strategy set in the
	// Sarama config moves the generation under a claim that goes on: a
	// rebalance between a batch's offsets and its commit then aborts the
	// transaction and stops the run (see sink/txn).
	Transaction TxnOffsets
	// SaramaFetch fetches the records through sarama's partition
	// consumers, as the group's claims start them, instead of with the
	// source's own fetch loops (see Fetching): about two thirds as fast,
	// with an allocation per record (BenchmarkKafkaConsume), for a setup
	// the loops would not serve. With a Kafka
	// version before 0.11 in the Sarama config, sarama's consumers fetch
	// whatever this says.
	SaramaFetch bool
}

// TxnOffsets adds a consumer group's offsets to an open Kafka transaction.
// *txn.Producer (package sink/txn) implements it. The source counts the
// offsets committed once OnEnd tells it the transaction committed.
type TxnOffsets interface {
	AddOffsets(ctx context.Context, group *sarama.ConsumerGroupMetadata, offsets map[string][]*sarama.PartitionOffsetMetadata) error
	// OnEnd calls f once, when the open transaction ends: committed or
	// not.
	OnEnd(f func(committed bool))
}

// Kafka is a source that reads a topic as a member of a Kafka consumer
// group, with sarama.
//
// It implements stream.Source, stream.Runner (the group session),
// stream.Committer (offsets are committed only after the pipeline has
// finished the batch, so that a crash replays records but never skips
// them) and stream.Assigner (the partitions the group gave this member).
// NewKafka starts nothing; the pipeline calls Run. A Kafka source serves
// one pipeline run.
//
// # Rebalances
//
// When the group takes a partition away, the source stops handing out
// its records at once, waits up to RevokeTimeout for the pipeline to
// commit the ones it has, and then reports the partition lost, so that
// its new owner starts exactly where this member stopped. When a partition
// comes back to a member that still holds its state, and nobody committed
// past this member in between, the pipeline keeps the state, even when the
// claim starts past the commit because retention deleted the records after
// it (see Records deleted before they were read); otherwise the partition
// is reported lost before any of its new records are handed out. A
// rebalance is acted upon between batches: when a revoked partition has
// records in the batch being collected, Poll returns stream.ErrCut so that
// the batch is cut and committed at once. The pipeline should still
// cut batches on an interval (stream.Interval greater than 0), so that an
// idle pipeline notices rebalances too.
//
// # Fetching
//
// sarama's consumer group runs the group protocol (joining, assignment,
// heartbeats). The records themselves, with a Kafka version of 0.11 or
// later in the Sarama config, are fetched by the source: one loop per
// leader broker, on a connection of its own, asks for all the partitions
// it leads in each fetch request and queues their records a record batch
// at a time. sarama's partition consumer hands every message through
// channels and goroutines of its own, which took most of its CPU; the
// source pauses it as a claim starts, and the records it fetched before
// the pause are not handed out twice. A claim that starts at the oldest
// or newest record (no committed offset, or one out of range) starts
// there as the source's loop finds it, not as sarama's consumer found it
// before: no record is skipped between the two. The fetches follow the
// Sarama config: Consumer.Fetch (Min, Default, Max, MaxBytes),
// MaxWaitTime, IsolationLevel, Retry.Backoff, and Consumer.Interceptors
// run on every record; sarama's consumer metrics in its MetricRegistry
// (consumer-batch-size, consumer-fetch-rate, consumer-fetch-response-size)
// and its broker metrics are kept as sarama's consumer keeps them. They
// go to the partition's leader, and with a RackID to the replica the
// leader prefers, if it names one (KIP-392, as sarama's consumer does): a
// failure there, out of range included, sends the partition back to its
// leader. The leader epoch is not checked (KIP-320). A fetch told that its
// partition's leader moved finds the new leader; a position out of the
// partition's range (records deleted by retention before they were read)
// starts again from the oldest record, or the newest with StartNewest,
// with a warning that names the offsets skipped, whatever
// Consumer.Group.ResetInvalidOffsets says (which applies to a claim's
// start; sarama's partition consumer would stop reading the partition
// until the next rebalance). SaramaFetch goes back to sarama's partition
// consumers.
//
// # Records deleted before they were read
//
// A group's committed offset falls below a partition's oldest record when
// retention deletes records that nobody read: a pipeline stopped for
// longer than the topic's retention. A claim that starts there starts at
// the oldest record instead, or the newest with StartNewest (sarama's
// Consumer.Group.ResetInvalidOffsets, on by default), and the source logs
// the records it skips with the same warning as a fetch out of range:
// "kafka records skipped: the partition's position was out of range", with
// the topic, group, partition, first_skipped (the committed offset) and
// last_skipped, once. To tell this from a group with no committed offset,
// which starts there skipping nothing, a claim that starts at the oldest or
// newest record fetches the group's committed offset from its coordinator,
// waiting through a failover of the coordinator for up to the rebalance
// timeout (Consumer.Group.Rebalance.Timeout) before it hands out any
// record: a claim that starts without it drops the records and state the
// pipeline kept of the partition. With SaramaFetch, the warning comes with
// the claim's first record, and last_skipped is the offset before it:
// records a read committed claim does not hand out (aborted transactions)
// count among those skipped.
type Kafka struct {
	cfg    KafkaConfig
	sarama *sarama.Config
	// conns is sarama's config for the source's own connections to the
	// brokers (see kafkaMetrics).
	conns *sarama.Config
	// metrics is conns' metric registry, nil when sarama's config has none.
	metrics *kafkaMetrics
	log     *slog.Logger

	running atomic.Bool
	// reached is set once Run has reached the brokers (see Reached).
	reached atomic.Bool

	mu     sync.Mutex
	parts  map[int32]*kafkaPartition
	queue  []*kafkaChunk // records read ahead, oldest first, from queue[head]
	head   int
	queued int    // records in the queue
	epochs uint64 // claims started, to tell a claim's chunks from an older one's
	// Goroutines wait for three kinds of change: Poll for records, claims
	// for room in the queue, revoked claims for commits.
	records, room, commits kafkaSignal
	kept                   []*kafkaChunk // take's scratch space
	// cut asks the pipeline to cut its batch now (stream.ErrCut): a
	// partition is being revoked and waits for its records to be committed.
	cut    bool
	client sarama.Client
	// coordinator is this source's own connection to the group
	// coordinator, for commits: on the client's connection, shared with
	// fetches, a commit waits behind a fetch the broker holds for up to
	// Consumer.MaxWaitTime. The Java client keeps a separate connection to
	// the coordinator for the same reason.
	coordinator kafkaCoordinatorSlot
	// offsetCoordinator is another, for the offset fetches of claims
	// that start (see committedOffset): a commit would wait behind one
	// the coordinator holds, up to Net.ReadTimeout.
	offsetCoordinator kafkaCoordinatorSlot
	session           sarama.ConsumerGroupSession
	// group runs the group protocol; fetch, when not nil, fetches the
	// claimed partitions in place of sarama's partition consumers, which
	// the claims pause (see kafkaFetch).
	group sarama.ConsumerGroup
	fetch *kafkaFetch
	// offsetFetches are the committed offset fetches of claims that
	// start (see committedOffset), which Run waits for as it ends.
	offsetFetches sync.WaitGroup
	// healthy is when the source last had a group session (when one
	// started or ended): Run fails after ConnectTimeout without one.
	healthy time.Time
	// ended is the error Run returned, once it ended (nil when its
	// context ended it): a commit in flight then fails with it.
	ended error
}

var (
	_ stream.Source[Message] = (*Kafka)(nil)
	_ stream.Runner          = (*Kafka)(nil)
	_ stream.Committer       = (*Kafka)(nil)
	_ stream.Assigner        = (*Kafka)(nil)
	_ stream.Lagger          = (*Kafka)(nil)
)

// kafkaOwner says where this member stands with a partition.
type kafkaOwner uint8

const (
	// kafkaNotOwned: the partition belongs to another member, or to nobody yet.
	kafkaNotOwned kafkaOwner = iota
	// kafkaOwned: a claim is running and hands out records.
	kafkaOwned
	// kafkaRevoking: the claim is ending; it hands out nothing more and waits
	// for the pipeline to commit what it has.
	kafkaRevoking
	// kafkaBetween: the group session ended (a rebalance with an eager
	// strategy, or an error) while the partition was owned. The next
	// session may give it back.
	kafkaBetween
)

// kafkaPartition is what the source knows of one partition of the topic.
// Offsets may be sarama's sentinels (OffsetOldest, OffsetNewest) until the
// first record is handed out: they are compared, never used as positions.
type kafkaPartition struct {
	owner kafkaOwner
	epoch uint64 // of the current or last claim
	// inPipeline: the pipeline may hold records or state of the partition
	// (it was in the last Assignment or records were handed out since).
	inPipeline bool
	// next is the offset after the last record handed out, or where the
	// claim started when none was (or the group's commit, when the
	// pipeline keeps the partition across a claim that starts at a
	// sentinel past it: see keptTo).
	next int64
	// fed is the offset after the last record queued by the current
	// claim, or where it started: records before it that come again (from
	// sarama's partition consumer and from the fetch loop, at a claim's
	// start) are not queued twice.
	fed int64
	// committed is the group's committed offset as this member last knew it.
	committed int64
	// hwm is the partition's high watermark as the claim last fetched it.
	hwm int64
	// mustDrop: the pipeline holds records or state of the partition that
	// the current claim does not continue; it must drop them (at the next
	// Assignment) before it gets any record of the claim.
	mustDrop bool
	// keptTo: the current claim started at a sentinel past the group's
	// commit, keptTo, out of the partition's range, and the pipeline kept
	// its records and state, which end there. If the claim's first record
	// comes before it (the log cut short, or the topic made again), they
	// must be dropped first. Otherwise, and once the first record came, -1.
	keptTo int64
	// lostFrom is the group's committed offset when the current claim
	// started at a sentinel because it was out of the partition's range
	// (sarama's ResetInvalidOffsets): the records from there to where the
	// claim starts reading are skipped, and logged once it knows where
	// that is. Otherwise, and once logged, -1.
	lostFrom int64
	// loggedFrom..loggedTo-1 were the last records logged as skipped at a
	// claim's start (and by its fetch, out of range again before it
	// queued a record), so that a claim that starts again from the same
	// commit does not log them twice.
	loggedFrom, loggedTo int64
}

// kafkaChunk is a run of consecutive records of one partition, read by a claim.
type kafkaChunk struct {
	partition int32
	epoch     uint64
	msgs      []*sarama.ConsumerMessage
	slab      []sarama.ConsumerMessage // what msgs point to, when the fetch loop made them
	off       int                      // records before off were handed out
	hwm       int64                    // the partition's high watermark when the chunk was read
}

// NewKafka returns a Kafka source. It validates cfg and starts nothing.
func NewKafka(cfg KafkaConfig) (*Kafka, error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("kafka source: no brokers")
	case cfg.Topic == "":
		return nil, errors.New("kafka source: no topic")
	case cfg.Group == "":
		return nil, fmt.Errorf("kafka source %s: no group", cfg.Topic)
	case cfg.ConnectTimeout < 0, cfg.RevokeTimeout < 0, cfg.Buffer < 0:
		return nil, fmt.Errorf("kafka source %s: negative connect timeout %v, revoke timeout %v or buffer %d",
			cfg.Topic, cfg.ConnectTimeout, cfg.RevokeTimeout, cfg.Buffer)
	}
	cfg.Brokers = slices.Clone(cfg.Brokers)
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultKafkaConnectTimeout
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = DefaultKafkaBuffer
	}
	sc, err := consumerConfig(&cfg)
	if err != nil {
		return nil, fmt.Errorf("kafka source %s: %w", cfg.Topic, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("topic", cfg.Topic, "group", cfg.Group)
	k := &Kafka{cfg: cfg, sarama: sc, log: log, parts: make(map[int32]*kafkaPartition)}
	conns := *sc
	if conns.MetricRegistry != nil {
		k.metrics = &kafkaMetrics{Registry: conns.MetricRegistry, names: make(map[string]struct{})}
		conns.MetricRegistry = k.metrics
	}
	k.conns = &conns
	return k, nil
}

// kafkaMetrics is the Sarama config's metric registry as the source's own
// connections to the brokers register in it: their metrics count with the
// client's, but closing one during Run unregisters none. sarama's
// Broker.Close unregisters, and stops, every metric the broker
// registered, those it shares with every other broker of the registry
// (request-rate, consumer-fetch-rate, ...) among them, under the client's
// connections, which would go on counting in meters no longer registered.
// The source's connections (to the coordinator, the fetch loops') register
// the same few names again as they reconnect, adding nothing to the
// registry. Run's end unregisters them (see close), as the client's Close
// does its connections' metrics: a meter registered goes on being ticked
// until it is, and a process that runs many sources would keep them all.
type kafkaMetrics struct {
	metrics.Registry
	mu     sync.Mutex
	names  map[string]struct{} // registered through r, until close
	closed bool
}

func (r *kafkaMetrics) GetOrRegister(name string, m any) any {
	r.mu.Lock()
	r.names[name] = struct{}{}
	r.mu.Unlock()
	return r.Registry.GetOrRegister(name, m)
}

func (r *kafkaMetrics) Register(name string, m any) error {
	r.mu.Lock()
	r.names[name] = struct{}{}
	r.mu.Unlock()
	return r.Registry.Register(name, m)
}

// Unregister unregisters name only once close was called: a connection
// closed after Run's end (see coordinatorConn) unregisters what it
// registered, as sarama's connections do.
func (r *kafkaMetrics) Unregister(name string) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		r.Registry.Unregister(name)
	}
}

// UnregisterAll does nothing: sarama's connections unregister their
// metrics one by one, and the registry holds the client's too.
func (*kafkaMetrics) UnregisterAll() {}

// close unregisters the metrics registered through r, once the source's
// connections are closed.
func (r *kafkaMetrics) close() {
	r.mu.Lock()
	names := r.names
	r.names, r.closed = make(map[string]struct{}), true
	r.mu.Unlock()
	for name := range names {
		r.Registry.Unregister(name)
	}
}

// consumerConfig returns the sarama configuration of a source.
func consumerConfig(cfg *KafkaConfig) (*sarama.Config, error) {
	sc := sarama.NewConfig()
	if cfg.Sarama != nil {
		c := *cfg.Sarama
		sc = &c
	}
	if sc.ClientID == "" || sc.ClientID == "sarama" {
		sc.ClientID = "sluice"
	}
	sc.Consumer.Offsets.AutoCommit.Enable = false
	sc.Consumer.Return.Errors = true
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	if cfg.StartNewest {
		sc.Consumer.Offsets.Initial = sarama.OffsetNewest
	}
	if cfg.InstanceID != "" {
		sc.Consumer.Group.InstanceId = cfg.InstanceID
	}
	if cfg.Transaction != nil {
		sc.Consumer.IsolationLevel = sarama.ReadCommitted
	}
	if s := sc.Consumer.Group.Rebalance.GroupStrategies; sc.Consumer.Group.Rebalance.Strategy == nil &&
		(len(s) == 0 || len(s) == 1 && s[0].Name() == sarama.RangeBalanceStrategyName) {
		switch {
		case cfg.Transaction != nil:
			// Eager: the group waits for the claims to end, and with them
			// their transactions, before it moves to its next generation,
			// which the transactions' offsets name.
			sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
		case sc.Version.IsAtLeast(sarama.V2_4_0_0):
			sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyCooperativeSticky()}
		}
	}
	// A dial must not outlast the time Run has to connect at all.
	sc.Net.DialTimeout = min(sc.Net.DialTimeout, cfg.ConnectTimeout)
	if cfg.RevokeTimeout == 0 {
		cfg.RevokeTimeout = min(DefaultKafkaRevokeTimeout, sc.Consumer.Group.Rebalance.Timeout/2)
	}
	if cfg.RevokeTimeout >= sc.Consumer.Group.Rebalance.Timeout {
		return nil, fmt.Errorf("revoke timeout %v is not shorter than the rebalance timeout %v",
			cfg.RevokeTimeout, sc.Consumer.Group.Rebalance.Timeout)
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("sarama config: %w", err)
	}
	return sc, nil
}

// Run joins the group and reads the partitions it is given until ctx is
// cancelled, then leaves the group. It blocks; it returns nil after ctx is
// cancelled, or an error when it could not reach the brokers or hold a
// group session for ConnectTimeout, when another member took its
// InstanceID, or when a fetch fails in a way no retry cures: the topic not
// authorized, a record batch corrupt on the broker or whose CRC does not
// match (with its own fetch loops, not SaramaFetch). Every goroutine it
// started has ended when it returns. Run may be called once.
func (k *Kafka) Run(ctx context.Context) (runErr error) {
	if !k.running.CompareAndSwap(false, true) {
		return fmt.Errorf("kafka source %s: Run called twice", k.cfg.Topic)
	}
	if ctx.Err() != nil {
		return nil
	}
	client, err := k.connect(ctx)
	if err != nil || client == nil {
		return err
	}
	defer client.Close()
	k.reached.Store(true)
	group, err := sarama.NewConsumerGroupFromClient(k.cfg.Group, client)
	if err != nil {
		return fmt.Errorf("kafka source %s: group %s: %w", k.cfg.Topic, k.cfg.Group, err)
	}
	// runCtx ends with ctx, or with a failure a retry does not cure,
	// found by the fetch loops: the cause Run returns.
	runCtx, failRun := context.WithCancelCause(ctx)
	defer failRun(nil)
	var fetch *kafkaFetch
	if kafkaOwnFetch(k.sarama) && !k.cfg.SaramaFetch {
		fetch = newKafkaFetch(k, client)
		fetch.fail = failRun
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for err := range group.Errors() {
			k.log.Warn("kafka consumer error", "err", err)
		}
	})
	defer func() {
		// Leaving the group (dynamic members) lets the others take the
		// partitions over at once instead of after the session timeout.
		if err := group.Close(); err != nil {
			k.log.Warn("kafka consumer group close", "err", err)
		}
		if fetch != nil {
			fetch.stop()
		}
		wg.Wait()
		k.mu.Lock()
		k.ended = runErr
		k.mu.Unlock()
		k.closeCoordinators()
		k.offsetFetches.Wait()
		if k.metrics != nil {
			k.metrics.close()
		}
		k.mu.Lock()
		for _, p := range k.parts {
			p.owner = kafkaNotOwned
		}
		k.mu.Unlock()
	}()

	k.mu.Lock()
	k.client, k.group, k.fetch = client, group, fetch
	k.healthy = time.Now()
	k.mu.Unlock()
	h := &kafkaHandler{k: k, stop: runCtx.Done()}
	// ended is what Run returns once runCtx is done: nil for ctx.
	ended := func() error {
		if ctx.Err() != nil {
			return nil
		}
		return context.Cause(runCtx)
	}
	wait := kafkaBackoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	for {
		err := group.Consume(runCtx, []string{k.cfg.Topic}, h)
		if runCtx.Err() != nil {
			return ended()
		}
		if err == nil {
			// The session ended for a rebalance; the next Consume joins
			// the new generation.
			wait.reset()
			continue
		}
		if errors.Is(err, sarama.ErrFencedInstancedId) {
			// Another process joined with this InstanceID: the group
			// refuses this one for as long as that one runs.
			return fmt.Errorf("kafka source %s: group %s: instance %s taken by another member: %w",
				k.cfg.Topic, k.cfg.Group, k.sarama.Consumer.Group.InstanceId, err)
		}
		k.mu.Lock()
		since := time.Since(k.healthy)
		k.mu.Unlock()
		if since >= k.cfg.ConnectTimeout {
			return fmt.Errorf("kafka source %s: no session with group %s on %v for %v: %w",
				k.cfg.Topic, k.cfg.Group, k.cfg.Brokers, since.Round(time.Millisecond), err)
		}
		d := wait.next()
		k.log.Warn("kafka group session failed; retrying", "err", err, "retry_in", d)
		if !kafkaSleep(runCtx, d) {
			return ended()
		}
	}
}

// connect makes the sarama client, retrying until ConnectTimeout. It
// returns a nil client and error when ctx is done first.
func (k *Kafka) connect(ctx context.Context) (sarama.Client, error) {
	start := time.Now()
	wait := kafkaBackoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		client, err := k.newClient(ctx, k.cfg.ConnectTimeout-time.Since(start))
		if err == nil {
			return client, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		left := k.cfg.ConnectTimeout - time.Since(start)
		if left <= 0 {
			return nil, fmt.Errorf("kafka source %s: brokers %v unreachable for %v (%d attempts): %w",
				k.cfg.Topic, k.cfg.Brokers, time.Since(start).Round(time.Millisecond), attempt, err)
		}
		// The last attempt comes as ConnectTimeout ends, bounded by what
		// is left of it.
		d := min(wait.next(), left)
		k.log.Warn("kafka brokers unreachable; retrying", "brokers", k.cfg.Brokers, "err", err, "retry_in", d)
		if !kafkaSleep(ctx, d) {
			return nil, nil
		}
	}
}

// newClient makes the sarama client, first reaching the brokers within
// left, or until ctx is done (kafkaconf.Reach): sarama's own wait is
// Net.ReadTimeout (30s) for each of several reads, none of which a
// context ends, so that brokers that take connections and never answer
// (a hung broker, another service on the port) would hold a connect for
// minutes past ConnectTimeout, or past a stop, logging nothing.
func (k *Kafka) newClient(ctx context.Context, left time.Duration) (sarama.Client, error) {
	if err := kafkaconf.Reach(ctx, k.cfg.Brokers, k.sarama, max(left, time.Millisecond)); err != nil {
		return nil, err
	}
	return sarama.NewClient(k.cfg.Brokers, k.sarama)
}

// Poll implements stream.Source: it hands out the records read ahead,
// waiting for some when there are none.
func (k *Kafka) Poll(ctx context.Context, buf []stream.Record[Message]) (int, error) {
	if len(buf) == 0 {
		return 0, nil
	}
	for {
		k.mu.Lock()
		n := k.take(buf)
		if k.cut {
			k.cut = false
			k.mu.Unlock()
			return n, stream.ErrCut
		}
		if n > 0 {
			if k.queued < k.cfg.Buffer {
				k.room.fire()
			}
			k.mu.Unlock()
			return n, nil
		}
		wake := k.records.wait()
		k.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// take moves records from the queue to buf. Chunks of claims that ended
// are dropped; chunks of a partition the pipeline must drop first are
// kept for later. k.mu is held.
func (k *Kafka) take(buf []stream.Record[Message]) int {
	n := 0
	q := k.queue[k.head:]
	kept := k.kept[:0]
	j := 0
	for ; j < len(q) && n < len(buf); j++ {
		c := q[j]
		p := k.parts[c.partition]
		if p == nil || p.epoch != c.epoch || p.owner != kafkaOwned {
			k.queued -= len(c.msgs) - c.off
			k.recycle(c)
			continue
		}
		if p.mustDrop {
			kept = append(kept, c)
			continue
		}
		// Records are made here rather than in the claims: a message is a
		// pointer, a record 128 bytes, and each copy of it counts.
		m := min(len(buf)-n, len(c.msgs)-c.off)
		for i, msg := range c.msgs[c.off : c.off+m] {
			kafkaRecord(&buf[n+i], msg)
		}
		n += m
		c.off += m
		k.queued -= m
		p.next = buf[n-1].Origin.Offset + 1
		p.inPipeline = true
		if c.off < len(c.msgs) {
			kept = append(kept, c) // buf is full
		} else {
			k.recycle(c)
		}
	}
	// The chunks kept go back in order, just before the ones not looked at.
	head := k.head + j - len(kept)
	clear(k.queue[k.head:head])
	k.head = head
	copy(k.queue[k.head:], kept)
	clear(kept)
	k.kept = kept[:0]
	if k.head == len(k.queue) {
		clear(k.queue)
		k.queue, k.head = k.queue[:0], 0
	}
	return n
}

var kafkaChunks = sync.Pool{New: func() any { return new(kafkaChunk) }}

func (k *Kafka) recycle(c *kafkaChunk) {
	clear(c.msgs) // the pool must not keep messages alive
	c.msgs = c.msgs[:0]
	clear(c.slab)
	c.slab = c.slab[:0]
	kafkaChunks.Put(c)
}

// Commit implements stream.Committer: it commits the offsets to the group
// and returns when the broker has stored them. Offsets of partitions this
// member no longer owns are not committed (their new owner reads those
// records again); that is logged, not an error. A commit that Run's end
// finds waiting for the coordinator fails at once, with the error Run
// returned, if any.
func (k *Kafka) Commit(ctx context.Context, offsets []stream.Offset) error {
	k.mu.Lock()
	sess, client := k.session, k.client
	var commit []stream.Offset
	for _, o := range offsets {
		if o.Source != k.cfg.Topic {
			k.mu.Unlock()
			return fmt.Errorf("kafka source %s: commit of %s/%d: not this source's topic", k.cfg.Topic, o.Source, o.Partition)
		}
		p := k.parts[o.Partition]
		if sess == nil || p == nil || p.mustDrop || p.owner != kafkaOwned && p.owner != kafkaRevoking {
			if k.cfg.Transaction != nil {
				k.mu.Unlock()
				return fmt.Errorf("kafka source %s: commit of partition %d in a transaction: %w", k.cfg.Topic, o.Partition, ErrNotOwned)
			}
			k.log.Info("kafka offset not committed: partition not owned", "partition", o.Partition, "offset", o.Next)
			continue
		}
		commit = append(commit, o)
	}
	k.mu.Unlock()
	if len(commit) == 0 {
		return nil
	}
	if k.cfg.Transaction != nil {
		return k.commitTxn(ctx, sess, commit)
	}
	done, err := k.commit(ctx, client, sess, commit)
	k.committed(done)
	return err
}

// ErrNotOwned is returned (wrapped) by Commit with a Transaction, for a
// partition that the group gave to another member.
var ErrNotOwned = errors.New("partition not owned by this member")

// commitTxn adds offsets to the transaction, with the session's group
// generation and member, which the brokers check.
func (k *Kafka) commitTxn(ctx context.Context, sess sarama.ConsumerGroupSession, offsets []stream.Offset) error {
	group := &sarama.ConsumerGroupMetadata{GroupID: k.cfg.Group, GenerationID: sess.GenerationID(), MemberID: sess.MemberID()}
	if id := k.sarama.Consumer.Group.InstanceId; id != "" {
		group.GroupInstanceID = &id
	}
	parts := make([]*sarama.PartitionOffsetMetadata, len(offsets))
	for i, o := range offsets {
		parts[i] = &sarama.PartitionOffsetMetadata{Partition: o.Partition, Offset: o.Next, LeaderEpoch: -1}
	}
	if err := k.cfg.Transaction.AddOffsets(ctx, group, map[string][]*sarama.PartitionOffsetMetadata{k.cfg.Topic: parts}); err != nil {
		return fmt.Errorf("kafka source %s: offsets of group %s into the transaction: %w", k.cfg.Topic, k.cfg.Group, err)
	}
	// The offsets count as committed once the transaction is: sarama
	// sends them to the group (TxnOffsetCommit, with the group's
	// generation) as it commits. A revoked partition let go before that
	// would let the group move to its next generation, and the broker
	// refuse the offsets: the transaction would fail and stop the run.
	// Aborted, they never count: the revoked partition goes at its
	// RevokeTimeout, for its new owner to read again.
	k.cfg.Transaction.OnEnd(func(committed bool) {
		if committed {
			k.committed(offsets)
		}
	})
	return nil
}

// committed records offsets the broker stored.
func (k *Kafka) committed(done []stream.Offset) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, o := range done {
		if p := k.parts[o.Partition]; p != nil {
			p.committed = max(p.committed, o.Next)
		}
	}
	k.commits.fire()
}

// commit sends an OffsetCommit request for offsets in the session's
// generation, retrying what can be retried, and returns the offsets the
// broker stored. sarama's session.Commit reports no error, so a commit that
// failed would look durable; this one does not.
func (k *Kafka) commit(ctx context.Context, client sarama.Client, sess sarama.ConsumerGroupSession, offsets []stream.Offset) ([]stream.Offset, error) {
	wait := kafkaBackoff{min: 20 * time.Millisecond, max: 500 * time.Millisecond}
	// A commit may wait for the group to finish a rebalance, which takes
	// at most the rebalance timeout.
	deadline := time.Now().Add(k.sarama.Consumer.Group.Rebalance.Timeout)
	var done []stream.Offset
	var lastErr error
	for attempt := 1; len(offsets) > 0; attempt++ {
		if attempt > 1 && (time.Now().After(deadline) || !kafkaSleep(ctx, wait.next())) {
			break
		}
		req := sarama.NewOffsetCommitRequest(k.sarama, k.cfg.Group)
		req.ConsumerGroupGeneration = sess.GenerationID()
		req.ConsumerID = sess.MemberID()
		if id := k.sarama.Consumer.Group.InstanceId; id != "" && req.Version >= 7 {
			req.GroupInstanceId = &id
		}
		for _, o := range offsets {
			req.AddBlock(k.cfg.Topic, o.Partition, o.Next, 0, "")
		}
		coordinator, err := k.coordinatorConn(client, &k.coordinator)
		if errors.Is(err, errSourceStopped) {
			// Run ended: no coordinator will be asked again.
			lastErr = err
			break
		}
		if err != nil {
			lastErr = err
			continue
		}
		resp, err := coordinator.CommitOffset(req)
		if err != nil {
			lastErr = err
			k.dropCoordinator(&k.coordinator, coordinator)
			continue
		}
		var retry []stream.Offset
		for _, o := range offsets {
			var kerr error = sarama.ErrIncompleteResponse
			if e, ok := resp.Errors[k.cfg.Topic][o.Partition]; ok {
				kerr = e
			}
			switch {
			case errors.Is(kerr, sarama.ErrNotCoordinatorForConsumer), errors.Is(kerr, sarama.ErrConsumerCoordinatorNotAvailable),
				errors.Is(kerr, sarama.ErrOffsetsLoadInProgress), errors.Is(kerr, sarama.ErrRequestTimedOut),
				errors.Is(kerr, sarama.ErrIncompleteResponse):
				// The next attempt looks the coordinator up again.
				k.dropCoordinator(&k.coordinator, coordinator)
				lastErr = kerr
				retry = append(retry, o)
			case errors.Is(kerr, sarama.ErrNoError):
				done = append(done, o)
			case sess.Context().Err() == nil && (errors.Is(kerr, sarama.ErrRebalanceInProgress) ||
				errors.Is(kerr, sarama.ErrIllegalGeneration) || errors.Is(kerr, sarama.ErrUnknownMemberId)):
				// The group is between generations. A cooperative session
				// goes on in the next one, and sarama learns its number
				// only when the rebalance is over: try again with it.
				lastErr = kerr
				retry = append(retry, o)
			case errors.Is(kerr, sarama.ErrRebalanceInProgress), errors.Is(kerr, sarama.ErrIllegalGeneration),
				errors.Is(kerr, sarama.ErrUnknownMemberId), errors.Is(kerr, sarama.ErrFencedInstancedId):
				// This member left the generation: the partition is, or
				// will be, someone else's, who reads from the last commit.
				k.log.Warn("kafka offset not committed: member no longer in the generation",
					"partition", o.Partition, "offset", o.Next, "generation", req.ConsumerGroupGeneration, "err", kerr)
			default:
				return done, fmt.Errorf("kafka source: commit %s/%d@%d for group %s: %w", k.cfg.Topic, o.Partition, o.Next, k.cfg.Group, kerr)
			}
		}
		offsets = retry
	}
	if len(offsets) > 0 {
		if lastErr == nil {
			lastErr = context.Cause(ctx)
		}
		return done, fmt.Errorf("kafka source: commit %s/%d@%d (and %d more) for group %s: %w",
			k.cfg.Topic, offsets[0].Partition, offsets[0].Next, len(offsets)-1, k.cfg.Group, lastErr)
	}
	return done, nil
}

// kafkaCoordinator is a connection of the source's own to the group
// coordinator.
type kafkaCoordinator struct {
	b *sarama.Broker
	// dial dialed b's connection, which Run's end closes under an offset
	// fetch in flight (see kafkaconf.CutDialer).
	dial *kafkaconf.CutDialer
}

// kafkaCoordinatorSlot holds the source's connection to the coordinator
// for one purpose.
type kafkaCoordinatorSlot struct {
	// open is held while the connection is made: one lookup of the
	// coordinator at a time, without Kafka.mu, which Poll and the claims
	// wait for. The lookup (FindCoordinator) goes to the brokers for as
	// long as they take to answer in a failover.
	open sync.Mutex
	// conn is the connection, under Kafka.mu.
	conn kafkaCoordinator
	// opening dials the connections of the lookup and the connection
	// being made, while open is held, under Kafka.mu: Run's end closes
	// them under the requests (see closeCoordinators).
	opening *kafkaconf.CutDialer
}

// coordinatorConn returns the source's connection of s to the group
// coordinator, opening it if needed.
func (k *Kafka) coordinatorConn(client sarama.Client, s *kafkaCoordinatorSlot) (*sarama.Broker, error) {
	if b, err := k.coordinatorOpened(s); b != nil || err != nil {
		return b, err
	}
	s.open.Lock()
	defer s.open.Unlock()
	// Another request may have made it meanwhile.
	if b, err := k.coordinatorOpened(s); b != nil || err != nil {
		return b, err
	}
	dial := kafkaconf.NewCutDialer(k.sarama)
	var stopped error
	k.mu.Lock()
	if k.client == nil {
		stopped = k.stopped()
	} else {
		s.opening = dial
	}
	k.mu.Unlock()
	if stopped != nil {
		return nil, stopped
	}
	b, err := k.openCoordinator(client, dial)
	k.mu.Lock()
	s.opening = nil
	if k.client == nil {
		stopped = k.stopped()
	}
	closed := dial.Closed()
	if err == nil && stopped == nil && !closed {
		s.conn = kafkaCoordinator{b: b, dial: dial}
	}
	k.mu.Unlock()
	switch {
	case stopped != nil:
		// Run's end closed the connections already, and the lookup's
		// under it, if it failed for that: nobody would close this one.
		dial.Close()
		if err == nil {
			_ = b.Close()
		}
		return nil, stopped
	case err != nil:
		return nil, err
	case closed:
		// Closed under the lookup by a claim that gave up (see
		// committedOffset): the lookup may not have failed for it.
		_ = b.Close()
		return nil, fmt.Errorf("connect to coordinator %s: %w", b.Addr(), net.ErrClosed)
	}
	return b, nil
}

// openCoordinator looks the group coordinator up and opens a connection
// to it, with connections dialed by dial. The lookup goes on connections
// of its own, not on the client's, which sarama would hold, its lock
// taken, across a request that cannot be cancelled, with its retries: the
// client's requests to the same broker, the group's heartbeats among
// them, would wait behind it, and nothing would end it early.
func (k *Kafka) openCoordinator(client sarama.Client, dial *kafkaconf.CutDialer) (*sarama.Broker, error) {
	cfg := *k.conns
	cfg.Net.Proxy.Enable, cfg.Net.Proxy.Dialer = true, dial
	req := &sarama.FindCoordinatorRequest{Version: kafkaconf.FindCoordinatorVersion(k.sarama.Version),
		CoordinatorKey: k.cfg.Group, CoordinatorType: sarama.CoordinatorGroup}
	// The lookup's connections, closed at once, keep their metrics in a
	// registry of their own.
	lookup := cfg
	lookup.MetricRegistry = metrics.NewRegistry()
	// The lookup is tried again as sarama's client tries it again
	// (Metadata.Retry), while the coordinator is not there yet (a
	// failover) or no broker answers: a claim's fetch of the group's
	// committed offset would give up before the failover is over.
	// Closing dial ends the wait.
	retry := k.sarama.Metadata.Retry
	for attempt := 0; ; attempt++ {
		addr, again, err := k.findCoordinator(client, req, &lookup, dial)
		if err != nil {
			if !again || attempt >= retry.Max {
				return nil, fmt.Errorf("find coordinator: %w", err)
			}
			d := retry.Backoff
			if retry.BackoffFunc != nil {
				d = retry.BackoffFunc(attempt, retry.Max)
			}
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-dial.Done():
				t.Stop()
				return nil, fmt.Errorf("find coordinator: %w", err)
			}
			continue
		}
		c := sarama.NewBroker(addr)
		if err := c.Open(&cfg); err != nil {
			return nil, fmt.Errorf("connect to coordinator %s: %w", c.Addr(), err)
		}
		return c, nil
	}
}

// findCoordinator asks the brokers, one after the other until one
// answers, for the address of the group coordinator, with req, on
// connections of cfg dialed by dial. It reports whether an error is one
// sarama's client tries again.
func (k *Kafka) findCoordinator(client sarama.Client, req *sarama.FindCoordinatorRequest, cfg *sarama.Config, dial *kafkaconf.CutDialer) (string, bool, error) {
	// The brokers the client knows, then the seeds.
	var addrs []string
	for _, b := range client.Brokers() {
		addrs = append(addrs, b.Addr())
	}
	for _, a := range k.cfg.Brokers {
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	var errs []error
	for _, addr := range addrs {
		if dial.Closed() {
			break
		}
		b := sarama.NewBroker(addr)
		if err := b.Open(cfg); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		resp, err := b.FindCoordinator(req)
		_ = b.Close()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		case !errors.Is(resp.Err, sarama.ErrNoError):
			// The broker answered: the coordinator is not there yet (a
			// failover), or the group not authorized. The callers try
			// again later too.
			return "", errors.Is(resp.Err, sarama.ErrConsumerCoordinatorNotAvailable) ||
				errors.Is(resp.Err, sarama.ErrGroupAuthorizationFailed), resp.Err
		}
		return resp.Coordinator.Addr(), false, nil
	}
	if dial.Closed() {
		// Closed under the lookup: not tried again.
		return "", false, errors.Join(append(errs, net.ErrClosed)...)
	}
	return "", true, errors.Join(errs...)
}

// errSourceStopped is what requests to the coordinator fail with once
// Run's end closed the source's connections (see Kafka.stopped).
var errSourceStopped = errors.New("source stopped")

// stopped returns errSourceStopped, with what Run ended with, if not nil.
// k.mu is held.
func (k *Kafka) stopped() error {
	if k.ended != nil {
		return fmt.Errorf("%w: %w", errSourceStopped, k.ended)
	}
	return fmt.Errorf("%w: its Run ended", errSourceStopped)
}

// coordinatorOpened returns the connection of s, nil if there is none yet,
// or errSourceStopped once Run's end closed the connections.
func (k *Kafka) coordinatorOpened(s *kafkaCoordinatorSlot) (*sarama.Broker, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s.conn.b != nil {
		return s.conn.b, nil
	}
	if k.client == nil {
		return nil, k.stopped()
	}
	return nil, nil
}

// closeCoordinators forgets the client and closes the source's connections
// to the coordinator, and those of a lookup of it: an offset fetch the
// coordinator holds, or a lookup the brokers hold, ends as its connection
// closes, not with Close, which waits for it. A connection opened after
// this is closed by whoever opened it (see coordinatorConn).
func (k *Kafka) closeCoordinators() {
	k.mu.Lock()
	k.client = nil
	coordinators := []kafkaCoordinator{k.coordinator.conn, k.offsetCoordinator.conn}
	k.coordinator.conn, k.offsetCoordinator.conn = kafkaCoordinator{}, kafkaCoordinator{}
	opening := []*kafkaconf.CutDialer{k.coordinator.opening, k.offsetCoordinator.opening}
	k.mu.Unlock()
	for _, d := range opening {
		if d != nil {
			d.Close()
		}
	}
	for _, c := range coordinators {
		if c.b != nil {
			c.dial.Close()
			_ = c.b.Close()
		}
	}
}

// dropCoordinator closes the connection of s, b, to the coordinator after
// a failure, so that the next request looks the coordinator up again. It
// does not wait for a connection being made (s.open).
func (k *Kafka) dropCoordinator(s *kafkaCoordinatorSlot, b *sarama.Broker) {
	k.mu.Lock()
	drop := s.conn
	if drop.b == b {
		s.conn = kafkaCoordinator{}
	}
	k.mu.Unlock()
	if drop.b == b {
		// Not with k.mu held: Close waits for a request in flight on b,
		// another claim's offset fetch, which the connection's close ends.
		drop.dial.Close()
		_ = b.Close()
	}
}

// Lag implements stream.Lagger: how many records of the partition follow
// the group's committed offset, as of the partition's high watermark when
// this member last fetched it. It does not know the lag of a partition it
// does not own, nor of one with no committed offset yet.
func (k *Kafka) Lag(partition int32) (int64, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.parts[partition]
	if p == nil || p.owner != kafkaOwned && p.owner != kafkaRevoking || p.committed < 0 || p.hwm <= 0 {
		return 0, false
	}
	return max(0, p.hwm-p.committed), true
}

// Reached reports whether Run has reached the brokers since it started,
// and stays true once it has. Until then, the batches a pipeline cuts are
// empty because the source could not read, not because the topic is
// idle: a caller that reports batches can say so instead (Run fails after
// ConnectTimeout). It may be called from any goroutine.
func (k *Kafka) Reached() bool { return k.reached.Load() }

// Owns reports whether a claim of this source holds partition id now: the
// claim hands out its records, or is ending and waits for the pipeline to
// commit them (see RevokeTimeout). A partition between two group sessions
// (an eager rebalance), taken by another member, or that the pipeline must
// drop, is not owned. Unlike Assignment, which the engine calls between
// batches, Owns changes nothing, and it may be called from any goroutine.
//
// An output that speaks for a partition, as a digest exchange publishes
// each partition's partial, can check it as it writes: a batch that
// outlasted its partition's revoke then does not write after the
// partition's new owner.
func (k *Kafka) Owns(id int32) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.parts[id]
	return p != nil && !p.mustDrop && (p.owner == kafkaOwned || p.owner == kafkaRevoking)
}

// Assignment implements stream.Assigner: the partitions this member owns,
// or held before a session ended and may get back with nothing left
// uncommitted. A partition whose records the pipeline must drop is left
// out once, so that the pipeline drops them.
func (k *Kafka) Assignment() []int32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []int32
	for id, p := range k.parts {
		keep := false
		switch {
		case p.mustDrop:
			p.mustDrop = false
		case p.owner == kafkaOwned || p.owner == kafkaRevoking:
			keep = true
		case p.owner == kafkaBetween:
			keep = p.inPipeline && p.committed >= p.next
		}
		p.inPipeline = keep
		if keep {
			out = append(out, id)
		} else if p.owner == kafkaNotOwned {
			delete(k.parts, id)
		}
	}
	slices.Sort(out)
	k.records.fire() // records held back for a drop may go now
	k.commits.fire() // revoked claims need not wait for what was dropped
	return out
}

// kafkaSignal wakes every goroutine waiting for one kind of change. Its
// methods are called with Kafka.mu held.
type kafkaSignal struct{ ch chan struct{} }

// wait returns a channel closed at the next fire.
func (s *kafkaSignal) wait() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// fire wakes the waiters, if any.
func (s *kafkaSignal) fire() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// kafkaHandler is the sarama group handler of a source; its methods run on
// sarama's goroutines.
type kafkaHandler struct {
	k    *Kafka
	stop <-chan struct{} // Run's context is done: no waiting on the pipeline
}

func (h *kafkaHandler) Setup(sess sarama.ConsumerGroupSession) error {
	k := h.k
	claims := sess.Claims()[k.cfg.Topic]
	k.mu.Lock()
	defer k.mu.Unlock()
	k.session = sess
	k.healthy = time.Now()
	for id, p := range k.parts {
		if p.owner == kafkaBetween && !slices.Contains(claims, id) {
			p.owner = kafkaNotOwned
		}
	}
	fetch := "own loops"
	if k.fetch == nil {
		fetch = "sarama's partition consumers"
	}
	k.log.Info("kafka group session started", "generation", sess.GenerationID(), "member", sess.MemberID(), "partitions", claims, "fetch", fetch)
	return nil
}

func (h *kafkaHandler) Cleanup(sess sarama.ConsumerGroupSession) error {
	k := h.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.session == sess {
		k.session = nil
	}
	k.healthy = time.Now()
	k.log.Info("kafka group session ended", "generation", sess.GenerationID())
	return nil
}

// kafkaMaxChunk bounds the records a claim reads before it queues them.
const kafkaMaxChunk = 1024

func (h *kafkaHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	k := h.k
	id := claim.Partition()
	initial := claim.InitialOffset()
	committed := initial
	msgs := claim.Messages()
	var early []*sarama.ConsumerMessage
	if initial < 0 {
		// sarama starts a claim at a sentinel when the group has no
		// committed offset, and also, without a word, when the one it has
		// is out of the partition's range: the records from it up to
		// where the claim starts are skipped. Only the group knows which.
		var ok bool
		if committed, early, ok = k.committedOffset(sess, msgs, id); !ok {
			// A rebalance or Run's end came first: the claim hands out
			// nothing, and must not drop what the pipeline holds for want
			// of the commit. The next generation's claim finds it.
			return nil
		}
	}
	epoch, group, fetch := k.startClaim(id, initial, committed)
	defer h.endClaim(sess, id, epoch)
	if fetch != nil {
		// sarama's partition consumer stops fetching; what it fetched
		// before still comes below. A partition paused stays paused in
		// its later claims, which then fetch nothing at all.
		group.Pause(map[string][]int32{claim.Topic(): {id}})
		fetch.add(id, epoch, initial)
		defer fetch.remove(id, epoch)
	}
	done := sess.Context().Done()
	for {
		c := kafkaChunks.Get().(*kafkaChunk)
		c.partition, c.epoch, c.off = id, epoch, 0
		if len(early) > 0 {
			// What came while the claim fetched the group's commit.
			c.msgs = append(c.msgs, early...)
			early = nil
			c.hwm = claim.HighWaterMarkOffset()
			if !k.push(c, done) {
				return nil
			}
			continue
		}
		select {
		case m, ok := <-msgs:
			if !ok {
				k.recycle(c)
				return nil
			}
			c.msgs = append(c.msgs, m)
		case <-done:
			k.recycle(c)
			return nil
		}
		// Take what else is there without waiting: one queue operation
		// per run of records, not per record.
		open := true
	more:
		for len(c.msgs) < kafkaMaxChunk {
			select {
			case m, ok := <-msgs:
				if !ok {
					open = false
					break more
				}
				c.msgs = append(c.msgs, m)
			default:
				break more
			}
		}
		c.hwm = claim.HighWaterMarkOffset()
		if !k.push(c, done) || !open {
			return nil
		}
	}
}

// kafkaRecord fills r from m.
func kafkaRecord(r *stream.Record[Message], m *sarama.ConsumerMessage) {
	*r = stream.Record[Message]{
		Value:  Message{Key: m.Key, Value: m.Value, Timestamp: m.Timestamp},
		Origin: stream.Origin{Source: m.Topic, Partition: m.Partition, Offset: m.Offset},
	}
	if len(m.Headers) > 0 {
		r.Value.Headers = make([]Header, len(m.Headers))
		for i, h := range m.Headers {
			r.Value.Headers[i] = Header{Key: string(h.Key), Value: h.Value}
		}
	}
}

// startClaim records that a claim of partition id starts at offset
// initial, and returns the claim's epoch, and the group and the fetch.
// committed is the group's committed offset: initial, unless the claim
// starts at a sentinel, when it is the offset fetched from the group, or
// -1 for none or when it could not be fetched.
func (k *Kafka) startClaim(id int32, initial, committed int64) (uint64, sarama.ConsumerGroup, *kafkaFetch) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.parts[id]
	if p == nil {
		p = &kafkaPartition{}
		k.parts[id] = p
	}
	// reset: the group's commit is out of the partition's range, and the
	// claim starts at a sentinel instead.
	reset := initial < 0 && committed >= 0
	kept := false
	switch {
	case !p.inPipeline:
	case reset && p.next == committed:
		// The pipeline's records and state end where the group's commit
		// does, and nobody went further: the records after it that the
		// claim skips are gone for every member. They stay, unless the
		// claim's first record comes before the commit (see push).
		kept = true
	case !reset && p.next == initial:
		// Not when reset: the pipeline got nothing since a start at the
		// same sentinel, with no commit, and the commit out of range is
		// another member's, whose records and state it lacks.
	default:
		// The pipeline's records or state of the partition do not end
		// where the group's commit does: a commit failed, or another
		// member went further. The pipeline must drop them first.
		k.log.Info("kafka partition restarts elsewhere than the pipeline holds; dropping its records and state",
			"partition", id, "pipeline_next", p.next, "committed", committed)
		p.mustDrop = true
	}
	k.epochs++
	p.epoch = k.epochs
	p.owner = kafkaOwned
	p.next = initial
	p.fed = initial
	p.committed = initial
	p.keptTo = -1
	if kept {
		p.next, p.committed, p.keptTo = committed, committed, committed
	}
	p.lostFrom = -1
	if reset {
		p.lostFrom = committed
	}
	return p.epoch, k.group, k.fetch
}

// committedOffset returns the group's committed offset of partition id,
// -1 for none, as the claim of sess that starts at a sentinel fetches it,
// and whether the claim goes on: not when the claim's context (sess's)
// ended, or its messages, msgs, closed (a cooperative rebalance revoked
// it) first. The messages that came meanwhile are returned, to be queued
// first, but for a fetch loop's claim, which starts where its loop finds
// the start and would drop them. When the offset cannot be fetched, it
// logs why and returns -1.
func (k *Kafka) committedOffset(sess sarama.ConsumerGroupSession, msgs <-chan *sarama.ConsumerMessage, id int32) (int64, []*sarama.ConsumerMessage, bool) {
	k.mu.Lock()
	client, keep, group := k.client, k.fetch == nil, k.group
	k.mu.Unlock()
	if !keep {
		// The claim pauses sarama's partition consumer as it starts:
		// pause it now, so that it does not fetch what is dropped.
		group.Pause(map[string][]int32{k.cfg.Topic: {id}})
	}
	// A cooperative rebalance tells a claim it is revoked only by closing
	// its messages, and waits for it up to the rebalance timeout, the
	// partition with no owner meanwhile, before it ends every claim of
	// the member: the claim watches them as it waits. Those kept are
	// bounded by the Buffer, as the queue is: past it, sarama's partition
	// consumer is paused, and the claim takes only what it fetched
	// already, watching for the close behind it, until the claim knows
	// whether it goes on.
	var early []*sarama.ConsumerMessage
	paused := false
	if keep {
		defer func() {
			if paused {
				group.Resume(map[string][]int32{k.cfg.Topic: {id}})
			}
		}()
	}
	await := func(answered <-chan struct{}, slept <-chan time.Time) bool {
		for {
			select {
			case <-answered:
				// An answer that came as the session ended may be picked
				// first: the end wins, whichever came first.
				return sess.Context().Err() == nil
			case <-slept:
				return sess.Context().Err() == nil
			case <-sess.Context().Done():
				return false
			case m, ok := <-msgs:
				if !ok {
					return false
				}
				if keep {
					early = append(early, m)
					if len(early) >= k.cfg.Buffer && !paused {
						group.Pause(map[string][]int32{k.cfg.Topic: {id}})
						paused = true
					}
				}
			}
		}
	}
	// A coordinator that moved, or that still loads the group's offsets
	// after a failover, answers once the failover is over: the fetch is
	// tried again for as long as a commit is (the rebalance timeout), or
	// until the claim's session ends. Without the commit, the pipeline
	// would drop what it holds of the partition. Other failures are tried
	// again a few times only.
	wait := kafkaBackoff{min: 20 * time.Millisecond, max: 500 * time.Millisecond}
	deadline := time.Now().Add(k.sarama.Consumer.Group.Rebalance.Timeout)
	var err error
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			t := time.NewTimer(wait.next())
			slept := await(nil, t.C)
			t.Stop()
			if !slept {
				return -1, nil, false
			}
		}
		// sarama's request cannot be cancelled: a coordinator that does
		// not answer holds it up to Net.ReadTimeout, and brokers that do
		// not answer the lookup of the coordinator before it, as long.
		// The claim stops waiting when its context ends, so that the
		// rebalance that ended it does not wait for this member (and go
		// on without it past the rebalance timeout), and closes the
		// connection under the request; Run waits for the request as it
		// ends, after closing the connections under it too.
		var a struct {
			off int64
			err error
		}
		answered := make(chan struct{})
		k.offsetFetches.Go(func() {
			a.off, a.err = k.fetchCommitted(client, id)
			close(answered)
		})
		if !await(answered, nil) {
			// sarama holds the connection's lock across the request,
			// which would hold up the next claims' fetches behind it, as
			// a lookup of the coordinator would (with the slot's lock):
			// the connection is closed under it.
			k.mu.Lock()
			b, opening := k.offsetCoordinator.conn.b, k.offsetCoordinator.opening
			k.mu.Unlock()
			if opening != nil {
				opening.Close()
			}
			if b != nil {
				k.dropCoordinator(&k.offsetCoordinator, b)
			}
			return -1, nil, false
		}
		if a.err == nil {
			return a.off, early, true
		}
		err = a.err
		if errors.Is(err, errSourceStopped) || time.Now().After(deadline) ||
			attempt >= 5 && !kafkaCoordinatorRetriable(err) {
			break
		}
	}
	k.log.Warn("kafka committed offset not fetched: records skipped before the claim's start, if any, go unlogged",
		"partition", id, "err", err)
	return -1, early, true
}

// kafkaCoordinatorRetriable reports whether err, a request to the group
// coordinator that failed, may go through once a failover of the
// coordinator is over: the coordinator moved, is not there yet, or still
// loads the group's offsets, the connection failed, or a transaction's
// offsets are not stable yet.
func kafkaCoordinatorRetriable(err error) bool {
	var kerr sarama.KError
	if !errors.As(err, &kerr) {
		return !errors.Is(err, errSourceStopped)
	}
	switch kerr {
	case sarama.ErrNotCoordinatorForConsumer, sarama.ErrConsumerCoordinatorNotAvailable, sarama.ErrOffsetsLoadInProgress,
		sarama.ErrRequestTimedOut, sarama.ErrNetworkException, sarama.ErrIncompleteResponse, sarama.ErrUnstableOffsetCommit:
		return true
	}
	return false
}

// fetchCommitted asks the group coordinator for the group's committed
// offset of partition id, -1 for none. Read committed, the offset of a
// transaction not yet committed counts only once it is, as for sarama
// (brokers from 2.5 on).
func (k *Kafka) fetchCommitted(client sarama.Client, id int32) (int64, error) {
	coordinator, err := k.coordinatorConn(client, &k.offsetCoordinator)
	if err != nil {
		return 0, err
	}
	req := sarama.NewOffsetFetchRequest(k.sarama.Version, k.cfg.Group, map[string][]int32{k.cfg.Topic: {id}})
	req.RequireStable = k.sarama.Consumer.IsolationLevel == sarama.ReadCommitted && req.Version >= 7
	resp, err := coordinator.FetchOffset(req)
	if err != nil && req.RequireStable && errors.As(err, new(sarama.PacketEncodingError)) {
		// A broker before 2.5 cannot be asked for stable offsets: the
		// request, brought down to its version, does not encode. Ask as
		// it can be asked, as sarama's consumer and the Java one do.
		req.RequireStable = false
		resp, err = coordinator.FetchOffset(req)
	}
	if err != nil {
		k.dropCoordinator(&k.offsetCoordinator, coordinator)
		return 0, err
	}
	kerr := sarama.ErrIncompleteResponse
	b := resp.GetBlock(k.cfg.Topic, id)
	switch {
	case b != nil:
		kerr = b.Err
	case !errors.Is(resp.Err, sarama.ErrNoError):
		kerr = resp.Err
	}
	switch {
	case errors.Is(kerr, sarama.ErrNoError):
		return b.Offset, nil
	case errors.Is(kerr, sarama.ErrNotCoordinatorForConsumer), errors.Is(kerr, sarama.ErrConsumerCoordinatorNotAvailable):
		// The next fetch looks the coordinator up again.
		k.dropCoordinator(&k.offsetCoordinator, coordinator)
	}
	return 0, fmt.Errorf("fetch offset of %s/%d for group %s: %w", k.cfg.Topic, id, k.cfg.Group, kerr)
}

// fedFrom returns the offset after the records of partition id the claim
// of epoch queued, and whether that claim still owns it.
func (k *Kafka) fedFrom(id int32, epoch uint64) (int64, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.parts[id]
	if p == nil || p.epoch != epoch || p.owner != kafkaOwned {
		return 0, false
	}
	return p.fed, true
}

// refeed makes off where the claim of epoch of partition id queues from:
// its fetch position from fell out of the partition's range and was reset
// to off. Reset forward (records deleted before they were read), the
// records from off on that the queue already holds are the same ones, as
// sarama's partition consumer may have fetched them before its pause:
// they are not queued again. Reset back (the log cut short, or the topic
// made again), the records from off are new to the queue, even before
// what it holds. The records skipped forward are logged.
func (k *Kafka) refeed(id int32, epoch uint64, from, off int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.parts[id]
	if p == nil || p.epoch != epoch {
		return
	}
	if off < from {
		p.fed = off
		return
	}
	if first := max(p.fed, from); first < off {
		k.logSkipped(id, first, off-1)
		if first == p.loggedTo {
			// Nothing queued since the gap logged at the claim's start:
			// a claim that starts again from the same commit does not
			// log this one again either.
			p.loggedTo = off
		}
	}
	p.fed = max(p.fed, off)
}

// begin returns where the claim of epoch of partition id, which started
// at a sentinel offset that its fetch loop resolved to off, queues from:
// off, or after the records it queued already, if any.
func (k *Kafka) begin(id int32, epoch uint64, off int64) int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.parts[id]
	if p == nil || p.epoch != epoch {
		return off
	}
	if p.fed < 0 {
		p.fed = off
		k.logLost(id, p, off)
	}
	return p.fed
}

// logLost logs the records of partition p (id) that its claim skipped as
// it started, from the group's committed offset out of range up to start,
// where the claim reads from, unless they were logged already. k.mu is
// held.
func (k *Kafka) logLost(id int32, p *kafkaPartition, start int64) {
	if p.lostFrom < 0 {
		return
	}
	first := p.lostFrom
	if first == p.loggedFrom {
		first = max(first, p.loggedTo)
	}
	if first < start {
		k.logSkipped(id, first, start-1)
		p.loggedFrom, p.loggedTo = p.lostFrom, start
	}
	p.lostFrom = -1
}

// logSkipped warns that the records first..last of partition id were
// skipped, out of range: the one warning of a fetch reset forward and of a
// claim's start past the group's commit, which the docs name.
func (k *Kafka) logSkipped(id int32, first, last int64) {
	k.log.Warn("kafka records skipped: the partition's position was out of range",
		"partition", id, "first_skipped", first, "last_skipped", last)
}

// noteHWM records the high watermark of partition id fetched by the claim
// of epoch, when no record came with it.
func (k *Kafka) noteHWM(id int32, epoch uint64, hwm int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p := k.parts[id]; p != nil && p.epoch == epoch {
		p.hwm = max(p.hwm, hwm)
	}
}

// waitRoom waits until the queue has room, and reports whether it does
// before done is closed.
func (k *Kafka) waitRoom(done <-chan struct{}) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for k.queued >= k.cfg.Buffer {
		if !k.waitRoomChange(done) {
			return false
		}
	}
	return true
}

// waitRoomChange waits, with k.mu held and released meanwhile, until the
// room in the queue changes, and reports whether it did before done was
// closed.
func (k *Kafka) waitRoomChange(done <-chan struct{}) bool {
	wake := k.room.wait()
	k.mu.Unlock()
	defer k.mu.Lock()
	select {
	case <-wake:
		return true
	case <-done:
		return false
	}
}

// endClaim stops handing out the records of a claim that ends and waits up
// to RevokeTimeout for the pipeline to commit those it was handed.
func (h *kafkaHandler) endClaim(sess sarama.ConsumerGroupSession, id int32, epoch uint64) {
	k := h.k
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.parts[id]
	if p == nil || p.epoch != epoch {
		return
	}
	p.owner = kafkaRevoking
	k.drop(id)
	if p.inPipeline && p.committed < p.next {
		// Have the batch cut now, so that its commit comes soon.
		k.cut = true
		k.records.fire()
	}
	timeout := time.NewTimer(k.cfg.RevokeTimeout)
	defer timeout.Stop()
	timedOut := false
	for waiting := true; waiting && p.inPipeline && !p.mustDrop && p.committed < p.next; {
		wake := k.commits.wait()
		k.mu.Unlock()
		select {
		case <-wake:
		case <-h.stop:
			waiting = false
		case <-timeout.C:
			waiting, timedOut = false, true
		}
		k.mu.Lock()
	}
	if timedOut && p.committed < p.next {
		k.log.Warn("kafka partition revoked before the pipeline committed it; its new owner reads the rest again",
			"partition", id, "committed", p.committed, "handed_out", p.next, "revoke_timeout", k.cfg.RevokeTimeout)
	}
	if sess.Context().Err() != nil {
		p.owner = kafkaBetween
	} else {
		p.owner = kafkaNotOwned // a cooperative rebalance took it
	}
}

// drop removes the queued records of partition id. k.mu is held.
func (k *Kafka) drop(id int32) {
	q := k.queue[k.head:]
	w := 0
	for _, c := range q {
		if c.partition == id {
			k.queued -= len(c.msgs) - c.off
			k.recycle(c)
			continue
		}
		q[w] = c
		w++
	}
	clear(q[w:])
	k.queue = k.queue[:k.head+w]
	k.room.fire() // room, and the claim of id, if it waits, must stop
}

// push queues the records of c, waiting while the buffer is full. It
// returns false when the claim must stop: it ended, or done was closed.
func (k *Kafka) push(c *kafkaChunk, done <-chan struct{}) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for {
		p := k.parts[c.partition]
		if p == nil || p.epoch != c.epoch || p.owner != kafkaOwned {
			k.recycle(c)
			return false
		}
		if k.queued < k.cfg.Buffer {
			break
		}
		if !k.waitRoomChange(done) {
			k.recycle(c)
			return false
		}
	}
	// The same records may come twice at a claim's start: from sarama's
	// partition consumer, before its pause, and from the fetch loop.
	p := k.parts[c.partition]
	if p.fed < 0 && k.fetch != nil {
		// The claim starts at the oldest or newest record, which the
		// fetch loop has not found yet. sarama's consumer may have found
		// another (an older newest, or the high watermark where read
		// committed starts at the last stable offset): the claim starts
		// where the loop finds it, which then fetches these records
		// again if they follow it, so that none is skipped between.
		k.recycle(c)
		return true
	}
	for c.off < len(c.msgs) && c.msgs[c.off].Offset < p.fed {
		c.off++
	}
	if c.off == len(c.msgs) {
		k.recycle(c)
		return true
	}
	// sarama's partition consumer (SaramaFetch) resolved the claim's
	// sentinel start without saying where: its first record tells.
	first := c.msgs[c.off].Offset
	k.logLost(c.partition, p, first)
	if p.keptTo >= 0 && first < p.keptTo {
		if p.inPipeline && !p.mustDrop {
			k.log.Info("kafka partition restarts before the pipeline's commit; dropping its records and state",
				"partition", c.partition, "pipeline_next", p.keptTo, "first", first)
			p.mustDrop = true
		}
		// The commits of the records from first on come below the
		// group's, which is not theirs: a revoke waits for them, as for
		// a claim that starts where the pipeline holds nothing.
		p.committed = -1
	}
	p.keptTo = -1
	p.fed = c.msgs[len(c.msgs)-1].Offset + 1
	if len(k.queue) == cap(k.queue) && k.head > 0 {
		n := copy(k.queue, k.queue[k.head:])
		clear(k.queue[n:])
		k.queue, k.head = k.queue[:n], 0
	}
	k.queue = append(k.queue, c)
	k.queued += len(c.msgs) - c.off
	p.hwm = max(p.hwm, c.hwm)
	k.records.fire()
	return true
}

// backoff doubles a wait from min to max.
type kafkaBackoff struct{ min, max, cur time.Duration }

func (b *kafkaBackoff) next() time.Duration {
	b.cur = min(max(2*b.cur, b.min), b.max)
	return b.cur
}

func (b *kafkaBackoff) reset() { b.cur = 0 }

// sleep waits for d and reports whether ctx is still alive.
func kafkaSleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
