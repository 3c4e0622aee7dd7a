package changelog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/sink/txn"
	"github.com/sluicehq/sluice/stream"
)

// Config configures a Kafka changelog. Brokers and Topic are required.
type Config struct {
	// Brokers are the "host:port" addresses to bootstrap from.
	Brokers []string
	// Topic is the changelog topic, such as "<group>-state-changelog". It
	// holds the state of one pipeline: two pipelines must not share it.
	Topic string
	// Partitions is how many partitions the first Checkpoint creates the
	// topic with when it does not exist. The state of partition p and the
	// offsets of input partition p are written to partition p, so the
	// topic needs as many partitions as the input topic has, and as the
	// pipeline's Parallelism for a shuffled pipeline. 0: the topic must
	// exist.
	Partitions int32
	// ReplicationFactor of a topic the store creates; 0 takes the
	// brokers' default.
	ReplicationFactor int16
	// TopicConfig adds configs to a topic the store creates, such as
	// min.compaction.lag.ms (see the package doc). cleanup.policy is
	// always compact; segment.ms is 10 minutes and min.compaction.lag.ms
	// an hour unless set here.
	TopicConfig map[string]string
	// ConnectTimeout bounds how long Restore and Checkpoint may wait to
	// reach the brokers when they make the store's client (the first
	// call, or the next after one that could not): the call then fails,
	// as it does once its ctx is done. Brokers that take connections and
	// never answer (a hung broker, another service on the port) would
	// otherwise hold it for minutes, through sarama's reads and retries.
	// A proxy dialer of the Sarama config (Net.Proxy.Dialer) without a
	// DialContext method cannot be cut off: a dial of it that hangs holds
	// the call, even past its ctx, until the dialer gives up. Default
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// RestoreTimeout is how long Restore retries a partition that it
	// cannot read further (a broker down, a leader moving) before it fails
	// (default 1 minute). The whole Restore is bounded by its context.
	RestoreTimeout time.Duration
	// Logger receives restore progress, repairs and warnings. Nil
	// discards them.
	Logger *slog.Logger
	// Sarama is the client configuration to start from: TLS, SASL, the
	// Kafka version (0.11 or later), fetch sizes, retries, producer
	// interceptors (run once on every record written). The store
	// copies it and sets what it relies on: manual partitioning and no
	// automatic topic creation (a topic created by the brokers would not
	// be compacted). Restore reads with fetch requests of
	// Consumer.Fetch.Default bytes and Consumer.Fetch.MaxBytes. Nil starts
	// from sarama.NewConfig() with acknowledgement by all in-sync
	// replicas, an idempotent producer and retries for about half a
	// minute, so that a broker restart does not fail a checkpoint.
	Sarama *sarama.Config
	// Transaction, when set, writes every checkpoint in the open
	// transaction of this producer, with the batch's output and input
	// offsets (exactly once: see the package doc), and Restore reads the
	// topic after the producer has fenced off the process it replaces. The store leaves the Transaction open on Close, for its
	// owner to close.
	Transaction *txn.Producer
}

// Kafka is a stream.Store on a compacted Kafka topic, one record per
// changed key (see the package doc).
//
// The client is created by the first Restore or Checkpoint, so that
// NewKafka starts no goroutine and does not need the brokers; Close stops
// it. Restore, Checkpoint and Close are safe for concurrent use and are
// serialized.
type Kafka struct {
	cfg    Config
	sarama *sarama.Config
	log    *slog.Logger

	mu           sync.Mutex
	closed       bool
	client       sarama.Client
	producer     *kafkaconf.BatchProducer
	admin        sarama.ClusterAdmin
	fetchVersion int16
	topicParts   int32 // partitions of the topic when last checked; 0 until it is known to exist
	checked      bool  // the topic's cleanup.policy was checked

	seq        uint64          // highest marker sequence read or written
	all        bool            // Restore(nil) read every partition: any may be written
	restored   map[int32]bool  // partitions restored (and repaired) by this store
	lastMarker map[int32]int64 // offset of each partition's last valid marker
	offsets    []stream.Offset // input offsets the state reflects, carried by every marker
}

var _ stream.Store = (*Kafka)(nil)

// ErrClosed is returned by Restore and Checkpoint after Close.
var ErrClosed = errors.New("changelog: closed")

// ErrNotRestored is returned (wrapped) by Checkpoint when it would write
// to a partition that this store has not restored, or not since one of
// its checkpoints failed: the partition may end with an unfinished
// checkpoint that a marker would make look finished.
var ErrNotRestored = errors.New("changelog: partition not restored by this store")

