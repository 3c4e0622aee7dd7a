// Package exchange shares a small value per input partition between the
// processes of a consumer group, through a compacted Kafka topic: the
// reduce-and-broadcast step of a pipeline that runs as several processes.
//
// Each process publishes, every batch, the value of each input partition it
// owns (in the popular-users pipeline, the partition's encoded partial
// sketch), keyed by the partition. Every process reads the whole topic and
// keeps the latest value of every partition, so that each can merge the
// partials of the partitions it does not own with its own, and find the same
// global answer. A partition whose owner died keeps its last value until its
// new owner publishes, which replaces it.
//
// # Consistency
//
// Latest returns, for each partition, the value read last, leaving out
// those of an earlier owner (see Owners); Sync first waits until
// everything published before the call has been read. A process that
// calls Sync before Latest in a batch sees, for every partition, a value at
// least as recent as the last one published before that batch's Sync: the
// partials of the others' batches that finished before it, never a value
// older than one it has seen. Two processes' batches are not aligned, so
// while input flows their merged answers may differ by what one batch of
// another process changed; when the input is idle they agree.
//
// # Topic
//
// The topic has one partition, so that every process reads every value in
// the order written, and is compacted, so that it holds about one record
// per input partition however long the pipeline runs. Run creates it if it
// is missing, with segment.ms of 10 minutes: Kafka never compacts the
// segment being written, which it rolls by default at 1 GiB or after 7
// days, so that a process starting would otherwise read up to that much
// of old partials. A topic made beforehand should be given the same. The
// record key is the input partition in decimal; the value is a versioned
// header (kind, input, epoch, batch, time, member) and the payload. A
// tombstone (a null value) deletes its partition's value, for the
// processes running as for those that start after compaction.
//
// # Kind and input
//
// A partial says what its value is (Config.Kind, such as the sketch it
// encodes) and what its partition is of (Config.Input, such as the input
// topic), so that a partial left on the topic by a run of another kind or
// on another input is recognised: a pipeline whose sketch or input
// changed while its exchange topic stayed must neither merge nor fail on
// it. Such a partial is left out of Latest, counted (Mismatched) and
// logged once per partition and publisher, and it supersedes the
// partition's value before it, as after compaction: the partition has no
// value until its owner publishes one of this exchange's kind and input.
// A record that does not decode supersedes it in the same way.
//
// This does not let two groups, on two inputs or one, share a topic at
// the same time: the key is the partition alone, so that the partial of
// one supersedes the other's of the same partition, and compaction keeps
// one of them. Each group's processes would find the partition without a
// value, or merge the other's, whenever the other published last. Give
// each group a topic of its own.
//
// The input is a Kafka topic, so that the partitions that exist are
// known: Sync reads how many the input has, and the values of the others
// are dropped, for good (a partition added later starts with none, until
// its owner publishes). For good for the processes that read the count
// while the input had fewer: the values stay on the topic, and a process
// that starts once partitions are added again takes them, until the new
// partitions' owners publish (the group gives them out when its members
// next read the input's metadata, by default within 10 minutes). The
// input's metadata says which partitions have an owner in a group that
// reads it; a value is not dropped for being old, as its owner may be
// dead and the group yet to give its partition to another (the session
// timeout, then the restore of its state): any age limit would either
// leave a live partition out of the merge in the meantime or keep a gone
// one in for as long.
//
// # Owners
//
// A partition's owner can send a value as the partition is taken from it,
// which lands after the first of its new owner: read in the topic's
// order, it would stand for the partition until the new owner's next
// one. So each value carries the epoch of its publisher's ownership of
// the partition (Partial.Epoch), which Publish derives from what was
// read, with Config.Member naming each process apart: a process whose
// own value of the partition, published since it started, is the latest
// read goes on in its epoch; one that takes the partition over, from
// another member or from a run before under its own name, publishes in a
// new epoch: the offset after the last record it read. Offsets only grow
// and compaction keeps them, so a new epoch is above that of every value
// read before it, by any process, even those compaction has since
// removed: a process that starts then may find of a partition only a
// late value, or one of epoch 0, or of another kind, and the others still
// know the epochs before. A value of an epoch lower than the highest read
// of its partition is left out, counted (Late) and logged. (So is the
// first value of a new owner that had not read its predecessor's latest
// epoch; its next one, published once it has, is not.) The epochs come
// from the topic itself, not from the consumer group, whose generations
// start again with a new group. A process that has read nothing of a
// partition yet publishes epoch 0, unknown, which is never left out: its
// value, and a late one after it, are taken in the topic's order, as are
// those of processes that share a Member name at the same time. A
// process that starts after compaction may find only a late value, which
// the owner's next one replaces. A value of an epoch above its offset,
// which Publish never writes (its publisher reads up to the offset
// before its own record at most), is taken as of epoch 0, with a warning.
//
// Values of the first header version (no kind, input nor epoch) still
// decode, with Kind, Input and Epoch empty: unknown, they are returned
// whatever Config says, for the caller to tell by the value itself (the
// digest package's encodings begin with their sketch's kind). A process of the first
// version skips the values of the current one as records that do not
// decode, and goes on with the partition's value before them.
package exchange

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/kafkaconf"
)

