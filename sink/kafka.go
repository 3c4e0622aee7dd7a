package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

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
	// Sarama is the producer configuration to start from: TLS, SASL, the
	// Kafka version, the partitioner, retries, compression. The sink copies
	// it and turns on Producer.Return.Successes and Producer.Return.Errors,
	// which it needs to know that a batch is delivered. Nil starts from
	// sarama.NewConfig() with acknowledgement by all in-sync replicas and an
	// idempotent producer, so that sarama's retries neither duplicate nor
	// reorder messages.
	Sarama *sarama.Config
	// Transaction, when set, writes every batch in the open transaction of
	// this producer instead of with a producer of the sink's own: the
	// batch is visible to read_committed consumers once the pipeline
	// commits the transaction (stream.WithTransaction), with its state and
	// input offsets. Sarama is then unused, and Close leaves the
	// Transaction open, for its owner to close.
	Transaction *txn.Producer
	// Async makes Write return once the batch is handed to the producer,
	// without waiting for the brokers' acknowledgements; Flush waits for
	// them. With Sarama nil, the producer's channels then hold 16,384
	// messages, so that a batch is handed on at once. A pipeline flushes the sink before it commits (stream.Flusher),
	// so the guarantee stays at least once, and with stream.CommitInterval
	// a batch's messages are delivered while the pipeline goes on with the
	// next batches. Messages not delivered (after sarama's retries) fail
	// the next Write and Flush; a Flush called again sends them again.
	// Not with Transaction.
	Async bool
}

// Kafka is a sink that writes each value of a stream as one Kafka message,
// with sarama's asynchronous producer: the messages of a batch go out in as
// few requests as the brokers allow, and Write returns once every one of
// them is acknowledged, or, with KafkaConfig.Async, once they are handed to
// the producer, Flush then waiting for the acknowledgements.
//
// The producer is created by the first Write, so that NewKafka starts no
// goroutine and does not need the brokers; Close stops it. Write and Close
// are safe for concurrent use, and Writes are serialized.
type Kafka[T any] struct {
	cfg    KafkaConfig
	sarama *sarama.Config
	encode func(T) (Message, error)
	log    *slog.Logger

	mu       sync.Mutex
	producer sarama.AsyncProducer
	closed   bool
	msgs     []sarama.ProducerMessage // reused by the next Write when no message is in flight

	// With Async: the messages the producer holds, the drain goroutine
	// that counts their acknowledgements, and the failures since the last
	// Flush.
	acks     sync.Mutex
	inflight int
	idle     chan struct{} // closed when inflight falls to 0; nil while it is 0
	failed   []*sarama.ProducerError
	drained  chan struct{} // closed when the drain goroutine ends
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
// each message, such as the error and origin of a dead letter. encode is
// called from one goroutine at a time; the sink is done with the slices it
// returns when Write returns.
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
	}
	cfg.Brokers = slices.Clone(cfg.Brokers)
	sc := kafkaconf.Producer(cfg.Sarama)
	if cfg.Async && cfg.Sarama == nil {
		// Room for a batch's messages in the producer's channels, so that
		// Write hands them on without waiting for the producer to take
		// them one by one.
		sc.ChannelBufferSize = asyncChannelBuffer
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka sink %s: sarama config: %w", cfg.Topic, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Kafka[T]{cfg: cfg, sarama: sc, encode: encode, log: log.With("topic", cfg.Topic)}, nil
}

// asyncChannelBuffer is the producer's ChannelBufferSize with Async and
// the default configuration (sarama's default is 256).
const asyncChannelBuffer = 16384

// kafkaWrite identifies the messages of one Write by its address, so that
// an acknowledgement left over from an abandoned Write is not counted for
// the next. It must not be zero-sized: those may all share one address.
type kafkaWrite struct{ _ byte }