// DefaultConnectTimeout is the default of Config.ConnectTimeout.
const DefaultConnectTimeout = 30 * time.Second

// NewKafka returns a store on cfg.Topic. It validates cfg and connects to
// nothing.
func NewKafka(cfg Config) (*Kafka, error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("changelog: no brokers")
	case cfg.Topic == "":
		return nil, errors.New("changelog: no topic")
	case cfg.Partitions < 0:
		return nil, fmt.Errorf("changelog %s: %d partitions", cfg.Topic, cfg.Partitions)
	case cfg.ReplicationFactor < 0:
		return nil, fmt.Errorf("changelog %s: replication factor %d", cfg.Topic, cfg.ReplicationFactor)
	case cfg.RestoreTimeout < 0:
		return nil, fmt.Errorf("changelog %s: restore timeout %v", cfg.Topic, cfg.RestoreTimeout)
	case cfg.ConnectTimeout < 0:
		return nil, fmt.Errorf("changelog %s: connect timeout %v", cfg.Topic, cfg.ConnectTimeout)
	}
	if p, ok := cfg.TopicConfig["cleanup.policy"]; ok && p != "compact" {
		return nil, fmt.Errorf("changelog %s: TopicConfig sets cleanup.policy %q; a changelog must be compacted", cfg.Topic, p)
	}
	cfg.Brokers = slices.Clone(cfg.Brokers)
	cfg.TopicConfig = maps.Clone(cfg.TopicConfig)
	if cfg.RestoreTimeout == 0 {
		cfg.RestoreTimeout = time.Minute
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	sc := kafkaconf.Producer(cfg.Sarama)
	if cfg.Sarama == nil {
		sc.Producer.Retry.Max = 12
		sc.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration {
			return min(100*time.Millisecond<<retries, 5*time.Second)
		}
		sc.Consumer.Fetch.Default = 8 << 20 // per fetch of a restore
	}
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	sc.Metadata.AllowAutoTopicCreation = false
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("changelog %s: sarama config: %w", cfg.Topic, err)
	}
	if err := kafkaconf.RecordBatches(sc.Version); err != nil {
		return nil, fmt.Errorf("changelog %s: %w", cfg.Topic, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Kafka{
		cfg: cfg, sarama: sc, log: log.With("topic", cfg.Topic), fetchVersion: kafkaconf.FetchVersion(sc.Version),
		restored: map[int32]bool{}, lastMarker: map[int32]int64{},
	}, nil
}

// Topic returns the changelog topic.
func (k *Kafka) Topic() string { return k.cfg.Topic }

// Close stops the client. It is safe to call more than once; Restore and
// Checkpoint fail after it.
func (k *Kafka) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	var client io.Closer = k.admin // closes the client too
	if k.admin == nil {
		client = k.client
	}
	err := kafkaconf.CloseAll("changelog "+k.cfg.Topic, client)
	k.producer, k.admin, k.client = nil, nil, nil
	return err
}

// connect creates the client, first reaching the brokers within
// ConnectTimeout, or until ctx is done (kafkaconf.Reach).
func (k *Kafka) connect(ctx context.Context) error {
	if k.closed {
		return fmt.Errorf("changelog %s: %w", k.cfg.Topic, ErrClosed)
	}
	if k.client != nil {
		return nil
	}
	start := time.Now()
	err := kafkaconf.Reach(ctx, k.cfg.Brokers, k.sarama, k.cfg.ConnectTimeout)
	switch {
	case context.Cause(ctx) != nil:
		return fmt.Errorf("changelog %s: connect to %v: %w", k.cfg.Topic, k.cfg.Brokers, context.Cause(ctx))
	case err != nil:
		return fmt.Errorf("changelog %s: brokers %v unreachable for %v: %w",
			k.cfg.Topic, k.cfg.Brokers, time.Since(start).Round(time.Millisecond), err)
	}
	c, err := sarama.NewClient(k.cfg.Brokers, k.sarama)
	if err != nil {
		return fmt.Errorf("changelog %s: connect to %v: %w", k.cfg.Topic, k.cfg.Brokers, err)
	}
	k.client = c
	return nil
}