// Config configures a Kafka exchange.
type Config struct {
	// Brokers are the bootstrap addresses of the Kafka cluster.
	Brokers []string
	// Topic is the exchange topic: compacted, one partition; created so if
	// missing.
	Topic string
	// Member names this process in what it publishes, for the logs of the
	// others (Partial.Member).
	Member string
	// Kind names the kind of value this process publishes and reads, such
	// as the sketch it encodes ("tdigest"). Publish gives it to partials
	// without one; Latest leaves out partials of another kind. Empty: any
	// kind is taken, and partials are published of the kind they have.
	Kind string
	// Input is the Kafka topic, on the exchange's cluster, whose
	// partitions the partials are of: the pipeline's input. Publish gives
	// it to partials without one; Latest leaves out partials of another
	// input, and those of partitions the topic does not have, as Sync
	// last read them. Empty: any input, and every partition.
	Input string
	// ConnectTimeout bounds how long Run, Publish and Sync may wait to
	// reach the brokers when they make the exchange's client (the first
	// call, or the next after one that could not): the call then fails.
	// Brokers that take connections and never answer (a hung broker,
	// another service on the port) would otherwise hold it for minutes,
	// through sarama's reads and retries. A proxy dialer of the Sarama
	// config (Net.Proxy.Dialer) without a DialContext method cannot be
	// cut off: a dial of it that hangs holds the call, even past its ctx,
	// until the dialer gives up. Default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ReplicationFactor of a topic Run creates (0: the brokers' default).
	ReplicationFactor int16
	// Sarama is the client configuration (nil: idempotent producer,
	// acks from all in-sync replicas).
	Sarama *sarama.Config
	// Logger receives what the exchange does and skips. Nil discards.
	Logger *slog.Logger
}

// DefaultConnectTimeout is the default of Config.ConnectTimeout.
const DefaultConnectTimeout = 30 * time.Second

// topicConfig is what a topic Run creates has besides compaction: its
// segments roll every 10 minutes, so that compaction keeps up.
var topicConfig = map[string]string{"segment.ms": "600000"}

// Partial is the value of one input partition, as its owner published it.
type Partial struct {
	Partition int32
	Value     []byte
	// Kind and Input say what Value is and what Partition is of (see
	// Config); empty when unknown, as in a partial of the first header
	// version, written before they were.
	Kind  string
	Input string
	// Epoch numbers the ownerships of Partition: Publish sets it (see
	// Owners in the package doc). 0: unknown.
	Epoch int64
	// Batch and Time are those of the publisher's batch.
	Batch  int64
	Time   time.Time
	Member string
	// Offset is where the value is in the exchange topic; two reads of an
	// unchanged partition give the same Offset (a cache key).
	Offset int64
}