// Write sends every value of b and returns when all of them are
// acknowledged by the brokers. A value that does not encode fails the
// Write before anything is sent; a message that is not delivered (after
// sarama's retries) fails it after all others are settled. When ctx is
// done first, Write returns its error and the messages in flight may still
// be delivered.
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
	w := new(kafkaWrite)
	msgs := k.msgs[:0]
	if cap(msgs) < total {
		msgs = make([]sarama.ProducerMessage, 0, total)
	}
	for i := range b.Partitions {
		p := &b.Partitions[i]
		for j, v := range p.Values {
			e, err := k.encode(v)
			if err != nil {
				return fmt.Errorf("kafka sink %s: encode: %w", k.cfg.Topic, &stream.RecordError{Origin: p.Origin(j), Err: err})
			}
			m := sarama.ProducerMessage{Topic: k.cfg.Topic, Value: sarama.ByteEncoder(e.Value), Metadata: w}
			if e.Key != nil {
				m.Key = sarama.ByteEncoder(e.Key)
			}
			if len(e.Headers) > 0 {
				m.Headers = make([]sarama.RecordHeader, len(e.Headers))
				for i, h := range e.Headers {
					m.Headers[i] = sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value}
				}
			}
			msgs = append(msgs, m)
		}
	}
	if tx := k.cfg.Transaction; tx != nil {
		ptrs := make([]*sarama.ProducerMessage, len(msgs))
		for i := range msgs {
			ptrs[i] = &msgs[i]
		}
		if err := tx.Send(ctx, ptrs); err != nil {
			k.msgs = nil // sarama may still hold them
			return fmt.Errorf("kafka sink %s: %w", k.cfg.Topic, err)
		}
		clear(msgs)
		k.msgs = msgs[:0]
		return nil
	}
	if k.producer == nil {
		p, err := sarama.NewAsyncProducer(k.cfg.Brokers, k.sarama)
		if err != nil {
			return fmt.Errorf("kafka sink %s: connect to %v: %w", k.cfg.Topic, k.cfg.Brokers, err)
		}
		k.producer = p
		if k.cfg.Async {
			k.drained = make(chan struct{})
			go k.drain(p)
		}
	}
	if k.cfg.Async {
		k.msgs = nil // the producer holds them until they are acknowledged
		ptrs := make([]*sarama.ProducerMessage, len(msgs))
		for i := range msgs {
			ptrs[i] = &msgs[i]
		}
		return k.hand(ctx, ptrs)
	}

	settled, errs, err := kafkaconf.SendAll(ctx, k.producer, total, func(i int) *sarama.ProducerMessage { return &msgs[i] }, any(w),
		func(e *sarama.ProducerError) {
			k.log.Warn("kafka message of an abandoned write not delivered", "partition", e.Msg.Partition, "err", e.Err)
		})
	if err != nil {
		k.msgs = nil // sarama may still hold them
		return fmt.Errorf("kafka sink %s: %d of %d messages acknowledged: %w", k.cfg.Topic, settled-len(errs), total, err)
	}
	clear(msgs)
	k.msgs = msgs[:0]
	if len(errs) > 0 {
		e := errs[0]
		return fmt.Errorf("kafka sink %s: %d of %d messages not delivered; first to partition %d: %w",
			k.cfg.Topic, len(errs), total, e.Msg.Partition, e.Err)
	}
	return nil
}

// hand gives msgs to the producer, after the messages that failed since
// the last Flush, which it sends again, for the drain goroutine to count
// their acknowledgements. k.mu is held.
func (k *Kafka[T]) hand(ctx context.Context, msgs []*sarama.ProducerMessage) error {
	k.acks.Lock()
	if len(k.failed) > 0 {
		again := make([]*sarama.ProducerMessage, len(k.failed), len(k.failed)+len(msgs))
		for i, e := range k.failed {
			again[i] = e.Msg // sarama cleared it for sending again
		}
		msgs = append(again, msgs...)
		k.failed = nil
	}
	k.acks.Unlock()
	k.settle(-len(msgs), nil)
	in := k.producer.Input()
	for i, m := range msgs {
		select {
		case in <- m:
		case <-ctx.Done():
			k.settle(len(msgs)-i, nil) // never sent
			return fmt.Errorf("kafka sink %s: %d of %d messages handed to the producer: %w", k.cfg.Topic, i, len(msgs), context.Cause(ctx))
		}
	}
	return nil
}

