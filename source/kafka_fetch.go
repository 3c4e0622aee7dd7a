package source

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/rcrowley/go-metrics"

	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/internal/readcommitted"
)

// kafkaFetch reads the partitions this member claims with fetch requests
// of its own: one loop per leader broker, on a connection of its own, that
// asks for all of the broker's partitions at once and queues their
// records in chunks. It takes the place of sarama's partition consumers,
// which hand every message through a channel of its own (a select and a
// goroutine switch per message, most of the consumer's CPU): a claim
// pauses its sarama partition consumer as it starts and registers the
// partition here. Records the partition consumer fetched before the pause
// are queued too; the queue skips what it already holds (Kafka.push). A
// claim that starts at a sentinel (sarama.OffsetOldest, OffsetNewest)
// starts where its loop resolves it (Kafka.begin): until then, the
// partition consumer's records are dropped.
//
// sarama's consumer group still runs the group protocol: joining,
// assignment, heartbeats, and the end of claims.
type kafkaFetch struct {
	k       *Kafka
	client  sarama.Client
	version int16 // of the fetch requests
	// metrics is sarama's metric registry, or nil. The loops update
	// consumer-batch-size, which sarama's partition consumers would; the
	// connections' Fetch updates the other consumer metrics
	// (consumer-fetch-rate, consumer-fetch-response-size) and the
	// broker's.
	metrics metrics.Registry
	// fail ends the source's Run with an error a retry does not cure.
	fail func(error)

	mu      sync.Mutex
	loops   map[int32]*fetchLoop // by broker ID
	claims  map[int32]uint64     // the epoch of the claim fetched of each partition, from add to remove
	stopped bool
	done    chan struct{} // closed by stop
	wg      sync.WaitGroup
}

// fetchLoop fetches the partitions led by one broker.
type fetchLoop struct {
	f     *kafkaFetch
	id    int32 // of the broker
	addr  string
	parts map[int32]*fetchPart // kafkaFetch.mu
	conn  *sarama.Broker       // kafkaFetch.mu; nil until the first fetch or after a failure
	wake  chan struct{}        // 1-buffered: a partition was added
	stop  chan struct{}        // closed when the loop is replaced or the fetch stops
}

// fetchPart is a claimed partition: where its next fetch starts.
type fetchPart struct {
	id    int32
	epoch uint64 // of the claim
	pos   int64  // the next offset to fetch, or a sentinel to resolve (sarama.OffsetOldest, OffsetNewest)
	size  int32  // the most bytes to ask of it in one fetch
	// reset: pos is a sentinel set after the position resetFrom fell out
	// of the partition's range (see Kafka.refeed).
	reset     bool
	resetFrom int64
	// replica is the broker the leader prefers the partition be fetched
	// from (KIP-392: a replica in the consumer's rack), or -1: the leader.
	replica int32
}

// kafkaOwnFetch reports whether a source with config sc fetches with its
// own loops: the record batches they decode came with Kafka 0.11.
func kafkaOwnFetch(sc *sarama.Config) bool { return sc.Version.IsAtLeast(sarama.V0_11_0_0) }

func newKafkaFetch(k *Kafka, client sarama.Client) *kafkaFetch {
	return &kafkaFetch{
		k: k, client: client, version: kafkaconf.FetchVersion(k.sarama.Version), metrics: k.sarama.MetricRegistry,
		loops: map[int32]*fetchLoop{}, claims: map[int32]uint64{}, done: make(chan struct{}),
	}
}

// batchSizeMetric is the name of sarama's histogram of the records of a
// partition in a fetch response.
const batchSizeMetric = "consumer-batch-size"

// noteBatchSize adds n records of a partition's fetch to sarama's
// consumer-batch-size. The histogram is looked up every time, as sarama
// does, since sarama removes it when its consumer closes.
func (f *kafkaFetch) noteBatchSize(n int) {
	if f.metrics == nil {
		return
	}
	// Made as sarama makes it (its reservoir and alpha): either makes
	// it for both.
	h, ok := f.metrics.GetOrRegister(batchSizeMetric, func() metrics.Histogram {
		return metrics.NewHistogram(metrics.NewExpDecaySample(1028, 0.015))
	}).(metrics.Histogram)
	if ok {
		h.Update(int64(n))
	}
}