// Kafka is an exchange on a Kafka topic. Run reads the topic; Publish,
// Sync and Latest are safe for concurrent use with it and with each other.
type Kafka struct {
	cfg    Config
	sarama *sarama.Config
	log    *slog.Logger

	// connecting is held while the client is made, without mu, so that
	// Latest does not wait for the brokers and Sync gives up with its ctx.
	connecting chan struct{}

	mu       sync.Mutex
	client   sarama.Client
	producer sarama.SyncProducer
	closed   bool
	sending  sync.WaitGroup // sends of Publish calls, which Close waits for
	latest   map[int32]Partial
	next     int64         // offset after the last record read
	moved    chan struct{} // closed when next moves
	bad      int64         // records that did not decode
	// mismatched counts the partials of another kind or input; foreign
	// holds, by partition, who published the last one, so that a
	// partition's are logged once until one of this exchange's comes.
	mismatched int64
	foreign    map[int32]string
	// epochs holds the highest epoch read of each partition; late counts
	// the partials of an earlier one, left out.
	epochs map[int32]int64
	late   int64
	// mine holds the epoch in which this process last published each
	// partition: it goes on in it while its value is the latest read.
	mine map[int32]int64
	// inputParts is how many partitions Config.Input had when Sync last
	// read it; -1: unknown. gone tells what was logged of reading it.
	inputParts int32
	gone       string
	// asking is the request for the input's partitions under way, which
	// a Sync that gives up leaves to end on its own; asked counts it, for
	// Close.
	asking *inputAnswer
	asked  sync.WaitGroup
}

// ErrClosed is returned by Publish and Sync after Close.
var ErrClosed = errors.New("exchange closed")

// headerVersion is the version of a value's header that Publish writes.
// Version 1 had no kind, input nor epoch; its values still decode, with
// these unknown.
const (
	headerVersion   = 2
	headerVersionV1 = 1
)

// New returns an exchange configured by cfg. It validates cfg and starts
// nothing.
func New(cfg Config) (*Kafka, error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("exchange: no brokers")
	case cfg.Topic == "":
		return nil, errors.New("exchange: no topic")
	case cfg.ConnectTimeout < 0:
		return nil, fmt.Errorf("exchange %s: negative connect timeout %v", cfg.Topic, cfg.ConnectTimeout)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	cfg.Brokers = slices.Clone(cfg.Brokers)
	sc := kafkaconf.Producer(cfg.Sarama)
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.MaxWaitTime = 100 * time.Millisecond // Sync waits for fetches
	sc.Metadata.AllowAutoTopicCreation = false
	// Every record goes to partition 0, the one Run reads, however many
	// partitions a topic made by someone else has.
	sc.Producer.Partitioner = sarama.NewManualPartitioner
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Kafka{
		cfg: cfg, sarama: sc, log: log.With("exchange", cfg.Topic),
		latest: map[int32]Partial{}, moved: make(chan struct{}), foreign: map[int32]string{}, epochs: map[int32]int64{}, mine: map[int32]int64{}, inputParts: -1,
		connecting: make(chan struct{}, 1),
	}, nil
}

