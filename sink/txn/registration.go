package txn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/kafkaconf"
)

// registration is one producer epoch of the transactional ID: a client, the
// producer ID and epoch the transaction coordinator gave, and what the
// open transaction holds. Its records go out through BatchProducers, one
// per topic, in one produce request per leader broker, instead of through
// sarama's AsyncProducer, whose goroutines and channels cost several
// times as much CPU per record. The transaction's requests to the
// coordinators are sarama's request types.
//
// A registration is used by one goroutine at a time: the Producer's callers
// under its lock, or a delivery those callers wait for (flight).
type registration struct {
	id      string
	cfg     *sarama.Config
	timeout time.Duration // the transaction timeout
	client  sarama.Client
	dial    *kafkaconf.CutDialer // of the client's connections, closed by stop
	pid     int64
	epoch   int16

	producers map[string]*kafkaconf.BatchProducer
	inTxn     map[string]map[int32]bool // partitions added to the open transaction
	offsets   []groupOffsets            // added, sent as the transaction commits
	added     bool                      // the coordinator knows of the open transaction
	flight    chan struct{}             // closed when the last delivery has ended; nil before
	// stale is set once a broker refused a request of s for its epoch
	// (INVALID_PRODUCER_EPOCH), or a partition leader a write to a
	// partition added to the transaction for the transaction being over
	// (INVALID_TXN_STATE): the coordinator ended the transaction and
	// moved the epoch on, as it does when it times the transaction out,
	// and when a newer producer registers the ID; only the coordinator
	// can tell which, by granting or refusing a bump of the epoch of s
	// (see register). It answers an EndTxn of s PRODUCER_FENCED either
	// way: the abort of a stale registration sends none.
	stale bool
	// committing: the commit of the open transaction was asked for
	// (EndTxn), and its answers were lost, or it was refused but for
	// having no transaction open (INVALID_TXN_STATE), which says it was
	// not committed.
	committing bool

	// halt is done once stopRetries, or stop, is called; sends is done
	// with it, or once stopSends is: it gives up the deliveries (their
	// records and the partitions they add).
	halt, sends             context.Context
	haltCancel, sendsCancel context.CancelFunc
}

type groupOffsets struct {
	group   *sarama.ConsumerGroupMetadata
	offsets map[string][]*sarama.PartitionOffsetMetadata
}

// producerEpoch is a producer ID and epoch the coordinator gave.
type producerEpoch struct {
	pid   int64
	epoch int16
	// stale: the brokers refused the epoch (registration.stale), and
	// the next registration must be a bump of it, never the ID
	// registered afresh.
	stale bool
}

// errNoBump fails the registration that must bump a stale epoch
// when the coordinator cannot bump one (InitProducerId before version 3,
// Kafka 2.5): registering the ID afresh instead would fence off the
// newer producer, if it was one that moved the epoch on.
var errNoBump = errors.New("the coordinator cannot bump the producer's epoch (KIP-360, Kafka 2.5), to tell a transaction timed out from a producer fenced off")

