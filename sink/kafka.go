package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/sink/txn"
	"github.com/sluicehq/sluice/stream"
)

// KafkaConfig configures a Kafka sink. Brokers and Topic are required.
type KafkaConfig struct {
	// Brokers are the "host:port" addresses to bootstrap from.
	Brokers []string
	// Topic is the topic every value is written to.
	Topic string
	// Logger receives the producer's errors. Nil discards them.
	Logger *slog.Logger
	// Sarama is the client and producer configuration to start from: TLS,
	// SASL, the Kafka version (0.11 or later), the partitioner, the
	// acknowledgements, retries, compression, MaxMessageBytes,
	// idempotence, interceptors. Producer.Flush does not apply: a batch
	// goes out at once, in one request per leader broker. The sink copies
	// it. Nil starts from sarama.NewConfig() with acknowledgement by all
	// in-sync replicas and idempotence, so that retries neither duplicate
	// nor reorder messages.
	Sarama *sarama.Config
	// Transaction, when set, writes every batch in the open transaction of
	// this producer instead of with a producer of the sink's own: the
	// batch is visible to read_committed consumers once the pipeline
	// commits the transaction (stream.WithTransaction), with its state and
	// input offsets. Sarama is then unused, and Close leaves the
	// Transaction open, for its owner to close.
	Transaction *txn.Producer
	// Async makes Write return once the batch's requests are on their
	// way, without waiting for the brokers' acknowledgements; the next
	// Write, Flush or Close waits for them. A pipeline flushes the sink
	// before it commits (stream.Flusher), so the guarantee stays at least
	// once, and with stream.CommitInterval a batch's messages are
	// delivered while the pipeline goes on with the next batch. Messages
	// not delivered (after the retries) fail the next Flush, and the next
	// Write or Flush sends them again, under a new producer ID: a message
	// the brokers stored without the acknowledgement getting back (a
	// timeout, a connection lost) is then written twice. Not with
	// Transaction.
	Async bool
	// ConnectTimeout bounds how long a Write may wait to reach the
	// brokers when it makes the sink's client (the first Write, or the
	// next after one that could not): the Write then fails. Brokers that
	// take connections and never answer (a hung broker, another service
	// on the port) would otherwise hold it for minutes, through sarama's
	// reads and retries. A proxy dialer of the Sarama config
	// (Net.Proxy.Dialer) without a DialContext method cannot be cut off:
	// a dial of it that hangs holds the Write, even past its ctx, until
	// the dialer gives up. Unused with Transaction, whose producer
	// connects by itself. Default DefaultKafkaConnectTimeout.
	ConnectTimeout time.Duration
}

// DefaultKafkaConnectTimeout is the default of KafkaConfig.ConnectTimeout.
const DefaultKafkaConnectTimeout = 30 * time.Second

// Kafka is a sink that writes each value of a stream as one Kafka message.
// The messages of a batch go out in one produce request per leader broker
// (more only past the size limits), built with sarama's request types and
// sent with sarama's client, and Write returns once every one of them is
// acknowledged, or, with KafkaConfig.Async, once the requests are on their
// way, Flush then waiting for the acknowledgements. With a Transaction, the
// messages go out in the transaction, by its producer, the same way.
//
// The client is created by the first Write, so that NewKafka starts no
// goroutine and does not need the brokers, within KafkaConfig.ConnectTimeout
// or until the Write's ctx is done; Close stops it. Write, Flush and
// Close are safe for concurrent use, and are serialized.
type Kafka[T any] struct {
	cfg    KafkaConfig
	sarama *sarama.Config
	encode func(T) (Message, error)
	log    *slog.Logger
	// reached is set once the brokers have answered (see Reached).
	reached atomic.Bool

	mu       sync.Mutex
	client   sarama.Client
	producer *kafkaconf.BatchProducer
	closed   bool
	msgs     []sarama.ProducerMessage // reused by the next Write once delivered
	// bytesHint is the size of the copies of the last Write's encoded
	// bytes: the next one starts with room for as many.
	bytesHint int

	flight *kafkaFlight            // the delivery in flight, or nil
	failed []*sarama.ProducerError // with Async, not delivered since the last Flush
}

// kafkaFlight is a delivery on its way.
type kafkaFlight struct {
	done   chan struct{}            // closed when it ends
	failed []*sarama.ProducerError  // set before done is closed
	own    []sarama.ProducerMessage // the sink's buffer the messages are in, or nil
}