// drain counts the acknowledgements of Async writes until the producer
// closes its channels.
func (k *Kafka[T]) drain(p sarama.AsyncProducer) {
	defer close(k.drained)
	drainProducer(p, func(e *sarama.ProducerError) { k.settle(1, e) })
}

// drainProducer reads p's successes and errors until sarama closes both,
// telling settled of each message: with its error when it was not
// delivered, else with nil.
func drainProducer(p sarama.AsyncProducer, settled func(*sarama.ProducerError)) {
	ok, errs := p.Successes(), p.Errors()
	for ok != nil || errs != nil {
		select {
		case _, open := <-ok:
			if !open {
				ok = nil
				continue
			}
			settled(nil)
		case e, open := <-errs:
			if !open {
				errs = nil
				continue
			}
			settled(e)
		}
	}
}

// settle records that n messages were settled (-n: handed to the
// producer), with the failure e.
func (k *Kafka[T]) settle(n int, e *sarama.ProducerError) {
	k.acks.Lock()
	defer k.acks.Unlock()
	k.inflight -= n
	if e != nil {
		k.failed = append(k.failed, e)
	}
	switch {
	case k.inflight > 0 && k.idle == nil:
		k.idle = make(chan struct{})
	case k.inflight == 0 && k.idle != nil:
		close(k.idle)
		k.idle = nil
	}
}

// undelivered returns the error of the Async messages that failed since
// the last Flush, if any.
func (k *Kafka[T]) undelivered() error {
	k.acks.Lock()
	defer k.acks.Unlock()
	if len(k.failed) == 0 {
		return nil
	}
	e := k.failed[0]
	return fmt.Errorf("kafka sink %s: %d messages not delivered; first to partition %d: %w", k.cfg.Topic, len(k.failed), e.Msg.Partition, e.Err)
}

// Flush implements stream.Flusher: with Async, it returns when every
// message written before it is acknowledged, or with the error of those
// that were not delivered. Messages not delivered are sent again by the
// next Write or Flush. Without Async, Write has already waited, and Flush
// returns nil.
func (k *Kafka[T]) Flush(ctx context.Context) error {
	if !k.cfg.Async {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("kafka sink %s: %w", k.cfg.Topic, ErrClosed)
	}
	if k.producer == nil {
		return nil // nothing written yet
	}
	if err := k.hand(ctx, nil); err != nil {
		return err
	}
	k.acks.Lock()
	idle := k.idle
	k.acks.Unlock()
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			return fmt.Errorf("kafka sink %s: flush: %w", k.cfg.Topic, context.Cause(ctx))
		}
	}
	return k.undelivered()
}

// Close flushes and stops the producer, and returns the error of messages
// not delivered. It is safe to call more than once; Write and Flush fail
// after it.
func (k *Kafka[T]) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	p := k.producer
	k.producer = nil
	if p == nil {
		return nil
	}
	// Drain both channels until sarama closes them, as AsyncClose asks;
	// only messages of an abandoned Write, or with Async those not yet
	// flushed, can still be in flight.
	p.AsyncClose()
	if k.cfg.Async {
		<-k.drained // it drains them, and ends when sarama closes them
		if err := k.undelivered(); err != nil {
			return fmt.Errorf("kafka sink %s: close: %w", k.cfg.Topic, err)
		}
		return nil
	}
	var errs []error
	drainProducer(p, func(e *sarama.ProducerError) {
		if e != nil {
			errs = append(errs, e)
		}
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kafka sink %s: close: %w", k.cfg.Topic, err)
	}
	return nil
}
