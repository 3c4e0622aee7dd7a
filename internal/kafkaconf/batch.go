package kafkaconf

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// BatchProducer delivers a batch of messages to one topic with one produce
// request per leader broker (more when a request would pass the size
// limits), built with sarama's request types and sent with sarama's
// client. It does what sarama's AsyncProducer does for a batch, without
// its goroutines per partition and its channel operations per message:
// about a sixth of the CPU time per message (sink's BenchmarkKafkaWrite).
//
// It partitions with the configuration's Partitioner, splits a
// partition's messages into record batches of at most
// Producer.MaxMessageBytes, compresses them as configured, retries what a
// broker refuses with a retriable error (Producer.Retry) after refreshing
// the topic's metadata, and with Producer.Idempotent numbers the batches,
// so that a retried batch the broker already holds is not stored twice and
// a partition's batches are stored in order. One batch of a partition is
// in flight at a time.
//
// A BatchProducer is not safe for concurrent use: its deliveries must
// follow one another. The sink and the changelog each have one.
type BatchProducer struct {
	topic   string
	cfg     *sarama.Config
	client  sarama.Client
	part    sarama.Partitioner
	version int16 // of the produce requests

	// With Producer.Idempotent: the producer ID and epoch (pid -1 until
	// the brokers give one), and the sequence number of each partition's
	// next record.
	pid   int64
	epoch int16
	seq   map[int32]int32
	txn   *Txn
}

// Txn is the transaction a BatchProducer writes in (SetTxn): its
// producer's ID and epoch, registered under the transactional ID by the
// transaction's owner, which also adds partitions to the transaction.
type Txn struct {
	ID    string
	PID   int64
	Epoch int16
	// Add adds the partitions of the topic to the open transaction; it
	// is called before any record is sent to them. An error fails the
	// whole Send.
	Add func(topic string, parts []int32) error
	// Halt, once closed, gives up what Send has not delivered yet: it
	// makes no further attempt. Nil never gives up.
	Halt <-chan struct{}
}

// SetTxn makes the producer write transactional record batches, under
// t's producer ID and epoch, instead of getting a producer ID of its own.
// The configuration must be idempotent. The sequence numbers start at 0:
// a new producer epoch needs a new BatchProducer. After a Send that
// failed, the partitions' sequences have gaps: the transaction must be
// aborted, and the producer not used again.
func (p *BatchProducer) SetTxn(t *Txn) {
	p.txn = t
	p.pid, p.epoch = t.PID, t.Epoch
}

// RecordBatchOverhead is the size of a record batch's header: a message
// alone in a batch takes this much more of a broker's max.message.bytes.
const RecordBatchOverhead = 61

// NewBatchProducer returns a producer to topic on client, configured by
// the client's configuration, which must be for Kafka 0.11 or later. The
// client stays the caller's to close.
func NewBatchProducer(client sarama.Client, topic string) (*BatchProducer, error) {
	cfg := client.Config()
	if err := RecordBatches(cfg.Version); err != nil {
		return nil, err
	}
	newPart := cfg.Producer.Partitioner
	if newPart == nil {
		newPart = sarama.NewHashPartitioner
	}
	return &BatchProducer{
		topic:   topic,
		cfg:     cfg,
		client:  client,
		part:    newPart(topic),
		version: produceVersion(cfg.Version),
		pid:     -1,
		seq:     make(map[int32]int32),
	}, nil
}

// partBatch is one record batch of a partition, and what became of it.
type partBatch struct {
	part  int32
	batch *sarama.RecordBatch
	msgs  []*sarama.ProducerMessage
	bytes int   // the batch's size, as sarama's producer estimates it
	err   error // the last error; nil once stored
	retry bool  // err may pass on a later attempt
}