// add starts fetching partition id for the claim of epoch, from offset
// from (a sentinel too).
func (f *kafkaFetch) add(id int32, epoch uint64, from int64) {
	f.mu.Lock()
	f.claims[id] = epoch
	f.mu.Unlock()
	f.route(&fetchPart{id: id, epoch: epoch, pos: from, size: f.k.sarama.Consumer.Fetch.Default, replica: -1})
}

// remove stops fetching partition id for the claim of epoch. A route of
// the claim's partition after it (by a goroutine that had taken it out of
// its loop to route it again) leaves it out.
func (f *kafkaFetch) remove(id int32, epoch uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.claims[id] == epoch {
		delete(f.claims, id)
	}
	for _, l := range f.loops {
		if p := l.parts[id]; p != nil && p.epoch == epoch {
			delete(l.parts, id)
		}
	}
}

// route hands p to the loop of its leader, or of the replica the leader
// prefers, starting one if needed. When the leader is not known, it tries
// again after Consumer.Retry.Backoff, until the claim ends or the fetch
// stops.
func (f *kafkaFetch) route(p *fetchPart) {
	var (
		leader *sarama.Broker
		err    error
	)
	if p.replica >= 0 {
		if leader, err = f.client.Broker(p.replica); err != nil {
			f.k.log.Warn("kafka partition's preferred replica unknown; fetching from the leader", "partition", p.id, "replica", p.replica, "err", err)
			p.replica = -1
		}
	}
	if p.replica < 0 {
		leader, err = f.client.Leader(f.k.cfg.Topic, p.id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if epoch, ok := f.claims[p.id]; f.stopped || !ok || epoch != p.epoch {
		return // the claim removed it, and ends after
	}
	if err != nil {
		f.k.log.Warn("kafka partition leader unknown; retrying", "partition", p.id, "err", err, "retry_in", f.k.sarama.Consumer.Retry.Backoff)
		f.wg.Go(func() {
			if f.sleep(f.k.sarama.Consumer.Retry.Backoff) {
				_ = f.client.RefreshMetadata(f.k.cfg.Topic)
				f.route(p)
			}
		})
		return
	}
	l := f.loops[leader.ID()]
	if l == nil || l.addr != leader.Addr() {
		if l != nil {
			close(l.stop) // the broker moved: its parts go with the new loop
		}
		l = &fetchLoop{f: f, id: leader.ID(), addr: leader.Addr(), parts: map[int32]*fetchPart{},
			wake: make(chan struct{}, 1), stop: make(chan struct{})}
		if old := f.loops[leader.ID()]; old != nil {
			for id, q := range old.parts {
				l.parts[id] = q
			}
			old.parts = nil
		}
		f.loops[leader.ID()] = l
		f.wg.Go(l.run)
	}
	l.parts[p.id] = p
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// failRun ends the source's Run with err, which a retry does not cure.
func (f *kafkaFetch) failRun(err error) {
	if f.fail != nil {
		f.fail(err)
	}
}

// sleep waits d, or less when the fetch stops; it reports whether it did not.
func (f *kafkaFetch) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-f.done:
		return false
	}
}

// stop ends every loop and waits for them.
func (f *kafkaFetch) stop() {
	f.mu.Lock()
	f.stopped = true
	close(f.done)
	for _, l := range f.loops {
		close(l.stop)
		if l.conn != nil {
			_ = l.conn.Close() // ends a fetch the broker holds
		}
	}
	f.mu.Unlock()
	f.wg.Wait()
	if f.metrics != nil { // as sarama's consumer does as it closes
		f.metrics.Unregister(batchSizeMetric)
	}
}

// run fetches the loop's partitions until it is stopped.
func (l *fetchLoop) run() {
	f, k := l.f, l.f.k
	undecoded := 0 // responses in a row that did not decode
	defer func() {
		f.mu.Lock()
		if l.conn != nil {
			_ = l.conn.Close()
			l.conn = nil
		}
		f.mu.Unlock()
	}()
	for {
		parts, conn := l.next()
		if parts == nil {
			return
		}
		if len(parts) == 0 {
			select {
			case <-l.wake:
				continue
			case <-l.stop:
				return
			}
		}
		if !k.waitRoom(l.stop) {
			return
		}
		req := &sarama.FetchRequest{
			Version: f.version, MinBytes: k.sarama.Consumer.Fetch.Min, MaxBytes: k.sarama.Consumer.Fetch.MaxBytes,
			MaxWaitTime: int32(k.sarama.Consumer.MaxWaitTime / time.Millisecond), Isolation: k.sarama.Consumer.IsolationLevel,
		}
		if req.Version >= 7 {
			req.SessionEpoch = -1 // no fetch session: every request names every partition
		}
		if req.Version >= 11 {
			req.RackID = k.sarama.RackID
		}
		for _, p := range parts {
			req.AddBlock(k.cfg.Topic, p.id, p.pos, p.size, -1)
		}
		resp, err := conn.Fetch(req)
		if err != nil {
			select {
			case <-l.stop:
				return
			default:
			}
			if errors.As(err, new(sarama.PacketDecodingError)) {
				// A response that does not decode (a record batch whose
				// CRC does not match) decodes no better the next time,
				// and would stall every partition of the broker: once
				// more, on a new connection, then the run fails.
				if undecoded++; undecoded > 1 {
					f.failRun(fmt.Errorf("kafka source %s: fetch from broker %s of %s: %w", k.cfg.Topic, l.addr, positions(parts), err))
					return
				}
			}
			k.log.Warn("kafka fetch failed; retrying", "broker", l.addr, "err", err, "retry_in", k.sarama.Consumer.Retry.Backoff)
			l.reroute(conn, nil)
			continue
		}
		undecoded = 0
		var moved []int32
		for _, p := range parts {
			if !l.take(p, resp.GetBlock(k.cfg.Topic, p.id)) {
				moved = append(moved, p.id)
			}
		}
		if moved != nil {
			l.reroute(nil, moved)
		}
	}
}

// next returns copies of the loop's partitions, their sentinel offsets
// resolved and past what the queue already holds, and the loop's
// connection, opened if needed; nil parts when the loop is stopped.
func (l *fetchLoop) next() ([]fetchPart, *sarama.Broker) {
	f, k := l.f, l.f.k
	for {
		select {
		case <-l.stop:
			return nil, nil
		default:
		}
		f.mu.Lock()
		parts := make([]fetchPart, 0, len(l.parts))
		var unresolved []*fetchPart
		for _, p := range l.parts {
			if fed, ok := k.fedFrom(p.id, p.epoch); ok && p.pos >= 0 && fed > p.pos {
				p.pos = fed
			}
			if p.pos < 0 {
				unresolved = append(unresolved, p)
				continue
			}
			parts = append(parts, *p)
		}
		conn := l.conn
		f.mu.Unlock()
		for _, p := range unresolved {
			off, err := f.resolve(p.id, p.pos)
			if err != nil {
				k.log.Warn("kafka partition offset not found; retrying", "partition", p.id, "err", err)
				continue
			}
			f.mu.Lock()
			if l.parts[p.id] == p && p.pos < 0 {
				if p.reset {
					k.refeed(p.id, p.epoch, p.resetFrom, off)
				} else {
					off = k.begin(p.id, p.epoch, off)
				}
				p.pos, p.reset = off, false
				parts = append(parts, *p)
			}
			f.mu.Unlock()
		}
		if len(parts) == 0 && len(unresolved) > 0 {
			if !f.sleep(k.sarama.Consumer.Retry.Backoff) {
				return nil, nil
			}
			continue
		}
		if conn == nil && len(parts) > 0 {
			c := sarama.NewBroker(l.addr)
			if err := c.Open(k.conns); err != nil {
				k.log.Warn("kafka fetch connection failed; retrying", "broker", l.addr, "err", err)
				if !f.sleep(k.sarama.Consumer.Retry.Backoff) {
					return nil, nil
				}
				continue
			}
			f.mu.Lock()
			if f.stopped {
				f.mu.Unlock()
				_ = c.Close()
				return nil, nil
			}
			l.conn, conn = c, c
			f.mu.Unlock()
		}
		return parts, conn
	}
}

// reroute routes partitions ids of the loop again, all of them when ids
// is nil, after closing conn, if not nil, after a failure: their leader
// may have moved. The loop goes on with the others at once; those are
// routed after Consumer.Retry.Backoff, with the metadata refreshed, to
// their leader (not to a replica it preferred, which may be the failure).
func (l *fetchLoop) reroute(conn *sarama.Broker, ids []int32) {
	f := l.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if conn != nil && l.conn == conn {
		_ = conn.Close()
		l.conn = nil
	}
	var parts []*fetchPart
	for id, p := range l.parts {
		if ids == nil || slices.Contains(ids, id) {
			p.replica = -1
			parts = append(parts, p)
			delete(l.parts, id)
		}
	}
	if f.stopped || len(parts) == 0 {
		return
	}
	f.wg.Go(func() {
		if !f.sleep(f.k.sarama.Consumer.Retry.Backoff) {
			return
		}
		_ = f.client.RefreshMetadata(f.k.cfg.Topic)
		for _, p := range parts {
			f.route(p)
		}
	})
}

// take queues the records of partition p's block of a response, and moves
// p's position past them. It returns false when the partition must be
// routed again (its leader moved).
func (l *fetchLoop) take(p fetchPart, block *sarama.FetchResponseBlock) bool {
	k := l.f.k
	if block == nil { // the broker did not answer for it: not its leader any more, or a broker at fault
		k.log.Warn("kafka fetch response without a partition asked for; retrying", "partition", p.id, "broker", l.addr)
		return false
	}
	switch {
	case errors.Is(block.Err, sarama.ErrNoError):
	case p.replica >= 0:
		// Any failure on a replica, out of range too (it may lag the
		// leader), sends the partition back to its leader.
		k.log.Info("kafka fetch from a preferred replica failed; back to the leader", "partition", p.id, "broker", l.addr, "err", block.Err)
		return false
	case errors.Is(block.Err, sarama.ErrOffsetOutOfRange):
		reset := k.sarama.Consumer.Offsets.Initial
		k.log.Warn("kafka offset out of range; starting again from the partition's "+map[bool]string{true: "oldest", false: "newest"}[reset == sarama.OffsetOldest]+" record",
			"partition", p.id, "offset", p.pos)
		l.setPos(&p, reset, p.size, true)
		return true
	case errors.Is(block.Err, sarama.ErrTopicAuthorizationFailed), errors.Is(block.Err, sarama.ErrInvalidMessage):
		// Not cured by a retry: the Java consumer fails its poll too.
		l.f.failRun(fmt.Errorf("kafka source %s: fetch of partition %d at offset %d from broker %s: %w", k.cfg.Topic, p.id, p.pos, l.addr, block.Err))
		return false
	case errors.Is(block.Err, sarama.ErrNotLeaderForPartition), errors.Is(block.Err, sarama.ErrLeaderNotAvailable),
		errors.Is(block.Err, sarama.ErrFencedLeaderEpoch), errors.Is(block.Err, sarama.ErrUnknownLeaderEpoch):
		k.log.Info("kafka partition leader moved; following it", "partition", p.id, "broker", l.addr, "err", block.Err)
		return false
	default:
		k.log.Warn("kafka fetch of a partition failed; retrying", "partition", p.id, "broker", l.addr, "err", block.Err)
		return false
	}
	if r := block.PreferredReadReplica; r >= 0 && r != l.id {
		// The leader sends the fetch to a replica (KIP-392, a replica of
		// the consumer's RackID): the partition goes to that broker's
		// loop at once, from where it is.
		return l.redirect(p, r)
	}
	filter := &readcommitted.Filter{}
	if k.sarama.Consumer.IsolationLevel == sarama.ReadCommitted {
		filter = readcommitted.New(block)
	}
	pos, size := p.pos, p.size
	var c *kafkaChunk
	records := 0
	// slot returns the next message of the chunk being filled, and
	// queued takes it once filled: the chunk is queued when full, and
	// queued reports false when the claim ended.
	slot := func() *sarama.ConsumerMessage {
		if c == nil {
			c = kafkaChunks.Get().(*kafkaChunk)
			c.partition, c.epoch, c.off, c.hwm = p.id, p.epoch, 0, block.HighWaterMarkOffset
		}
		return c.message()
	}
	queued := func(m *sarama.ConsumerMessage) bool {
		for _, ic := range k.sarama.Consumer.Interceptors {
			kafkaIntercept(ic, m)
		}
		pos = m.Offset + 1
		records++
		if len(c.msgs) == kafkaMaxChunk {
			ok := k.push(c, l.stop)
			c = nil
			return ok
		}
		return true
	}
	for _, set := range block.RecordsSet {
		if set.MsgSet != nil { // the message format before Kafka 0.11, as sarama's consumer reads it
			for _, mb := range set.MsgSet.Messages {
				inner := mb.Messages()
				for _, im := range inner {
					off, ts := im.Offset, im.Msg.Timestamp
					if im.Msg.Version >= 1 {
						off += mb.Offset - inner[len(inner)-1].Offset
						if im.Msg.LogAppendTime {
							ts = mb.Msg.Timestamp
						}
					}
					if off < pos {
						continue
					}
					m := slot()
					*m = sarama.ConsumerMessage{Topic: k.cfg.Topic, Partition: p.id, Key: im.Msg.Key, Value: im.Msg.Value,
						Offset: off, Timestamp: ts, BlockTimestamp: mb.Msg.Timestamp}
					if !queued(m) {
						return true // the claim ended
					}
				}
				pos = max(pos, mb.Offset+1)
			}
			continue
		}
		b := set.RecordBatch
		if b == nil {
			continue
		}
		next := b.FirstOffset + int64(b.LastOffsetDelta) + 1
		if b.PartialTrailingRecord || len(b.Records) == 0 && next <= pos {
			continue
		}
		if filter.Skip(b) {
			pos = max(pos, next)
			continue
		}
		for _, r := range b.Records {
			off := b.FirstOffset + r.OffsetDelta
			if off < pos {
				continue
			}
			m := slot()
			*m = sarama.ConsumerMessage{Topic: k.cfg.Topic, Partition: p.id, Key: r.Key, Value: r.Value,
				Offset: off, Timestamp: b.FirstTimestamp.Add(r.TimestampDelta), Headers: r.Headers}
			if b.LogAppendTime {
				m.Timestamp = b.MaxTimestamp
			}
			if !queued(m) {
				return true // the claim ended
			}
		}
		pos = max(pos, next)
	}
	if c != nil && !k.push(c, l.stop) {
		return true
	}
	l.f.noteBatchSize(records)
	if records == 0 {
		k.noteHWM(p.id, p.epoch, block.HighWaterMarkOffset)
		if pos == p.pos && block.HighWaterMarkOffset > pos && (len(block.RecordsSet) > 0 || block.Partial) {
			// Bytes came but no whole batch (sarama keeps none of a
			// batch cut short: Partial): ask for more next time.
			size = min(max(2*size, size+1), kafkaFetchMax(k.sarama))
		}
	} else {
		size = k.sarama.Consumer.Fetch.Default
	}
	l.setPos(&p, pos, size, false)
	return true
}

// resolve returns the offset the sentinel at (sarama.OffsetOldest,
// OffsetNewest) stands for in partition id. Read committed, the newest is
// the last stable offset, before the first record of a transaction still
// open, as a Kafka consumer starts: the high watermark, which sarama's
// GetOffset gives, would skip for good the records of a transaction
// committed after the start.
func (f *kafkaFetch) resolve(id int32, at int64) (int64, error) {
	k := f.k
	if at != sarama.OffsetNewest || k.sarama.Consumer.IsolationLevel != sarama.ReadCommitted {
		return f.client.GetOffset(k.cfg.Topic, id, at)
	}
	req := sarama.NewOffsetRequest(k.sarama.Version)
	if req.Version < 2 { // no isolation level before
		return f.client.GetOffset(k.cfg.Topic, id, at)
	}
	leader, err := f.client.Leader(k.cfg.Topic, id)
	if err != nil {
		return 0, err
	}
	req.IsolationLevel = sarama.ReadCommitted
	req.AddBlock(k.cfg.Topic, id, at, 1)
	resp, err := leader.GetAvailableOffsets(req)
	if err != nil {
		return 0, err
	}
	b := resp.GetBlock(k.cfg.Topic, id)
	switch {
	case b == nil:
		return 0, sarama.ErrIncompleteResponse
	case !errors.Is(b.Err, sarama.ErrNoError):
		return 0, b.Err
	}
	return b.Offset, nil
}

// redirect routes the loop's partition p (a copy) to replica, if the same
// claim still has it where p was; it reports true: p needs no reroute.
func (l *fetchLoop) redirect(p fetchPart, replica int32) bool {
	f := l.f
	f.mu.Lock()
	q := l.parts[p.id]
	if q == nil || q.epoch != p.epoch || q.pos != p.pos {
		f.mu.Unlock()
		return true
	}
	delete(l.parts, p.id)
	q.replica = replica
	f.mu.Unlock()
	f.k.log.Info("kafka partition fetched from the replica its leader prefers", "partition", p.id, "leader", l.addr, "replica", replica)
	f.route(q)
	return true
}

// setPos moves the position of the loop's partition p (a copy), if the
// same claim still has it there: to pos, or to the sentinel pos after a
// reset from p's position.
func (l *fetchLoop) setPos(p *fetchPart, pos int64, size int32, reset bool) {
	l.f.mu.Lock()
	defer l.f.mu.Unlock()
	if q := l.parts[p.id]; q != nil && q.epoch == p.epoch && q.pos == p.pos {
		q.pos, q.size, q.reset, q.resetFrom = pos, size, reset, p.pos
	}
}

// positions names the partitions of a fetch and their offsets, as
// "partition 0 at offset 12, partition 3 at offset 40".
func positions(parts []fetchPart) string {
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "partition %d at offset %d", p.id, p.pos)
	}
	return b.String()
}

// kafkaFetchMax is the most bytes a fetch asks of one partition.
func kafkaFetchMax(sc *sarama.Config) int32 {
	if sc.Consumer.Fetch.Max > 0 {
		return sc.Consumer.Fetch.Max
	}
	return 1<<31 - 1
}

// kafkaIntercept applies a consumer interceptor as sarama does: a panic
// in it is logged by sarama's logger and the message goes on.
func kafkaIntercept(ic sarama.ConsumerInterceptor, m *sarama.ConsumerMessage) {
	defer func() {
		if r := recover(); r != nil {
			sarama.Logger.Println(fmt.Sprintf("consumer interceptor %T panicked: %v", ic, r))
		}
	}()
	ic.OnConsume(m)
}

// message returns the next message of c, from its slab.
func (c *kafkaChunk) message() *sarama.ConsumerMessage {
	if len(c.slab) == cap(c.slab) {
		c.slab = make([]sarama.ConsumerMessage, 0, kafkaMaxChunk)
	}
	c.slab = c.slab[:len(c.slab)+1]
	m := &c.slab[len(c.slab)-1]
	c.msgs = append(c.msgs, m)
	return m
}