// Run reads the exchange topic from its oldest record, keeping the latest value of
// every partition, until ctx is done; it creates the topic if it is
// missing. It blocks, and returns nil when ctx is done, or the error that
// stopped it from reading, such as brokers not reached within
// ConnectTimeout. Once the brokers have answered, the client and the
// topic still being made when ctx is done (sarama's requests cannot be
// interrupted) go on without Run, until they succeed or sarama gives up;
// Close waits for them.
func (x *Kafka) Run(ctx context.Context) error {
	client, err := x.connect(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return fmt.Errorf("exchange %s: consumer: %w", x.cfg.Topic, err)
	}
	defer consumer.Close()
	for {
		// The records below the oldest are gone (retention, DeleteRecords):
		// Sync must not wait for them.
		oldest, err := client.GetOffset(x.cfg.Topic, 0, sarama.OffsetOldest)
		if err != nil {
			return fmt.Errorf("exchange %s: oldest offset: %w", x.cfg.Topic, err)
		}
		x.mu.Lock()
		from := max(x.next, oldest)
		x.mu.Unlock()
		pc, err := consumer.ConsumePartition(x.cfg.Topic, 0, from)
		if err != nil {
			return fmt.Errorf("exchange %s: read partition 0 from offset %d: %w", x.cfg.Topic, from, err)
		}
		x.mu.Lock()
		if from > x.next {
			x.next = from
			close(x.moved)
			x.moved = make(chan struct{})
		}
		x.mu.Unlock()
		if !x.read(ctx, pc) {
			return nil
		}
		// sarama's consumer stops a partition whose offset fell out of
		// its range: the records ahead of it were deleted while it was
		// behind. The partials after them are still there.
		x.mu.Lock()
		at := x.next
		x.mu.Unlock()
		x.log.Warn("exchange: reading the topic stopped, its next records deleted under the reader; reading on from the oldest kept", "topic", x.cfg.Topic, "offset", at)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// read takes the records of pc until ctx is done, and returns false, or
// until pc stops, and returns true.
func (x *Kafka) read(ctx context.Context, pc sarama.PartitionConsumer) bool {
	defer pc.AsyncClose()
	for {
		select {
		case <-ctx.Done():
			return false
		case m, ok := <-pc.Messages():
			if !ok {
				return true
			}
			x.take(m)
		}
	}
}

// take keeps the value m holds as its partition's: the last one
// published, in the topic's order, whoever published it, unless its
// epoch is of an earlier owner than one read before. A tombstone (a
// null value) deletes the partition's value, as compaction later does for
// the processes that start after it; so does a value that does not
// decode, or of another kind or input: the partition's value before it is
// superseded all the same, and after compaction nobody would read it.
func (x *Kafka) take(m *sarama.ConsumerMessage) {
	p, err := decode(m.Key, m.Value)
	x.mu.Lock()
	defer x.mu.Unlock()
	x.next = m.Offset + 1
	close(x.moved)
	x.moved = make(chan struct{})
	if m.Value == nil {
		if part, kerr := partitionOf(m.Key); kerr == nil {
			delete(x.latest, part)
			delete(x.foreign, part)
			x.log.Info("exchange partial deleted", "partition", part, "origin", origin(m))
			return
		}
	}
	if err != nil {
		if part, kerr := partitionOf(m.Key); kerr == nil {
			delete(x.latest, part)
		}
		x.bad++
		x.log.Warn("exchange record skipped", "origin", origin(m), "err", err)
		return
	}
	if !x.ours(p) {
		delete(x.latest, p.Partition)
		x.mismatched++
		who := p.Kind + "\x00" + p.Input + "\x00" + p.Member
		if x.foreign[p.Partition] != who {
			x.foreign[p.Partition] = who
			x.log.Warn("exchange partial of another kind or input left out until its owner publishes one of this exchange's",
				"partition", p.Partition, "origin", origin(m), "member", p.Member, "kind", p.Kind, "input", p.Input, "want_kind", x.cfg.Kind, "want_input", x.cfg.Input)
		}
		return
	}
	delete(x.foreign, p.Partition)
	if p.Epoch > m.Offset {
		// Its publisher had read less of the topic than up to its own
		// record: the epoch is not one Publish wrote, and would stand
		// above every owner's to come.
		x.log.Warn("exchange partial of an epoch above its offset taken as of an unknown epoch",
			"partition", p.Partition, "origin", origin(m), "member", p.Member, "epoch", p.Epoch)
		p.Epoch = 0
	}
	if high := x.epochs[p.Partition]; p.Epoch > 0 && p.Epoch < high {
		// Sent by an owner the partition has had since: its
		// successor's value, read before it, is more recent.
		x.late++
		x.log.Warn("exchange partial of an earlier owner of its partition left out",
			"partition", p.Partition, "origin", origin(m), "member", p.Member, "epoch", p.Epoch, "latest_epoch", high)
		return
	}
	x.epochs[p.Partition] = max(x.epochs[p.Partition], p.Epoch)
	p.Offset = m.Offset
	x.latest[p.Partition] = p
}

// origin names where m was read, for the logs: formatted only when one
// is written, as take runs for every record.
func origin(m *sarama.ConsumerMessage) string {
	return fmt.Sprintf("%s/%d@%d", m.Topic, m.Partition, m.Offset)
}

// ours reports whether p is of this exchange's kind and input, or of
// unknown ones.
func (x *Kafka) ours(p Partial) bool {
	return (x.cfg.Kind == "" || p.Kind == "" || p.Kind == x.cfg.Kind) &&
		(x.cfg.Input == "" || p.Input == "" || p.Input == x.cfg.Input)
}

// Publish writes the values of partials, and returns when the brokers
// have them, or with ctx's error once ctx is done: the partials may then
// still be written (sarama's producer cannot be interrupted), before
// those of a later Publish. A partial's Offset is ignored.
func (x *Kafka) Publish(ctx context.Context, partials []Partial) error {
	if len(partials) == 0 {
		return nil
	}
	producer, err := x.getProducer(ctx)
	if err != nil {
		return err
	}
	msgs := make([]*sarama.ProducerMessage, len(partials))
	for i, p := range partials {
		p.Member = cmp.Or(p.Member, x.cfg.Member)
		p.Kind = cmp.Or(p.Kind, x.cfg.Kind)
		p.Input = cmp.Or(p.Input, x.cfg.Input)
		p.Epoch = x.epochOf(p)
		msgs[i] = &sarama.ProducerMessage{
			Topic:     x.cfg.Topic,
			Partition: 0,
			Key:       sarama.StringEncoder(strconv.Itoa(int(p.Partition))),
			Value:     sarama.ByteEncoder(encode(p)),
		}
	}
	sent := make(chan error, 1)
	go func() {
		defer x.sending.Done()
		sent <- producer.SendMessages(msgs)
	}()
	select {
	case err := <-sent:
		if err != nil {
			return fmt.Errorf("exchange %s: publish %d partials: %w", x.cfg.Topic, len(partials), err)
		}
		return ctx.Err()
	case <-ctx.Done():
		return fmt.Errorf("exchange %s: publish %d partials: %w", x.cfg.Topic, len(partials), context.Cause(ctx))
	}
}

// epochOf returns the epoch in which p is published: that of the
// partition's latest value if this process published it in that epoch,
// 0 if nothing of the partition was read, and otherwise a new one, the
// offset after the last record read, which is above the epoch of every
// value of the topic up to it: its publisher had read less of the topic.
func (x *Kafka) epochOf(p Partial) int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	cur, ok := x.latest[p.Partition]
	mine, published := x.mine[p.Partition]
	var epoch int64
	switch {
	case ok && published && cur.Member == p.Member && cur.Epoch > 0 && cur.Epoch == mine:
		epoch = cur.Epoch
	case ok || x.epochs[p.Partition] > 0:
		epoch = x.next
	}
	x.mine[p.Partition] = epoch
	return epoch
}

// Sync waits until the values published before the call have been read
// by Run, or ctx is done. It returns ctx's error then: Latest still
// returns what was read. With Config.Input, it then reads how many
// partitions the input has, and drops the values of the others; ctx
// bounds that too, and Latest then leaves out those of the partitions
// the input did not have when read before.
func (x *Kafka) Sync(ctx context.Context) error {
	client, err := x.getClient(ctx)
	if err != nil {
		return err
	}
	end, err := client.GetOffset(x.cfg.Topic, 0, sarama.OffsetNewest)
	if err != nil {
		return fmt.Errorf("exchange %s: end offset: %w", x.cfg.Topic, err)
	}
	for {
		x.mu.Lock()
		next, moved := x.next, x.moved
		x.mu.Unlock()
		if next >= end {
			if x.cfg.Input != "" {
				return x.readInput(ctx, client)
			}
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("exchange %s: read up to offset %d of %d: %w", x.cfg.Topic, next, end, context.Cause(ctx))
		}
	}
}

// inputAnswer is what a request for the input's partitions answered,
// once done is closed.
type inputAnswer struct {
	done chan struct{}
	n    int32
	err  error
}

// readInput reads how many partitions Config.Input has, and drops the
// values of the partitions it does not have: they stay out if the topic
// is given partitions again, until their owners publish. A topic that
// cannot be read keeps the count read before, with a warning. It returns
// ctx's error once ctx is done, leaving the request (a broker may not
// answer before the client's read timeout) to a later call, which waits
// for it instead of asking again.
func (x *Kafka) readInput(ctx context.Context, client sarama.Client) error {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return fmt.Errorf("exchange %s: %w", x.cfg.Topic, ErrClosed)
	}
	a := x.asking
	if a == nil {
		a = &inputAnswer{done: make(chan struct{})}
		x.asking = a
		x.asked.Add(1)
		go func() {
			defer x.asked.Done()
			a.n, a.err = x.inputPartitions(client)
			x.mu.Lock()
			x.asking = nil
			x.mu.Unlock()
			close(a.done)
		}()
	}
	x.mu.Unlock()
	select {
	case <-a.done:
	case <-ctx.Done():
		return fmt.Errorf("exchange %s: read the partitions of input %s: %w", x.cfg.Topic, x.cfg.Input, context.Cause(ctx))
	}
	n, err := a.n, a.err
	if err == nil && n == 0 {
		err = sarama.ErrUnknownTopicOrPartition
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if err != nil {
		if msg := err.Error(); x.gone != msg {
			x.gone = msg
			x.log.Warn("exchange: the input's partitions cannot be read: the partials of those it had before are kept", "input", x.cfg.Input, "partitions", x.inputParts, "err", err)
		}
		return nil
	}
	x.gone = ""
	x.inputParts = n
	var left []int32
	for part := range x.latest {
		if part >= n {
			left = append(left, part)
			delete(x.latest, part)
		}
	}
	if len(left) > 0 {
		slices.Sort(left)
		x.log.Warn("exchange partials of partitions the input does not have left out", "input", x.cfg.Input, "partitions", n, "left", fmt.Sprint(left))
	}
	return nil
}

// inputPartitions returns how many partitions Config.Input has, 0 when
// it does not exist. It asks a broker directly: the client would retry a
// topic it does not find for a second or so.
func (x *Kafka) inputPartitions(client sarama.Client) (int32, error) {
	b := client.LeastLoadedBroker()
	if b == nil {
		return 0, sarama.ErrClosedClient
	}
	req := sarama.NewMetadataRequest(x.sarama.Version, []string{x.cfg.Input})
	req.AllowAutoTopicCreation = false
	resp, err := b.GetMetadata(req)
	if err != nil {
		return 0, fmt.Errorf("metadata from broker %s: %w", b.Addr(), err)
	}
	for _, t := range resp.Topics {
		switch {
		case t.Name != x.cfg.Input:
		case errors.Is(t.Err, sarama.ErrUnknownTopicOrPartition):
			return 0, nil
		case !errors.Is(t.Err, sarama.ErrNoError):
			return 0, t.Err
		default:
			return int32(len(t.Partitions)), nil
		}
	}
	return 0, nil
}

// Latest returns the latest value read of every partition, by partition;
// with Config.Input, of the partitions the input has, as Sync last read
// them. The values are shared: do not modify them.
func (x *Kafka) Latest() []Partial {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]Partial, 0, len(x.latest))
	for _, p := range x.latest {
		if x.inputParts >= 0 && p.Partition >= x.inputParts {
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Partial) int { return cmp.Compare(a.Partition, b.Partition) })
	return out
}