// Send delivers msgs, in order within each partition, and returns the
// messages not delivered, each with its error. A message delivered gets
// its Partition and Offset set. msgs must not change until it returns.
func (p *BatchProducer) Send(msgs []*sarama.ProducerMessage) []*sarama.ProducerError {
	// The client already retries metadata it cannot get (Metadata.Retry),
	// as it does for sarama's producer.
	batches, err := p.prepare(msgs)
	if err == nil && p.txn != nil {
		err = p.txn.Add(p.topic, partitionsOf(batches))
	}
	if err != nil {
		failed := make([]*sarama.ProducerError, len(msgs))
		for i, m := range msgs {
			failed[i] = &sarama.ProducerError{Msg: m, Err: err}
		}
		return failed
	}
	for retries := 0; ; retries++ {
		var todo []*partBatch
		for _, b := range batches {
			if b.err != nil && b.retry {
				todo = append(todo, b)
			}
		}
		if len(todo) == 0 {
			break
		}
		if retries > 0 {
			if retries > p.cfg.Producer.Retry.Max || !p.backoff(retries) {
				break
			}
			_ = p.client.RefreshMetadata(p.topic) // the next lookup asks again if this fails
		}
		p.attempt(todo)
	}
	var (
		failed []*sarama.ProducerError
		gap    bool // a numbered batch failed
	)
	for _, b := range batches {
		if b.err == nil {
			continue
		}
		gap = gap || b.batch != nil
		for _, m := range b.msgs {
			failed = append(failed, &sarama.ProducerError{Msg: m, Err: b.err})
		}
	}
	if gap && p.cfg.Producer.Idempotent && p.txn == nil {
		// The partitions' sequences now have gaps the brokers would refuse:
		// the next delivery starts a new producer.
		p.pid = -1
		clear(p.seq)
	}
	return failed
}

// partitionsOf returns the partitions the batches write to, once each.
func partitionsOf(batches []*partBatch) []int32 {
	var parts []int32
	for _, b := range batches {
		if b.batch != nil && !slices.Contains(parts, b.part) {
			parts = append(parts, b.part)
		}
	}
	return parts
}

// backoff waits before the next attempt, and reports whether to make it:
// not once the transaction's Halt is closed.
func (p *BatchProducer) backoff(retries int) bool {
	r := p.cfg.Producer.Retry
	d := r.Backoff
	if r.BackoffFunc != nil {
		d = r.BackoffFunc(retries, r.Max)
	}
	var halt <-chan struct{}
	if p.txn != nil {
		halt = p.txn.Halt
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-halt:
		return false
	}
	select {
	case <-halt:
		return false
	default:
		return true
	}
}