// register connects and registers the transactional ID, which fences
// off the producers that had it and aborts what they left open.
//
// With resume, the ID and epoch of this producer's registration before,
// whose transaction was aborted, and Kafka 2.5 or later, it asks for that
// epoch to be bumped (KIP-360): the coordinator refuses, PRODUCER_FENCED,
// when a newer producer registered the ID since, which the new epoch
// would fence off in turn, letting this one write and commit as a zombie.
// A stale resume must be bumped: without Kafka 2.5 or later, in the
// configuration and at the coordinator (sarama would send an older
// version of the request, without the producer ID and epoch, silently),
// register fails with errNoBump.
//
// It returns when ctx is done, with ctx's cause, at once: stop closes its
// connections under the request in progress.
func register(ctx context.Context, brokers []string, id string, timeout time.Duration, cfg *sarama.Config, resume *producerEpoch) (*registration, error) {
	req := &sarama.InitProducerIDRequest{Version: kafkaconf.InitProducerIDVersion(cfg.Version), TransactionalID: &id, TransactionTimeout: timeout, ProducerID: -1, ProducerEpoch: -1}
	if resume != nil && req.Version >= 3 {
		req.ProducerID, req.ProducerEpoch = resume.pid, resume.epoch
	}
	mustBump := resume != nil && resume.stale
	if mustBump && req.Version < 3 {
		return nil, errNoBump
	}
	dial := kafkaconf.NewCutDialer(cfg)
	own := *cfg
	own.Net.Proxy.Enable, own.Net.Proxy.Dialer = true, dial
	// sarama's client retries a metadata fetch, and a coordinator's
	// lookup, after backoffs that nothing ends: once stopped, the
	// connections closed, its retries fail at once, and go without.
	backoff, base := cfg.Metadata.Retry.BackoffFunc, cfg.Metadata.Retry.Backoff
	own.Metadata.Retry.BackoffFunc = func(retries, maxRetries int) time.Duration {
		switch {
		case dial.Closed():
			return 0
		case backoff != nil:
			return backoff(retries, maxRetries)
		}
		return base
	}
	s := &registration{id: id, cfg: &own, timeout: timeout, dial: dial, producers: map[string]*kafkaconf.BatchProducer{}, inTxn: map[string]map[int32]bool{}}
	s.halt, s.haltCancel = context.WithCancel(context.Background())
	s.sends, s.sendsCancel = context.WithCancel(s.halt)
	// Watched from the start: the client's first fetch of the brokers'
	// metadata, which nothing cancels, ends as stop closes its connection.
	watch := context.AfterFunc(ctx, s.stop)
	client, err := sarama.NewClient(brokers, s.cfg)
	if err != nil {
		if !watch() {
			err = context.Cause(ctx)
		}
		s.close()
		return nil, err
	}
	s.client = client
	err = s.toCoordinator("init producer id", s.halt.Done(), s.txnCoordinator(), func(b *sarama.Broker) (error, error) {
		if mustBump {
			can, err := bumps(b)
			if err != nil {
				return nil, err
			}
			if !can {
				return errNoBump, nil
			}
		}
		resp, err := b.InitProducerID(req)
		if err != nil {
			return nil, err
		}
		s.pid, s.epoch = resp.ProducerID, resp.ProducerEpoch
		return kerr(resp.Err), nil
	})
	if !watch() {
		// Stopped: what it answered is of no use.
		err = context.Cause(ctx)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// close closes the connections of s, then its client: its requests in
// progress end, and so does a metadata fetch of the client's own, which
// its Close waits for.
func (s *registration) close() error {
	s.dial.Close()
	if s.client == nil {
		return nil
	}
	return s.client.Close()
}

// bumps reports whether broker b takes InitProducerId version 3 or later,
// which carries the producer ID and epoch to bump.
func bumps(b *sarama.Broker) (bool, error) {
	resp, err := b.ApiVersions(&sarama.ApiVersionsRequest{})
	if err != nil {
		return false, err
	}
	if resp.ErrorCode != 0 {
		return false, sarama.KError(resp.ErrorCode)
	}
	for _, k := range resp.ApiKeys {
		if k.ApiKey == initProducerIDKey {
			return k.MaxVersion >= 3, nil
		}
	}
	return false, nil
}

// initProducerIDKey is the API key of InitProducerId.
const initProducerIDKey = 22

// stop makes the requests of s fail, without retries, as stopRetries
// does, and closes the connections of s, which ends the request in
// progress, if any, and the lookup of a coordinator under it, at once,
// instead of when it is answered or times out (Net.ReadTimeout). It gives
// up a registration, or a commit or abort that Close gives up (see
// Producer.endClosing); s is of no use after it but to be closed. It is
// safe to call more than once.
func (s *registration) stop() {
	s.stopRetries()
	s.dial.Close()
}

// stopRetries makes the requests of s to the coordinators fail, without
// retries, once the one in progress, if any, has been answered or has
// timed out, and so the deliveries of s, which an abort waits for. It is
// safe to call more than once.
func (s *registration) stopRetries() {
	s.haltCancel() // and so sends
}

// stopSends makes the deliveries of s, and only them, give up their
// retries, once the request in progress, if any, has been answered or
// has timed out (Net.ReadTimeout): the commit or abort of s goes on,
// and waits for that answer, so that no record of the transaction lands
// after its end. It is safe to call more than once.
func (s *registration) stopSends() { s.sendsCancel() }

// errCommitted fails the abort of a transaction whose commit went through
// (see registration.end).
var errCommitted = errors.New("the transaction was committed")

// errStale wraps the failure of a Send that made its registration stale.
var errStale = errors.New("the coordinator ended the transaction and moved the producer's epoch on")

// errStopped fails the requests of a registration stopped.
var errStopped = errors.New("given up")

// producer returns the registration's producer to topic.
func (s *registration) producer(topic string) (*kafkaconf.BatchProducer, error) {
	if bp := s.producers[topic]; bp != nil {
		return bp, nil
	}
	bp, err := kafkaconf.NewBatchProducer(s.client, topic)
	if err != nil {
		return nil, err
	}
	bp.SetTxn(&kafkaconf.Txn{ID: s.id, PID: s.pid, Epoch: s.epoch, Add: s.addPartitions, Halt: s.sends.Done()})
	s.producers[topic] = bp
	return bp, nil
}

// deliver sends msgs, each to its topic, and returns those not delivered.
func (s *registration) deliver(msgs []*sarama.ProducerMessage) []*sarama.ProducerError {
	var failed []*sarama.ProducerError
	for len(msgs) > 0 {
		// Most Sends are of one topic: take the run of the first's.
		topic := msgs[0].Topic
		n := 1
		for n < len(msgs) && msgs[n].Topic == topic {
			n++
		}
		bp, err := s.producer(topic)
		if err != nil {
			for _, m := range msgs[:n] {
				failed = append(failed, &sarama.ProducerError{Msg: m, Err: err})
			}
		} else {
			failed = append(failed, bp.Send(msgs[:n])...)
		}
		msgs = msgs[n:]
	}
	for _, e := range failed {
		if endedBehind(e.Err) {
			s.stale = true
		}
	}
	return failed
}

// endedBehind reports whether a record's failure says that the
// coordinator ended the transaction behind the producer's back (see
// registration.stale). A partition leader's INVALID_TXN_STATE is its
// answer as such, unwrapped; the coordinator's, to AddPartitionsToTxn,
// is wrapped, and says nothing of the epoch.
func endedBehind(err error) bool {
	return errors.Is(err, sarama.ErrInvalidProducerEpoch) || err == sarama.ErrInvalidTxnState
}

// addPartitions adds those of parts not in the open transaction yet.
func (s *registration) addPartitions(topic string, parts []int32) error {
	in := s.inTxn[topic]
	var todo []int32
	for _, p := range parts {
		if !in[p] {
			todo = append(todo, p)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	req := &sarama.AddPartitionsToTxnRequest{Version: kafkaconf.TxnVersion(s.cfg.Version), TransactionalID: s.id, ProducerID: s.pid, ProducerEpoch: s.epoch,
		TopicPartitions: map[string][]int32{topic: todo}}
	err := s.toCoordinator("add partitions", s.sends.Done(), s.txnCoordinator(), func(b *sarama.Broker) (error, error) {
		resp, err := b.AddPartitionsToTxn(req)
		if err != nil {
			return nil, err
		}
		// One partition refused, the others are not attempted: the
		// refusal is the error to act on.
		var first error
		for _, pe := range resp.Errors[topic] {
			switch {
			case pe.Err == sarama.ErrNoError:
			case pe.Err != sarama.ErrOperationNotAttempted:
				return pe.Err, nil
			case first == nil:
				first = pe.Err
			}
		}
		return first, nil
	})
	// Once asked, the coordinator may hold partitions of the transaction:
	// it must be ended, even when the answer was lost.
	s.added = true
	if err != nil {
		return err
	}
	if in == nil {
		in = map[int32]bool{}
		s.inTxn[topic] = in
	}
	for _, p := range todo {
		in[p] = true
	}
	return nil
}

// commit sends the offsets added to the transaction, then commits it.
func (s *registration) commit() error {
	for len(s.offsets) > 0 {
		o := s.offsets[0]
		if err := s.sendOffsets(o); err != nil {
			return err
		}
		s.offsets = s.offsets[1:]
	}
	return s.end(true)
}

// end ends the open transaction at the coordinator, if it knows of one.
//
// An abort after a commit whose answers were lost, or that was refused
// but for INVALID_TXN_STATE (a commit refused so was not committed),
// fails with errCommitted when the coordinator refuses it for having no
// transaction open (INVALID_TXN_STATE): with the epoch of s, that means
// the transaction's commit went through, for the commit is asked for only
// once the transaction is open at the coordinator (its partitions and
// offsets added), and then only a commit or an abort of s ends it there
// (a timeout or a newer producer would have moved the epoch on, and the
// abort would be refused for that).
func (s *registration) end(commit bool) error {
	if s.added {
		req := &sarama.EndTxnRequest{Version: kafkaconf.TxnVersion(s.cfg.Version), TransactionalID: s.id, ProducerID: s.pid, ProducerEpoch: s.epoch, TransactionResult: commit}
		s.committing = s.committing || commit
		err := s.toCoordinator("end transaction", s.halt.Done(), s.txnCoordinator(), func(b *sarama.Broker) (error, error) {
			resp, err := b.EndTxn(req)
			if err != nil {
				return nil, err
			}
			return kerr(resp.Err), nil
		})
		if err != nil {
			if errors.Is(err, sarama.ErrInvalidTxnState) {
				if !commit && s.committing {
					return fmt.Errorf("%w (%w)", errCommitted, err)
				}
				// A commit refused so was not committed: the
				// coordinator answers a commit of a transaction
				// it committed, asked again, with success.
				s.committing = false
			}
			return err
		}
	}
	s.added, s.offsets, s.committing = false, nil, false
	clear(s.inTxn)
	return nil
}

// sendOffsets adds the group's offsets to the transaction
// (AddOffsetsToTxn), then sends them to the group's coordinator
// (TxnOffsetCommit), with the group's generation and member, which lets
// the coordinator refuse the offsets of a generation that has ended.
func (s *registration) sendOffsets(o groupOffsets) error {
	g := o.group
	add := &sarama.AddOffsetsToTxnRequest{Version: kafkaconf.TxnVersion(s.cfg.Version), TransactionalID: s.id, ProducerID: s.pid, ProducerEpoch: s.epoch, GroupID: g.GroupID}
	s.added = true
	err := s.toCoordinator("add offsets", s.halt.Done(), s.txnCoordinator(), func(b *sarama.Broker) (error, error) {
		resp, err := b.AddOffsetsToTxn(add)
		if err != nil {
			return nil, err
		}
		return kerr(resp.Err), nil
	})
	if err != nil {
		return err
	}
	req := &sarama.TxnOffsetCommitRequest{Version: kafkaconf.TxnOffsetCommitVersion(s.cfg.Version), TransactionalID: s.id, GroupID: g.GroupID, ProducerID: s.pid, ProducerEpoch: s.epoch, Topics: o.offsets}
	if req.Version >= 3 {
		req.GenerationID, req.MemberID, req.GroupInstanceID = g.GenerationID, g.MemberID, g.GroupInstanceID
	}
	groupCoordinator := coordinatorOf{
		get:     func() (*sarama.Broker, error) { return s.client.Coordinator(g.GroupID) },
		refresh: func() error { return s.client.RefreshCoordinator(g.GroupID) },
	}
	return s.toCoordinator("commit offsets of group "+g.GroupID, s.halt.Done(), groupCoordinator, func(b *sarama.Broker) (error, error) {
		resp, err := b.TxnOffsetCommit(req)
		if err != nil {
			return nil, err
		}
		for _, pes := range resp.Topics {
			for _, pe := range pes {
				if pe.Err != sarama.ErrNoError {
					return pe.Err, nil
				}
			}
		}
		return nil, nil
	})
}

// coordinatorOf finds a coordinator, and looks it up again.
type coordinatorOf struct {
	get     func() (*sarama.Broker, error)
	refresh func() error
}

func (s *registration) txnCoordinator() coordinatorOf {
	return coordinatorOf{
		get:     func() (*sarama.Broker, error) { return s.client.TransactionCoordinator(s.id) },
		refresh: func() error { return s.client.RefreshTransactionCoordinator(s.id) },
	}
}

// toCoordinator runs call on the coordinator c finds, and again, after a
// backoff, while it fails with an error that a retry may pass
// (Producer.Transaction.Retry): a connection lost, a coordinator that
// moved or is loading, the transaction before still completing. call
// returns the Kafka error of the response, then the request's error.
// Once halt is closed (stop, or stopSends for the requests of a
// delivery), it makes no further attempt.
//
// The transaction before still completing (CONCURRENT_TRANSACTIONS) is
// not counted among Retry.Max's attempts: as Kafka's own producer does,
// it is asked again every 20ms until it has completed, which takes as
// long as its markers take to be written, for up to the transaction
// timeout, past which the coordinator would have aborted it anyway.
func (s *registration) toCoordinator(what string, halt <-chan struct{}, c coordinatorOf, call func(*sarama.Broker) (error, error)) error {
	r := s.cfg.Producer.Transaction.Retry
	var (
		last             error
		retries, tries   int
		concurrentBefore time.Time // the deadline of CONCURRENT_TRANSACTIONS' retries
	)
	for ; ; tries++ {
		if tries > 0 {
			concurrent := errors.Is(last, sarama.ErrConcurrentTransactions)
			if concurrent && concurrentBefore.IsZero() {
				concurrentBefore = time.Now().Add(s.timeout)
			}
			if !concurrent {
				retries++
			}
			if retries > r.Max || concurrent && time.Now().After(concurrentBefore) {
				break
			}
			d := r.Backoff
			if r.BackoffFunc != nil {
				d = r.BackoffFunc(max(retries, 1), r.Max)
			}
			if concurrent {
				// The transaction before is being completed: a matter of
				// the coordinator writing its markers.
				d = min(d, concurrentBackoff)
			}
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-halt:
				t.Stop()
			}
		}
		if halted(halt) {
			if last == nil {
				return fmt.Errorf("%s: %w", what, errStopped)
			}
			return fmt.Errorf("%s: %w (%w)", what, errStopped, last)
		}
		b, err := c.get()
		if err != nil {
			last = err
			// Once halted, a lookup is of no use.
			if !halted(halt) {
				_ = c.refresh()
			}
			continue
		}
		kerr, err := call(b)
		switch {
		case err != nil:
			// The connection is in doubt: the next attempt opens another.
			_ = b.Close()
			if !halted(halt) {
				_ = c.refresh()
			}
			last = err
			continue
		case kerr == nil:
			return nil
		}
		last = kerr
		if errors.Is(kerr, sarama.ErrInvalidProducerEpoch) {
			s.stale = true
		}
		switch {
		case errors.Is(kerr, sarama.ErrNotCoordinatorForConsumer), errors.Is(kerr, sarama.ErrConsumerCoordinatorNotAvailable):
			_ = c.refresh()
		case errors.Is(kerr, sarama.ErrOffsetsLoadInProgress), errors.Is(kerr, sarama.ErrConcurrentTransactions),
			errors.Is(kerr, sarama.ErrRequestTimedOut), errors.Is(kerr, sarama.ErrUnknownTopicOrPartition):
		default:
			return fmt.Errorf("%s: %w", what, kerr)
		}
	}
	return fmt.Errorf("%s: %d attempts: %w", what, tries, last)
}

// halted reports whether halt is closed.
func halted(halt <-chan struct{}) bool {
	select {
	case <-halt:
		return true
	default:
		return false
	}
}

// concurrentBackoff is the longest wait before a request refused because
// the transaction before is still completing is sent again.
const concurrentBackoff = 20 * time.Millisecond

// kerr returns nil for ErrNoError, else e.
func kerr(e sarama.KError) error {
	if e == sarama.ErrNoError {
		return nil
	}
	return e
}