var _ stream.Flusher = (*Kafka[int])(nil)

var _ stream.Sink[int] = (*Kafka[int])(nil)

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("sink: closed")

// Message is a Kafka message as an encoder given to NewKafkaMessages makes
// it of a value. A nil Key lets the partitioner choose the partition.
type Message struct {
	Key     []byte
	Value   []byte
	Headers []Header
	// Timestamp is the record's timestamp (kept to the millisecond, as
	// Kafka keeps it), such as the event time of what it reports; zero
	// stamps it when it is sent. A topic with
	// message.timestamp.type=LogAppendTime takes the broker's time instead.
	Timestamp time.Time
}

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// NewKafka returns a sink that writes to cfg.Topic the key and value that
// encode returns for each value. A nil key lets the partitioner choose the
// partition. encode is called from one goroutine at a time.
func NewKafka[T any](cfg KafkaConfig, encode func(v T) (key, value []byte, err error)) (*Kafka[T], error) {
	if encode == nil {
		return newKafka[T](cfg, nil)
	}
	return newKafka(cfg, func(v T) (Message, error) {
		key, value, err := encode(v)
		return Message{Key: key, Value: value}, err
	})
}

// NewKafkaMessages is NewKafka with an encoder that may also set headers on
// each message, such as the error and origin of a dead letter, and its
// timestamp, such as the event time of what it reports. encode is
// called from one goroutine at a time; the sink copies the bytes of the
// slices it returns, so that encode may reuse them at its next call, even
// while the messages are in flight (Async, a Write whose ctx is done) or
// kept to be sent again.
func NewKafkaMessages[T any](cfg KafkaConfig, encode func(v T) (Message, error)) (*Kafka[T], error) {
	return newKafka(cfg, encode)
}