// Topic returns the exchange topic's name; a Partial is at offset Offset
// of its partition 0.
func (x *Kafka) Topic() string { return x.cfg.Topic }

// Skipped returns how many records of the topic did not decode (and were
// logged and skipped).
func (x *Kafka) Skipped() int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.bad
}

// Late returns how many partials read were of an earlier epoch than
// their partition's latest, and left out.
func (x *Kafka) Late() int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.late
}

// Mismatched returns how many partials read were of another kind or input
// than Config's, and left out.
func (x *Kafka) Mismatched() int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.mismatched
}

// Close closes the producer and the client. Call it after Run has
// returned. It waits for the partials being sent, those of Publish calls
// that returned with their ctx too, and later calls return ErrClosed. It
// is safe to call twice.
func (x *Kafka) Close() error {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return nil
	}
	x.closed = true
	x.mu.Unlock()
	// No Publish starts sending now: wait for those that did.
	x.sending.Wait()
	// A client being made is closed by its maker, which sees closed.
	x.connecting <- struct{}{}
	defer func() { <-x.connecting }()
	x.mu.Lock()
	err := kafkaconf.CloseAll("exchange "+x.cfg.Topic, x.producer, x.client)
	x.mu.Unlock()
	// A request for the input's partitions fails with the client.
	x.asked.Wait()
	return err
}