func (k *Kafka) getProducer() (*kafkaconf.BatchProducer, error) {
	if k.producer == nil {
		p, err := kafkaconf.NewBatchProducer(k.client, k.cfg.Topic)
		if err != nil {
			return nil, fmt.Errorf("changelog %s: producer: %w", k.cfg.Topic, err)
		}
		k.producer = p
	}
	return k.producer, nil
}

// partitionCount returns how many partitions the topic has, 0 when it
// does not exist. It asks a broker directly: the client would retry a
// topic it does not find for a second or so.
func (k *Kafka) partitionCount() (int32, error) {
	b := k.client.LeastLoadedBroker()
	if b == nil {
		return 0, fmt.Errorf("changelog %s: metadata: %w", k.cfg.Topic, sarama.ErrClosedClient)
	}
	req := sarama.NewMetadataRequest(k.sarama.Version, []string{k.cfg.Topic})
	req.AllowAutoTopicCreation = false
	resp, err := b.GetMetadata(req)
	if err != nil {
		return 0, fmt.Errorf("changelog %s: metadata from broker %s: %w", k.cfg.Topic, b.Addr(), err)
	}
	for _, t := range resp.Topics {
		if t.Name != k.cfg.Topic {
			continue
		}
		switch {
		case errors.Is(t.Err, sarama.ErrUnknownTopicOrPartition):
			return 0, nil
		case !errors.Is(t.Err, sarama.ErrNoError):
			return 0, fmt.Errorf("changelog %s: metadata: %w", k.cfg.Topic, t.Err)
		}
		// The client's own metadata must know the partitions' leaders.
		if err := k.client.RefreshMetadata(k.cfg.Topic); err != nil {
			return 0, fmt.Errorf("changelog %s: metadata: %w", k.cfg.Topic, err)
		}
		return int32(len(t.Partitions)), nil
	}
	return 0, nil
}

func (k *Kafka) getAdmin() (sarama.ClusterAdmin, error) {
	if k.admin == nil {
		a, err := sarama.NewClusterAdminFromClient(k.client)
		if err != nil {
			return nil, fmt.Errorf("changelog %s: admin: %w", k.cfg.Topic, err)
		}
		k.admin = a
	}
	return k.admin, nil
}

// ensureTopic makes sure the topic exists, is compacted and has at least
// need partitions, creating it if it is missing.
func (k *Kafka) ensureTopic(ctx context.Context, need int32) error {
	if k.topicParts >= need && k.checked {
		return nil
	}
	n, err := k.partitionCount()
	if err != nil {
		return err
	}
	if n == 0 {
		created, parts, err := k.createTopic(ctx)
		if err != nil {
			return err
		}
		// A topic another process made first, as this one tried to, is
		// checked as any topic found: it may not be compacted, nor have
		// Config.Partitions partitions.
		n, k.checked = parts, created
	}
	if !k.checked {
		if err := k.checkPolicy(); err != nil {
			return err
		}
		k.checked = true
	}
	k.topicParts = n
	if n < need {
		return fmt.Errorf("changelog: topic %s has %d partitions; partition %d is needed for the state and input offsets of partition %d: add partitions to the topic, or use another one", k.cfg.Topic, n, need-1, need-1)
	}
	return nil
}

// topicConfig is what a topic the store creates has besides compaction,
// unless Config.TopicConfig says otherwise: its segments roll every 10
// minutes, so that compaction keeps up, and no record is compacted before
// it is an hour old, so that a restore within the hour repairs an
// unfinished checkpoint before the cleaner can drop what it replaced (see
// Topic and Repair in the package doc).
var topicConfig = map[string]string{"segment.ms": "600000", "min.compaction.lag.ms": "3600000"}

// createTopic creates the topic, compacted, with Config.Partitions
// partitions, and waits until the brokers' metadata has it. It reports
// whether it created it (false: another process did first), and the
// partitions the topic has.
func (k *Kafka) createTopic(ctx context.Context) (bool, int32, error) {
	if k.cfg.Partitions == 0 {
		return false, 0, fmt.Errorf("changelog: topic %s does not exist: create it (compacted), or set Config.Partitions", k.cfg.Topic)
	}
	admin, err := k.getAdmin()
	if err != nil {
		return false, 0, err
	}
	configs := maps.Clone(topicConfig)
	maps.Copy(configs, k.cfg.TopicConfig)
	created, err := kafkaconf.CreateCompacted(admin, k.cfg.Topic, k.cfg.Partitions, k.cfg.ReplicationFactor, configs)
	if err != nil {
		return false, 0, fmt.Errorf("changelog: create topic %s: %w", k.cfg.Topic, err)
	}
	if created {
		k.log.Info("changelog topic created", "partitions", k.cfg.Partitions)
	} else {
		k.log.Info("changelog topic created by another process meanwhile")
	}
	var parts int32
	err = kafkaconf.Await(ctx, func() error {
		n, err := k.partitionCount()
		if err == nil && n == 0 {
			err = sarama.ErrUnknownTopicOrPartition
		}
		parts = n
		return err
	})
	if err != nil {
		return false, 0, fmt.Errorf("changelog: wait for topic %s in the brokers' metadata: %w", k.cfg.Topic, err)
	}
	return created, parts, nil
}