func newKafka[T any](cfg KafkaConfig, encode func(v T) (Message, error)) (*Kafka[T], error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("kafka sink: no brokers")
	case cfg.Topic == "":
		return nil, errors.New("kafka sink: no topic")
	case encode == nil:
		return nil, fmt.Errorf("kafka sink %s: no encoder", cfg.Topic)
	case cfg.Async && cfg.Transaction != nil:
		return nil, fmt.Errorf("kafka sink %s: Async with a Transaction: a transaction's writes are delivered when it commits", cfg.Topic)
	case cfg.ConnectTimeout < 0:
		return nil, fmt.Errorf("kafka sink %s: negative connect timeout %v", cfg.Topic, cfg.ConnectTimeout)
	}
	cfg.Brokers = slices.Clone(cfg.Brokers)
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultKafkaConnectTimeout
	}
	sc := kafkaconf.Producer(cfg.Sarama)
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka sink %s: sarama config: %w", cfg.Topic, err)
	}
	if cfg.Transaction == nil {
		if err := kafkaconf.RecordBatches(sc.Version); err != nil {
			return nil, fmt.Errorf("kafka sink %s: sarama config: %w", cfg.Topic, err)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Kafka[T]{cfg: cfg, sarama: sc, encode: encode, log: log.With("topic", cfg.Topic)}, nil
}

// Write sends every value of b and returns when all of them are
// acknowledged by the brokers (with KafkaConfig.Async, once they are sent).
// A value that does not encode fails the Write before anything is sent; a
// message that is not delivered (after the retries) fails it after all
// others are settled. When ctx is done first, Write returns its error and
// the messages in flight may still be delivered.
func (k *Kafka[T]) Write(ctx context.Context, b *stream.Batch[T]) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("kafka sink %s: %w", k.cfg.Topic, ErrClosed)
	}
	total := b.Len()
	if total == 0 {
		return nil
	}
	failed, err := k.land(ctx)
	if err != nil {
		return err
	}
	if !k.cfg.Async && len(failed) > 0 {
		k.log.Warn("kafka messages of an abandoned write not delivered", "messages", len(failed), "partition", failed[0].Msg.Partition, "err", failed[0].Err)
	}
	msgs := k.msgs[:0]
	if cap(msgs) < total {
		msgs = make([]sarama.ProducerMessage, 0, total)
	}
	var (
		hdrs    []sarama.RecordHeader // the headers of the messages, in one array per batch as far as it goes
		lastKey string                // the header key converted last, and its bytes, which messages share
		keyB    []byte
		share   = len(k.sarama.Producer.Interceptors) == 0 // no one else sees the messages
		// copies holds the bytes of the encoder's slices: the messages
		// outlive its next call. When it grows, the messages before keep
		// the array they point into, which nothing writes again.
		copies = make([]byte, 0, k.bytesHint)
	)
	own := func(b []byte) []byte {
		if b == nil {
			return nil // a nil value is a tombstone, an empty one is not
		}
		start := len(copies)
		copies = append(copies, b...)
		return copies[start:len(copies):len(copies)]
	}
	for i := range b.Partitions {
		p := &b.Partitions[i]
		for j, v := range p.Values {
			e, err := k.encode(v)
			if err != nil {
				if o := p.Origin(j); o != (stream.Origin{}) {
					return fmt.Errorf("kafka sink %s: encode: %w", k.cfg.Topic, &stream.RecordError{Origin: o, Err: err})
				}
				// An aggregate's value comes from no one record.
				return fmt.Errorf("kafka sink %s: encode value %d of partition %d (no origin): %w", k.cfg.Topic, j, p.ID, err)
			}
			m := sarama.ProducerMessage{Topic: k.cfg.Topic, Value: sarama.ByteEncoder(own(e.Value)), Timestamp: e.Timestamp}
			if e.Key != nil {
				m.Key = sarama.ByteEncoder(own(e.Key))
			}
			if len(e.Headers) > 0 {
				if cap(hdrs)-len(hdrs) < len(e.Headers) {
					hdrs = make([]sarama.RecordHeader, 0, max(len(e.Headers), min(total-len(msgs), 4096)*len(e.Headers)))
				}
				start := len(hdrs)
				for _, h := range e.Headers {
					if !share || keyB == nil || h.Key != lastKey {
						lastKey, keyB = h.Key, []byte(h.Key)
					}
					hdrs = append(hdrs, sarama.RecordHeader{Key: keyB, Value: own(h.Value)})
				}
				m.Headers = hdrs[start:len(hdrs):len(hdrs)]
			}
			msgs = append(msgs, m)
		}
	}
	k.msgs = nil // the delivery holds them; land gives them back
	k.bytesHint = min(len(copies), 64<<20)
	// With Async, the messages that failed are sent again, first; there is
	// none with a Transaction, which Async excludes.
	ptrs := appendMsgs(make([]*sarama.ProducerMessage, 0, len(k.failed)+len(msgs)), k.failed)
	resent := len(ptrs)
	for i := range msgs {
		ptrs = append(ptrs, &msgs[i])
	}
	if tx := k.cfg.Transaction; tx != nil {
		if err := tx.Send(ctx, ptrs); err != nil {
			return fmt.Errorf("kafka sink %s: %w", k.cfg.Topic, err)
		}
		clear(msgs)
		k.msgs = msgs[:0]
		return nil
	}
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("kafka sink %s: %w", k.cfg.Topic, err) // nothing sent
	}
	if k.producer == nil {
		c, err := k.newClient(ctx)
		if err != nil {
			return err
		}
		p, err := kafkaconf.NewBatchProducer(c, k.cfg.Topic)
		if err != nil {
			c.Close()
			return fmt.Errorf("kafka sink %s: %w", k.cfg.Topic, err)
		}
		k.client, k.producer = c, p
	}
	kafkaconf.Intercept(k.sarama, ptrs[resent:]) // the ones sent again were seen before
	k.failed = nil
	k.deliver(ptrs, msgs)
	if k.cfg.Async {
		return nil
	}
	if failed, err = k.land(ctx); err != nil {
		return err
	}
	if len(failed) > 0 {
		e := failed[0]
		return fmt.Errorf("kafka sink %s: %d of %d messages not delivered; first to partition %d: %w",
			k.cfg.Topic, len(failed), total, e.Msg.Partition, e.Err)
	}
	return nil
}

// Reached reports whether the brokers have answered a Write of the sink
// since it was made, and stays true once they have. Until then, no
// message has been sent: a caller that stops may end a Write that waits
// for them (its ctx) without losing any. With a Transaction, whose
// producer connects by itself, it stays false. It may be called from any
// goroutine.
func (k *Kafka[T]) Reached() bool { return k.reached.Load() }