// prepare partitions msgs and builds their record batches, numbered with
// Producer.Idempotent.
func (p *BatchProducer) prepare(msgs []*sarama.ProducerMessage) ([]*partBatch, error) {
	if p.cfg.Producer.Idempotent && p.pid < 0 {
		resp, err := p.client.InitProducerID()
		if err != nil {
			// sarama drops a broker it failed to reach from the client's
			// list, and only a metadata refresh takes it back: without
			// one, a broker restarted would stay out of reach until the
			// client's next periodic refresh (10 minutes by default).
			if rerr := p.client.RefreshMetadata(p.topic); rerr == nil {
				resp, err = p.client.InitProducerID()
			}
		}
		if err == nil && !errors.Is(resp.Err, sarama.ErrNoError) {
			err = resp.Err
		}
		if err != nil {
			return nil, fmt.Errorf("get a producer ID: %w", err)
		}
		p.pid, p.epoch = resp.ProducerID, resp.ProducerEpoch
	}
	// As sarama's producer: a message that needs a consistent partition
	// (a key, with the hash partitioner) picks among all partitions, the
	// others among those with a leader, when there are some.
	all, err := p.client.Partitions(p.topic)
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		return nil, sarama.ErrLeaderNotAvailable
	}
	consistent := func(*sarama.ProducerMessage) bool { return p.part.RequiresConsistency() }
	if d, ok := p.part.(sarama.DynamicConsistencyPartitioner); ok {
		consistent = d.MessageRequiresConsistency
	}
	var writable []int32 // looked up at the first message that can use it
	partitionsOf := func(m *sarama.ProducerMessage) []int32 {
		if consistent(m) {
			return all
		}
		if writable == nil {
			writable = all
			if w, werr := p.client.WritablePartitions(p.topic); werr == nil && len(w) > 0 {
				writable = w
			}
		}
		return writable
	}
	now := time.Now().Truncate(time.Millisecond)
	open := make(map[int32]*partBatch) // the batch each partition fills
	var batches, failed []*partBatch
	records := make([]sarama.Record, len(msgs))
	nh := 0
	for _, m := range msgs {
		nh += len(m.Headers)
	}
	hdrs := make([]*sarama.RecordHeader, nh) // every record's share
	for i, m := range msgs {
		r := &records[i]
		r.Headers, hdrs = hdrs[:len(m.Headers):len(m.Headers)], hdrs[len(m.Headers):]
		sz, err := m.ByteSize(2), encodeRecord(r, m)
		var choice int32
		partitions := partitionsOf(m)
		if err == nil {
			choice, err = p.part.Partition(m, int32(len(partitions)))
		}
		switch {
		case err != nil:
		case choice < 0 || int(choice) >= len(partitions):
			err = sarama.ErrInvalidPartition
		case sz > p.cfg.Producer.MaxMessageBytes: // as sarama's producer: a batch of its own may pass it by its header
			m.Partition = partitions[choice] // named in the error
			err = sarama.ErrMessageSizeTooLarge
		}
		if err != nil {
			failed = append(failed, &partBatch{part: -1, msgs: []*sarama.ProducerMessage{m}, err: err})
			continue
		}
		m.Partition = partitions[choice]
		b := open[m.Partition]
		if b != nil && b.bytes+sz > p.cfg.Producer.MaxMessageBytes {
			b = nil
		}
		if b == nil {
			b = &partBatch{part: m.Partition, bytes: RecordBatchOverhead, batch: &sarama.RecordBatch{
				Version:          2,
				IsTransactional:  p.txn != nil,
				Codec:            p.cfg.Producer.Compression,
				CompressionLevel: p.cfg.Producer.CompressionLevel,
				ProducerID:       -1,
				ProducerEpoch:    -1,
				FirstSequence:    -1,
			}}
			open[m.Partition] = b
			batches = append(batches, b)
		}
		b.bytes += sz
		r.OffsetDelta = int64(len(b.msgs))
		// A message without a timestamp is stamped now, as sarama's
		// producer does; Kafka's timestamps are deltas from the batch's
		// first.
		t := now
		if !m.Timestamp.IsZero() {
			t = m.Timestamp.Truncate(time.Millisecond)
		}
		if len(b.msgs) == 0 {
			b.batch.FirstTimestamp, b.batch.MaxTimestamp = t, t
		} else {
			r.TimestampDelta = t.Sub(b.batch.FirstTimestamp)
			b.batch.MaxTimestamp = maxTime(b.batch.MaxTimestamp, t)
		}
		b.msgs = append(b.msgs, m)
		b.batch.Records = append(b.batch.Records, r)
	}
	for _, b := range batches {
		b.batch.LastOffsetDelta = int32(len(b.msgs) - 1)
		b.err, b.retry = errNotSent, true
		if p.cfg.Producer.Idempotent {
			b.batch.ProducerID, b.batch.ProducerEpoch = p.pid, p.epoch
			b.batch.FirstSequence = p.seq[b.part]
			p.seq[b.part] = int32((int64(p.seq[b.part]) + int64(len(b.msgs))) % (1 << 31))
		}
	}
	return append(batches, failed...), nil
}

// encodeRecord fills r with m's key, value and headers, r.Headers being as
// long as m.Headers.
func encodeRecord(r *sarama.Record, m *sarama.ProducerMessage) (err error) {
	if m.Key != nil {
		if r.Key, err = m.Key.Encode(); err != nil {
			return err
		}
	}
	if m.Value != nil {
		if r.Value, err = m.Value.Encode(); err != nil {
			return err
		}
	}
	for j := range m.Headers {
		r.Headers[j] = &m.Headers[j]
	}
	return nil
}