// checkPolicy fails when the topic is not compacted: its records would
// expire, and the state with them.
func (k *Kafka) checkPolicy() error {
	admin, err := k.getAdmin()
	if err != nil {
		return err
	}
	policies, value, err := kafkaconf.CleanupPolicy(admin, k.cfg.Topic)
	if err != nil {
		k.log.Warn("changelog: cannot read the topic's cleanup.policy", "err", err)
		return nil
	}
	if policies != nil && !slices.Contains(policies, "compact") {
		return fmt.Errorf("changelog: topic %s has cleanup.policy=%s: its records would expire, and the state with them; set cleanup.policy=compact", k.cfg.Topic, value)
	}
	if slices.Contains(policies, "delete") {
		k.log.Warn("changelog topic also has cleanup.policy delete: state older than its retention will be lost", "policy", value)
	}
	return nil
}

// writable reports whether this store may write to partition p.
func (k *Kafka) writable(p int32) bool { return k.all || k.restored[p] }

// forget makes every partition unwritable until it is restored again,
// after a write that may have left an unfinished checkpoint.
func (k *Kafka) forget() {
	k.all = false
	clear(k.restored)
}

// Checkpoint implements stream.Store: it writes every entry of c to the
// partition of its state partition (a delete as a tombstone), waits until
// all are acknowledged, then writes a marker to each partition that got
// entries or whose input offsets c holds, and waits for those. Only the
// markers make the entries count: a crash before them leaves the previous
// checkpoint (see the package doc).
//
// Checkpoint blocks until every record it sent is acknowledged or has
// failed, even when ctx is done, so that none of them can land after a
// later Restore's repair; sarama's retry settings bound the wait. After a
// failure, every partition must be restored again before the store
// writes to it (ErrNotRestored).
func (k *Kafka) Checkpoint(ctx context.Context, c *stream.Changes) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("changelog %s: %w", k.cfg.Topic, ErrClosed)
	}
	if len(c.Entries) == 0 && len(c.Offsets) == 0 {
		return nil
	}
	var parts []int32
	for _, e := range c.Entries {
		if e.Partition < 0 {
			return fmt.Errorf("changelog %s: entry of %s in partition %d", k.cfg.Topic, e.Op, e.Partition)
		}
		parts = append(parts, e.Partition)
	}
	for _, o := range c.Offsets {
		if o.Partition < 0 || o.Next < 0 {
			return fmt.Errorf("changelog %s: input offset %d of %s/%d", k.cfg.Topic, o.Next, o.Source, o.Partition)
		}
		parts = append(parts, o.Partition)
	}
	slices.Sort(parts)
	parts = slices.Compact(parts)
	for _, p := range parts {
		if !k.writable(p) {
			return fmt.Errorf("changelog: checkpoint of batch %d to %s/%d: %w: restore it first", c.Batch.ID, k.cfg.Topic, p, ErrNotRestored)
		}
	}
	if err := k.connect(ctx); err != nil {
		return err
	}
	if err := k.ensureTopic(ctx, parts[len(parts)-1]+1); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("changelog: checkpoint of batch %d: %w", c.Batch.ID, context.Cause(ctx))
	}

	// A key written twice keeps its last write, so that the order of the
	// records within a partition does not matter. A checkpoint holds up
	// to a record per key in state: their bytes share one buffer, and
	// their messages one array, instead of three allocations a record.
	size := 0
	for i := range c.Entries {
		e := &c.Entries[i]
		size += 2 + binary.MaxVarintLen64 + len(e.Op) + len(e.Key) + 1 + len(e.Value)
	}
	buf := make([]byte, 0, size)
	slab := make([]sarama.ProducerMessage, 0, len(c.Entries))
	msgs := make([]*sarama.ProducerMessage, 0, len(c.Entries))
	seen := make(map[string]struct{}, len(c.Entries))
	var id []byte
	for i := len(c.Entries) - 1; i >= 0; i-- {
		e := &c.Entries[i]
		start := len(buf)
		buf = appendEntryKey(buf, e.Op, e.Key)
		key := buf[start:len(buf):len(buf)]
		id = append(binary.LittleEndian.AppendUint32(id[:0], uint32(e.Partition)), key...)
		if _, dup := seen[string(id)]; dup {
			buf = buf[:start]
			continue
		}
		seen[string(id)] = struct{}{}
		slab = append(slab, sarama.ProducerMessage{Topic: k.cfg.Topic, Partition: e.Partition, Key: sarama.ByteEncoder(key)})
		m := &slab[len(slab)-1]
		if !e.Deleted {
			start = len(buf)
			buf = appendEntryValue(buf, e.Value)
			m.Value = sarama.ByteEncoder(buf[start:len(buf):len(buf)])
		}
		msgs = append(msgs, m)
	}
	if tx := k.cfg.Transaction; tx != nil {
		// What follows holds only if the transaction commits.
		tx.OnEnd(func(committed bool) {
			if !committed {
				k.aborted()
			}
		})
	}
	if err := k.write(ctx, msgs); err != nil {
		k.forget()
		return fmt.Errorf("changelog: checkpoint of batch %d: %w", c.Batch.ID, err)
	}
	if err := ctx.Err(); err != nil {
		k.forget() // the entries are an unfinished checkpoint now
		return fmt.Errorf("changelog: checkpoint of batch %d: %w", c.Batch.ID, context.Cause(ctx))
	}

	seq := k.seq + 1
	offsets := mergeOffsets(slices.Clone(k.offsets), c.Offsets)
	markers := make([]*sarama.ProducerMessage, len(parts))
	for i, p := range parts {
		m := &marker{seq: seq, batch: c.Batch.ID, prev: k.prevMarker(p), parts: parts, offsets: offsets}
		markers[i] = &sarama.ProducerMessage{Topic: k.cfg.Topic, Partition: p, Key: sarama.ByteEncoder(markerKey), Value: sarama.ByteEncoder(appendMarker(nil, m))}
	}
	k.seq = seq
	if err := k.write(ctx, markers); err != nil {
		k.forget()
		return fmt.Errorf("changelog: checkpoint of batch %d: markers: %w", c.Batch.ID, err)
	}
	for _, m := range markers {
		k.lastMarker[m.Partition] = m.Offset
	}
	k.offsets = offsets
	return nil
}