// newClient makes the sarama client, first reaching the brokers within
// ConnectTimeout, or until ctx is done (kafkaconf.Reach): sarama's own
// wait is Net.ReadTimeout (30s) for each of several reads, none of which
// a context ends.
func (k *Kafka[T]) newClient(ctx context.Context) (sarama.Client, error) {
	start := time.Now()
	err := kafkaconf.Reach(ctx, k.cfg.Brokers, k.sarama, k.cfg.ConnectTimeout)
	if cerr := context.Cause(ctx); cerr != nil {
		return nil, fmt.Errorf("kafka sink %s: connect to %v: %w", k.cfg.Topic, k.cfg.Brokers, cerr)
	}
	if err != nil {
		return nil, fmt.Errorf("kafka sink %s: brokers %v unreachable for %v: %w",
			k.cfg.Topic, k.cfg.Brokers, time.Since(start).Round(time.Millisecond), err)
	}
	k.reached.Store(true)
	client, err := sarama.NewClient(k.cfg.Brokers, k.sarama)
	if err != nil {
		return nil, fmt.Errorf("kafka sink %s: connect to %v: %w", k.cfg.Topic, k.cfg.Brokers, err)
	}
	return client, nil
}

// deliver starts the delivery of msgs, which point into own (nil for
// messages the sink does not reuse). k.mu is held and no delivery is in
// flight.
func (k *Kafka[T]) deliver(msgs []*sarama.ProducerMessage, own []sarama.ProducerMessage) {
	f := &kafkaFlight{done: make(chan struct{}), own: own}
	k.flight = f
	p := k.producer
	go func() {
		defer close(f.done)
		f.failed = p.Send(msgs)
	}()
}

// land waits for the delivery in flight, if any, to end, and returns the
// messages it did not deliver, which, with Async, join those to send
// again. k.mu is held.
func (k *Kafka[T]) land(ctx context.Context) ([]*sarama.ProducerError, error) {
	f := k.flight
	if f == nil {
		return nil, nil
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("kafka sink %s: wait for the messages in flight: %w", k.cfg.Topic, context.Cause(ctx))
	}
	k.flight = nil
	if len(f.failed) == 0 && f.own != nil {
		clear(f.own)
		k.msgs = f.own[:0]
	}
	if k.cfg.Async {
		k.failed = append(k.failed, f.failed...)
	}
	return f.failed, nil
}

// undelivered returns the error of the Async messages that failed since
// the last Flush, if any.
func (k *Kafka[T]) undelivered() error {
	if len(k.failed) == 0 {
		return nil
	}
	e := k.failed[0]
	return fmt.Errorf("kafka sink %s: %d messages not delivered; first to partition %d: %w", k.cfg.Topic, len(k.failed), e.Msg.Partition, e.Err)
}

// Flush implements stream.Flusher: with Async, it sends again the messages
// that were not delivered, and returns when every message written before
// it is acknowledged, or with the error of those that were not delivered,
// which the next Write or Flush sends again. Without Async, Write has
// already waited, and Flush returns nil.
func (k *Kafka[T]) Flush(ctx context.Context) error {
	if !k.cfg.Async {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("kafka sink %s: %w", k.cfg.Topic, ErrClosed)
	}
	again := k.failed // reported by an earlier Flush
	k.failed = nil
	if _, err := k.land(ctx); err != nil {
		k.failed = append(again, k.failed...)
		return fmt.Errorf("kafka sink %s: flush: %w", k.cfg.Topic, err)
	}
	if len(again) > 0 {
		k.deliver(appendMsgs(nil, again), nil)
		if _, err := k.land(ctx); err != nil {
			return fmt.Errorf("kafka sink %s: flush: %w", k.cfg.Topic, err)
		}
	}
	return k.undelivered()
}

// Close waits for the messages in flight, stops the client, and returns
// the error of messages not delivered. It is safe to call more than once;
// Write and Flush fail after it.
func (k *Kafka[T]) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	var errs []error
	failed, _ := k.land(context.Background())
	if !k.cfg.Async {
		for _, e := range failed { // of an abandoned Write
			errs = append(errs, e)
		}
	}
	if err := k.undelivered(); err != nil {
		errs = append(errs, err)
	}
	if k.client != nil {
		errs = append(errs, k.client.Close())
		k.client, k.producer = nil, nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kafka sink %s: close: %w", k.cfg.Topic, err)
	}
	return nil
}

// appendMsgs appends the messages of errs to ms.
func appendMsgs(ms []*sarama.ProducerMessage, errs []*sarama.ProducerError) []*sarama.ProducerMessage {
	for _, e := range errs {
		ms = append(ms, e.Msg)
	}
	return ms
}