// errNotSent is the state of a batch before its first attempt.
var errNotSent = errors.New("not sent")

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// attempt sends the batches to their partitions' leaders, each leader on
// a goroutine of its own, and sets each batch's outcome. A partition's
// leader is looked up once: a lookup may refresh the metadata, and the
// batches of one partition must go to one broker, one after the other.
func (p *BatchProducer) attempt(batches []*partBatch) {
	type lookup struct {
		leader *sarama.Broker
		err    error
	}
	leaderOf := make(map[int32]lookup)
	byLeader := make(map[*sarama.Broker][]*partBatch)
	var leaders []*sarama.Broker
	for _, b := range batches {
		l, ok := leaderOf[b.part]
		if !ok {
			l.leader, l.err = p.client.Leader(p.topic, b.part)
			leaderOf[b.part] = l
		}
		leader, err := l.leader, l.err
		if err != nil {
			b.err, b.retry = err, true
			continue
		}
		if byLeader[leader] == nil {
			leaders = append(leaders, leader)
		}
		byLeader[leader] = append(byLeader[leader], b)
	}
	var wg sync.WaitGroup
	for _, leader := range leaders {
		wg.Go(func() { p.sendTo(leader, byLeader[leader]) })
	}
	wg.Wait()
}

// maxRequest is the most a produce request holds, as sarama's producer
// counts it.
func maxRequest() int { return int(sarama.MaxRequestSize) - 10*1024 }

// Intercept runs the producer interceptors of cfg on msgs, once each, as
// sarama's producers do on a message sent for the first time. The senders
// through a BatchProducer call it: Send does not, as it also sends again
// messages that failed.
func Intercept(cfg *sarama.Config, msgs []*sarama.ProducerMessage) {
	for _, m := range msgs {
		for _, ic := range cfg.Producer.Interceptors {
			ic.OnSend(m)
		}
	}
}

// sendTo sends batches, in order, to leader: each request holds at most
// one batch of a partition, and a partition's next batch goes only once
// the one before is stored.
func (p *BatchProducer) sendTo(leader *sarama.Broker, batches []*partBatch) {
	for len(batches) > 0 {
		req := &sarama.ProduceRequest{
			RequiredAcks: p.cfg.Producer.RequiredAcks,
			Timeout:      int32(p.cfg.Producer.Timeout / time.Millisecond),
			Version:      p.version,
		}
		if p.txn != nil {
			req.TransactionalID = &p.txn.ID
		}
		var (
			in    []*partBatch
			later []*partBatch
			bytes int
			taken = make(map[int32]bool)
		)
		for _, b := range batches {
			if taken[b.part] || len(in) > 0 && bytes+b.bytes > maxRequest() {
				taken[b.part] = true // the partition's later batches wait behind this one
				later = append(later, b)
				continue
			}
			taken[b.part] = true
			bytes += b.bytes
			in = append(in, b)
			req.AddBatch(p.topic, b.part, b.batch)
		}
		resp, err := leader.Produce(req)
		if err != nil {
			// The connection is in doubt: the next attempt opens another.
			_ = leader.Close()
			for _, b := range batches {
				b.err, b.retry = err, true
			}
			return
		}
		blocked := make(map[int32]*partBatch)
		for _, b := range in {
			p.settle(b, resp)
			if b.err != nil {
				blocked[b.part] = b
			}
		}
		batches = later[:0] // filtered in place: each is written at or before where it was read
		for _, b := range later {
			if f := blocked[b.part]; f != nil {
				// Behind a batch that failed: not sent, so as to keep the
				// partition's order, and failing as it did.
				b.err, b.retry = f.err, f.retry
				continue
			}
			batches = append(batches, b)
		}
	}
}

// settle sets b's outcome from the response to its request; a nil
// response means the request asked for no acknowledgement.
func (p *BatchProducer) settle(b *partBatch, resp *sarama.ProduceResponse) {
	b.err, b.retry = nil, false
	if resp == nil {
		return
	}
	block := resp.GetBlock(p.topic, b.part)
	if block == nil {
		b.err = sarama.ErrIncompleteResponse
		return
	}
	switch block.Err {
	case sarama.ErrNoError:
		for i, m := range b.msgs {
			m.Offset = block.Offset + int64(i)
		}
	case sarama.ErrDuplicateSequenceNumber: // stored by an earlier attempt
	case sarama.ErrInvalidMessage, sarama.ErrUnknownTopicOrPartition, sarama.ErrLeaderNotAvailable,
		sarama.ErrNotLeaderForPartition, sarama.ErrRequestTimedOut, sarama.ErrNotEnoughReplicas,
		sarama.ErrNotEnoughReplicasAfterAppend, sarama.ErrKafkaStorageError:
		b.err, b.retry = block.Err, true
	default:
		b.err = block.Err
	}
}