// connect returns the client, connected and with the topic made, or
// ctx's error once ctx is done: the first contact ends with ctx, but
// sarama's requests after it cannot be interrupted, so the client is then
// made without waiting for it.
func (x *Kafka) connect(ctx context.Context) (sarama.Client, error) {
	type result struct {
		c   sarama.Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := x.getClient(ctx)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		return r.c, r.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// getClient returns the client, creating it and the topic the first
// time. x.mu is not held.
func (x *Kafka) getClient(ctx context.Context) (sarama.Client, error) {
	x.mu.Lock()
	closed, c := x.closed, x.client
	x.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("exchange %s: %w", x.cfg.Topic, ErrClosed)
	}
	if c != nil {
		return c, nil
	}
	select {
	case x.connecting <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("exchange %s: connect to %v: %w", x.cfg.Topic, x.cfg.Brokers, context.Cause(ctx))
	}
	defer func() { <-x.connecting }()
	x.mu.Lock()
	closed, c = x.closed, x.client
	x.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("exchange %s: %w", x.cfg.Topic, ErrClosed)
	}
	if c != nil {
		return c, nil
	}
	start := time.Now()
	err := kafkaconf.Reach(ctx, x.cfg.Brokers, x.sarama, x.cfg.ConnectTimeout)
	switch {
	case context.Cause(ctx) != nil:
		return nil, fmt.Errorf("exchange %s: connect to %v: %w", x.cfg.Topic, x.cfg.Brokers, context.Cause(ctx))
	case err != nil:
		return nil, fmt.Errorf("exchange %s: brokers %v unreachable for %v: %w",
			x.cfg.Topic, x.cfg.Brokers, time.Since(start).Round(time.Millisecond), err)
	}
	c, err = sarama.NewClient(x.cfg.Brokers, x.sarama)
	if err != nil {
		return nil, fmt.Errorf("exchange %s: connect to %v: %w", x.cfg.Topic, x.cfg.Brokers, err)
	}
	if err := x.ensureTopic(ctx, c); err != nil {
		c.Close()
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		c.Close()
		return nil, fmt.Errorf("exchange %s: %w", x.cfg.Topic, ErrClosed)
	}
	x.client = c
	return c, nil
}