// prevMarker returns the offset of partition p's last valid marker, or -1.
func (k *Kafka) prevMarker(p int32) int64 {
	if off, ok := k.lastMarker[p]; ok {
		return off
	}
	return -1
}

// aborted forgets what a checkpoint of an aborted transaction wrote: its
// markers are gone, and its offsets were not committed.
func (k *Kafka) aborted() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.forget()
	k.offsets = nil
}

// write writes msgs in the open transaction, if the store has one, or
// else with the store's own producer.
func (k *Kafka) write(ctx context.Context, msgs []*sarama.ProducerMessage) error {
	if tx := k.cfg.Transaction; tx != nil {
		return tx.SendToPartitions(ctx, msgs)
	}
	return k.send(msgs)
}

// send produces msgs and returns when every one is acknowledged or has
// failed.
func (k *Kafka) send(msgs []*sarama.ProducerMessage) error {
	if len(msgs) == 0 {
		return nil
	}
	p, err := k.getProducer()
	if err != nil {
		return err
	}
	kafkaconf.Intercept(k.sarama, msgs)
	errs := p.Send(msgs) // it starts a new idempotent producer after a failure
	if len(errs) == 0 {
		return nil
	}
	e := errs[0]
	return fmt.Errorf("%d of %d records to %s not written; first to partition %d: %w", len(errs), len(msgs), k.cfg.Topic, e.Msg.Partition, e.Err)
}

// mergeOffsets adds offsets to acc, keeping the highest per partition.
func mergeOffsets(acc, offsets []stream.Offset) []stream.Offset {
	for _, o := range offsets {
		i := slices.IndexFunc(acc, func(x stream.Offset) bool { return x.Source == o.Source && x.Partition == o.Partition })
		if i < 0 {
			acc = append(acc, o)
			continue
		}
		acc[i].Next = max(acc[i].Next, o.Next)
	}
	return acc
}