// getProducer returns the producer, made the first time, and counts a
// send in x.sending: call x.sending.Done once sent.
func (x *Kafka) getProducer(ctx context.Context) (sarama.SyncProducer, error) {
	c, err := x.getClient(ctx)
	if err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return nil, fmt.Errorf("exchange %s: %w", x.cfg.Topic, ErrClosed)
	}
	if x.producer == nil {
		p, err := sarama.NewSyncProducerFromClient(c)
		if err != nil {
			return nil, fmt.Errorf("exchange %s: producer: %w", x.cfg.Topic, err)
		}
		x.producer = p
	}
	x.sending.Add(1)
	return x.producer, nil
}

// ensureTopic creates the topic, compacted with one partition, if it is
// missing, and waits until the client knows its leader.
func (x *Kafka) ensureTopic(ctx context.Context, c sarama.Client) error {
	topics, err := c.Topics()
	if err != nil {
		return fmt.Errorf("exchange %s: metadata: %w", x.cfg.Topic, err)
	}
	if !slices.Contains(topics, x.cfg.Topic) {
		admin, err := sarama.NewClusterAdminFromClient(c)
		if err != nil {
			return fmt.Errorf("exchange %s: admin: %w", x.cfg.Topic, err)
		}
		// Not admin.Close: it would close the client, which is ours.
		created, err := kafkaconf.CreateCompacted(admin, x.cfg.Topic, 1, x.cfg.ReplicationFactor, topicConfig)
		if err != nil {
			return fmt.Errorf("exchange: create topic %s: %w", x.cfg.Topic, err)
		}
		if created {
			x.log.Info("exchange topic created")
		}
	} else {
		if ps, err := c.Partitions(x.cfg.Topic); err == nil && len(ps) > 1 {
			x.log.Warn("exchange topic has several partitions: the partials use partition 0 alone", "partitions", len(ps))
		}
		x.checkPolicy(c)
	}
	err = kafkaconf.Await(ctx, func() error {
		if err := c.RefreshMetadata(x.cfg.Topic); err != nil {
			return err
		}
		_, err := c.Leader(x.cfg.Topic, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("exchange %s: wait for a leader of partition 0: %w", x.cfg.Topic, err)
	}
	return nil
}

// checkPolicy warns when the existing topic is not compacted: it then
// keeps every partial published within its retention, and Run reads them
// all before it is up to date.
func (x *Kafka) checkPolicy(c sarama.Client) {
	admin, err := sarama.NewClusterAdminFromClient(c)
	if err != nil {
		x.log.Warn("exchange: cannot read the topic's cleanup.policy", "err", err)
		return
	}
	// Not admin.Close: it would close the client, which is ours.
	policies, value, err := kafkaconf.CleanupPolicy(admin, x.cfg.Topic)
	if err != nil {
		x.log.Warn("exchange: cannot read the topic's cleanup.policy", "err", err)
		return
	}
	if policies != nil && !slices.Contains(policies, "compact") {
		x.log.Warn("exchange topic is not compacted: it keeps every partial published within its retention, and every process reads them all as it starts; set cleanup.policy=compact", "policy", value)
	}
}

// encode makes a record value: version, kind, input, epoch, batch,
// time, member, payload.
func encode(p Partial) []byte {
	b := make([]byte, 0, 50+len(p.Kind)+len(p.Input)+len(p.Member)+len(p.Value))
	b = append(b, headerVersion)
	b = appendString(b, p.Kind)
	b = appendString(b, p.Input)
	b = binary.AppendUvarint(b, uint64(p.Epoch))
	b = binary.AppendVarint(b, p.Batch)
	b = binary.AppendVarint(b, p.Time.UnixNano())
	b = appendString(b, p.Member)
	return append(b, p.Value...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// readString reads a string appendString wrote at the start of b, and
// returns it and the bytes after it.
func readString(b []byte) (string, []byte, bool) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return "", nil, false
	}
	b = b[n:]
	return string(b[:l]), b[l:], true
}

// partitionOf reads a record's key.
func partitionOf(key []byte) (int32, error) {
	part, err := strconv.ParseInt(string(key), 10, 32)
	if err != nil || part < 0 {
		return 0, fmt.Errorf("key %.20q is not a partition number", key)
	}
	return int32(part), nil
}

// decode reads a record.
func decode(key, value []byte) (Partial, error) {
	var p Partial
	part, err := partitionOf(key)
	if err != nil {
		return p, err
	}
	p.Partition = part
	if len(value) == 0 || value[0] != headerVersion && value[0] != headerVersionV1 {
		return p, fmt.Errorf("partition %d: unknown value version (want %d or %d)", part, headerVersionV1, headerVersion)
	}
	b := value[1:]
	if value[0] == headerVersion {
		var ok bool
		if p.Kind, b, ok = readString(b); !ok {
			return p, fmt.Errorf("partition %d: bad kind", part)
		}
		if p.Input, b, ok = readString(b); !ok {
			return p, fmt.Errorf("partition %d: bad input", part)
		}
		epoch, n := binary.Uvarint(b)
		if n <= 0 || epoch > math.MaxInt64 {
			return p, fmt.Errorf("partition %d: bad epoch", part)
		}
		p.Epoch, b = int64(epoch), b[n:]
	}
	batch, n := binary.Varint(b)
	if n <= 0 {
		return p, fmt.Errorf("partition %d: bad batch", part)
	}
	b = b[n:]
	nanos, n := binary.Varint(b)
	if n <= 0 {
		return p, fmt.Errorf("partition %d: bad time", part)
	}
	b = b[n:]
	member, b, ok := readString(b)
	if !ok {
		return p, fmt.Errorf("partition %d: bad member name", part)
	}
	p.Batch, p.Time, p.Member, p.Value = batch, time.Unix(0, nanos), member, b
	return p, nil
}
