package txn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/stream"
)

// DefaultTimeout is how long the brokers let a transaction stay open before
// they abort it, unless Config.Timeout says otherwise.
const DefaultTimeout = time.Minute

// Config configures a transactional Producer. Brokers and ID are required.
type Config struct {
	// Brokers are the "host:port" addresses to bootstrap from.
	Brokers []string
	// ID is the transactional.id. It must name the process, not the run:
	// the same after a restart, so that the restarted process fences off
	// the one it replaces and aborts what that one left open, and
	// different for every process that runs at the same time (see the
	// package doc).
	ID string
	// Timeout is how long the brokers let a transaction stay open before
	// they abort it (transaction.timeout.ms): a batch must be written and
	// committed within it. Default DefaultTimeout.
	Timeout time.Duration
	// Logger receives aborts and producer restarts. Nil discards them.
	Logger *slog.Logger
	// Sarama is the client and producer configuration to start from: TLS,
	// SASL, the Kafka version, the partitioner, compression,
	// MaxMessageBytes, interceptors, Producer.Retry (for the records) and
	// Producer.Transaction.Retry (for the requests to the coordinators;
	// a coordinator still completing the transaction before is asked
	// again every 20ms for up to Timeout instead, as Kafka's producer
	// does).
	// The producer copies it and sets what a transactional producer
	// needs: Producer.Idempotent, Net.MaxOpenRequests 1,
	// Producer.RequiredAcks WaitForAll, Producer.Transaction.ID and
	// Timeout. Producer.Flush does not apply: a Send goes out at once.
	// Nil starts from sarama.NewConfig(). The Kafka version must be 0.11
	// or later; 2.5 or later (sarama's default is) fences offsets of a
	// consumer group generation that has ended.
	Sarama *sarama.Config
	// CloseTimeout is how long Close waits for what it ends before it
	// gives it up (see Close). Default CloseTimeout.
	CloseTimeout time.Duration
}

// Producer is a Kafka producer whose writes go in transactions, one at a
// time: a pipeline's Kafka sinks (sink.KafkaConfig.Transaction), its
// changelog (changelog.Config.Transaction) and its Kafka source's offsets
// (source.KafkaConfig.Transaction) all write through one Producer, and
// the pipeline (stream.WithTransaction) begins and commits a transaction
// per batch, so that a batch's output, state and offsets are committed
// together or not at all.
//
// The records of a Send go out in one produce request per leader broker
// (more only past the size limits), built with sarama's request types
// and sent with sarama's client, as the Kafka sink's own producer sends
// them; the transaction's requests to its coordinator (registering the
// ID, adding partitions and offsets, ending it) are sarama's too.
//
// New connects to nothing; Init, or the first Begin, connects and
// registers ID with the brokers. Close aborts an open transaction and
// disconnects. The methods are safe for concurrent use.
type Producer struct {
	cfg    Config
	sarama *sarama.Config
	log    *slog.Logger

	mu     sync.Mutex
	reg    *registration // nil until Init or Begin, and after a failure
	open   bool          // a transaction is open
	failed error         // the first failure in the open transaction
	fenced error         // set once the brokers fenced the producer off, for good
	onEnd  []func(committed bool)
	// resume is the producer ID and epoch of the registration an abort
	// ended and closed, for the next one to bump (see register); nil
	// when that abort may not have ended the transaction.
	resume *producerEpoch
	// letGo are registrations Commit or Abort stopped waiting for: they
	// finish their commit or abort and close in the background; Close
	// stops them (adrift) and waits for them. None is let go once Close
	// has started (see endWithin), so that letGo.Go never races Close's
	// letGo.Wait.
	letGo  sync.WaitGroup
	adrift []*registration
	// registered counts the registrations, for learnt.
	registered int

	// closing is closed as Close starts, which stops a registration in
	// progress (see init); closeBy is then when Close gives up what is
	// left.
	closing   chan struct{}
	closeOnce sync.Once
	closeBy   time.Time
}

var _ stream.Transaction = (*Producer)(nil)

// Errors returned, wrapped, by the Producer's methods.
var (
	// ErrClosed: the Producer was closed, or Close has started.
	ErrClosed = errors.New("txn: closed")
	// ErrNoTransaction: Send or AddOffsets outside a transaction.
	ErrNoTransaction = errors.New("txn: no transaction open")
	// ErrOpen: Begin while a transaction is open.
	ErrOpen = errors.New("txn: a transaction is already open")
	// ErrFenced: by Abort, Commit and Send, and then by every Begin and
	// Init, once the brokers have fenced the producer off: a newer one
	// registered the transactional ID (PRODUCER_FENCED, or, after a
	// write refused for a stale epoch, the bump of the producer's epoch
	// refused or impossible: see the package doc; Kafka refuses it after
	// a transaction timed out too). Starting a new producer would
	// fence off the newer one in turn: a Producer fenced off stays
	// stopped; a process that must go on creates a new one.
	ErrFenced = errors.New("txn: fenced off by a newer producer with the same transactional id")
)

// New returns a Producer. It validates cfg and connects to nothing.
func New(cfg Config) (*Producer, error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("txn: no brokers")
	case cfg.ID == "":
		return nil, errors.New("txn: no transactional id")
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("txn %s: timeout %v", cfg.ID, cfg.Timeout)
	case cfg.CloseTimeout < 0:
		return nil, fmt.Errorf("txn %s: close timeout %v", cfg.ID, cfg.CloseTimeout)
	}
	cfg.Brokers = slices.Clone(cfg.Brokers)
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = CloseTimeout
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	sc := kafkaconf.Producer(cfg.Sarama)
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Transaction.ID = cfg.ID
	sc.Producer.Transaction.Timeout = cfg.Timeout
	sc.Producer.Partitioner = withManual(sc.Producer.Partitioner)
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("txn %s: sarama config: %w", cfg.ID, err)
	}
	if err := kafkaconf.RecordBatches(sc.Version); err != nil {
		return nil, fmt.Errorf("txn %s: %w", cfg.ID, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Producer{cfg: cfg, sarama: sc, log: log.With("transactional_id", cfg.ID), closing: make(chan struct{})}, nil
}

// ID returns the transactional.id.
func (p *Producer) ID() string { return p.cfg.ID }

// Init connects and registers ID with the brokers, unless it has
// already: a producer that used ID before, such as the process this one
// restarts, is fenced off, and the transaction it left open is aborted.
// Call it before reading what such a producer wrote (a changelog Restore
// does). It blocks until the brokers answer, or until ctx is done, or
// Close starts: it fails with ErrClosed then, at once, the request in
// progress, if any, ended, its connection closed (the first fetch of the
// brokers' metadata too, as it connects).
func (p *Producer) Init(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.init(ctx)
}

func (p *Producer) init(ctx context.Context) error {
	if p.isClosing() {
		return fmt.Errorf("txn %s: %w", p.cfg.ID, ErrClosed)
	}
	if p.fenced != nil {
		return p.fenced
	}
	if p.reg != nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("txn %s: init: %w", p.cfg.ID, context.Cause(ctx))
	}
	rctx, stop := p.untilClosing(ctx)
	s, err := register(rctx, p.cfg.Brokers, p.cfg.ID, p.cfg.Timeout, p.sarama, p.resume)
	stop()
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return fmt.Errorf("txn %s: init producer: %w", p.cfg.ID, err)
		}
		// INVALID_PRODUCER_EPOCH to InitProducerId is a refusal, as
		// PRODUCER_FENCED is (Kafka before 2.7 answers it instead).
		if p.fence(err) || errors.Is(err, sarama.ErrInvalidProducerEpoch) || errors.Is(err, errNoBump) {
			return p.fenceOff(err)
		}
		if errors.Is(err, sarama.ErrInvalidProducerIDMapping) {
			if p.resume != nil && p.resume.stale {
				// Nothing tells a timeout from a fence then:
				// registering afresh could fence off a newer
				// producer.
				return p.fenceOff(err)
			}
			// The coordinator no longer knows the producer ID (it
			// expired): the next attempt registers the ID afresh.
			p.resume = nil
		}
		return fmt.Errorf("txn %s: init producer on %v: %w", p.cfg.ID, p.cfg.Brokers, err)
	}
	p.reg, p.resume = s, nil
	p.registered++
	return nil
}

// Begin implements stream.Transaction: it opens a transaction, connecting
// first if needed (see Init: Close stops that too). The brokers hear of
// the transaction with its first write. Once Close has started, it fails
// with ErrClosed.
func (p *Producer) Begin(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.isClosing(): // a transaction open is Close's to abort
		return fmt.Errorf("txn %s: %w", p.cfg.ID, ErrClosed)
	case p.open:
		return fmt.Errorf("txn %s: begin: %w", p.cfg.ID, ErrOpen)
	}
	if err := p.init(ctx); err != nil {
		return err
	}
	p.open, p.failed = true, nil
	return nil
}

// OnEnd calls f once, when the open transaction ends: with true once it is
// committed, with false when it is aborted or its commit fails. f is
// called without the Producer's lock held. Without an open transaction,
// OnEnd does nothing.
func (p *Producer) OnEnd(f func(committed bool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open {
		p.onEnd = append(p.onEnd, f)
	}
}

// Send writes msgs in the open transaction and returns when the brokers
// have acknowledged all of them: they are in the log, to be seen by
// read_committed consumers once the transaction commits. It overwrites
// each message's Metadata, and sets each one's Partition and Offset. A
// message not delivered, or ctx done first, fails the transaction: Commit
// will fail, and it must be aborted. Once Close has started, Send fails
// with ErrClosed, and so fails the open transaction, which Close aborts;
// so does a Send in progress, at once: its delivery makes no further
// attempt, and Close's abort waits for the request in progress, if any, to
// be answered, until Close gives up (Config.CloseTimeout) and closes its
// connection.
func (p *Producer) Send(ctx context.Context, msgs []*sarama.ProducerMessage) error {
	return p.send(ctx, msgs, false)
}

// SendToPartitions is Send with each message written to its Partition,
// whatever the configured partitioner: a changelog's records go to the
// partition of their state.
func (p *Producer) SendToPartitions(ctx context.Context, msgs []*sarama.ProducerMessage) error {
	return p.send(ctx, msgs, true)
}

func (p *Producer) send(ctx context.Context, msgs []*sarama.ProducerMessage, manual bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.usable(); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		p.failed = fmt.Errorf("txn %s: none of %d records sent: %w", p.cfg.ID, len(msgs), context.Cause(ctx))
		return p.failed
	}
	token := &send{manual: manual} // read by the partitioner
	for _, m := range msgs {
		m.Metadata = token
	}
	s := p.reg
	done := make(chan struct{})
	s.flight = done
	var failed []*sarama.ProducerError
	go func() {
		defer close(done)
		kafkaconf.Intercept(p.sarama, msgs)
		failed = s.deliver(msgs)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		// The delivery goes on: Commit fails, and the abort waits for it.
		p.failed = fmt.Errorf("txn %s: %d records: %w", p.cfg.ID, len(msgs), context.Cause(ctx))
		return p.failed
	case <-p.closing:
		// Close waits for p.mu to abort the transaction: the delivery
		// gives up its retries, and the abort waits for the request in
		// progress, if any.
		s.stopSends()
		p.failed = fmt.Errorf("txn %s: %d records: %w", p.cfg.ID, len(msgs), ErrClosed)
		return p.failed
	}
	if len(failed) > 0 {
		e := failed[0]
		p.failed = fmt.Errorf("txn %s: %d of %d records not written; first to %s/%d: %w", p.cfg.ID, len(failed), len(msgs), e.Msg.Topic, e.Msg.Partition, e.Err)
		for _, e := range failed {
			if p.fence(e.Err) {
				p.failed = p.fenced
				return p.failed
			}
		}
		if s.stale {
			p.failed = fmt.Errorf("%w (%w)", p.failed, errStale)
		}
		return p.failed
	}
	return nil
}

// send is the Metadata of the messages of one Send: it says how they are
// partitioned.
type send struct{ manual bool }

// withManual returns a partitioner constructor that sends the messages of
// SendToPartitions to their Partition, and the others where the
// partitioner of newBase sends them.
func withManual(newBase sarama.PartitionerConstructor) sarama.PartitionerConstructor {
	if newBase == nil {
		newBase = sarama.NewHashPartitioner
	}
	return func(topic string) sarama.Partitioner {
		return &partitioner{base: newBase(topic), manual: sarama.NewManualPartitioner(topic)}
	}
}

type partitioner struct{ base, manual sarama.Partitioner }

func (p *partitioner) Partition(m *sarama.ProducerMessage, n int32) (int32, error) {
	if s, ok := m.Metadata.(*send); ok && s.manual {
		return p.manual.Partition(m, n)
	}
	return p.base.Partition(m, n)
}

func (p *partitioner) RequiresConsistency() bool { return p.base.RequiresConsistency() }

// MessageRequiresConsistency implements sarama.DynamicConsistencyPartitioner:
// a message to its own Partition picks among all partitions.
func (p *partitioner) MessageRequiresConsistency(m *sarama.ProducerMessage) bool {
	if s, ok := m.Metadata.(*send); ok && s.manual {
		return true
	}
	if d, ok := p.base.(sarama.DynamicConsistencyPartitioner); ok {
		return d.MessageRequiresConsistency(m)
	}
	return p.base.RequiresConsistency()
}

// AddOffsets adds a consumer group's offsets to the open transaction: the
// group's committed offsets become these when the transaction commits
// (they are sent to the group then, in Commit).
// group's generation and member let the brokers refuse offsets of a
// member that has left the group (Kafka 2.5 and later). offsets maps each
// topic to its partitions' next offsets. Once Close has started, it fails
// with ErrClosed, as Send does.
func (p *Producer) AddOffsets(ctx context.Context, group *sarama.ConsumerGroupMetadata, offsets map[string][]*sarama.PartitionOffsetMetadata) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.usable(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		p.failed = fmt.Errorf("txn %s: add offsets of group %s: %w", p.cfg.ID, group.GroupID, context.Cause(ctx))
		return p.failed
	}
	g := *group
	p.reg.offsets = append(p.reg.offsets, groupOffsets{group: &g, offsets: maps.Clone(offsets)})
	return nil
}

// isClosing reports whether Close has started.
func (p *Producer) isClosing() bool {
	select {
	case <-p.closing:
		return true
	default:
		return false
	}
}

// untilClosing returns a ctx done with ctx, or with ErrClosed as its
// cause once Close starts, and the function that releases it.
func (p *Producer) untilClosing(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-p.closing:
			cancel(ErrClosed)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
}

// usable fails unless a transaction is open and has not failed, and
// Close has not started: a write refused for that fails the open
// transaction, which Close aborts, so that a Commit that takes p.mu
// before Close's abort commits nothing of it. p.mu is held.
func (p *Producer) usable() error {
	switch {
	case p.isClosing(): // and so once closed
		err := fmt.Errorf("txn %s: %w", p.cfg.ID, ErrClosed)
		if p.open && p.failed == nil {
			p.failed = err
		}
		return err
	case !p.open:
		return fmt.Errorf("txn %s: %w", p.cfg.ID, ErrNoTransaction)
	case p.failed != nil:
		return fmt.Errorf("txn %s: the transaction failed earlier: %w", p.cfg.ID, p.failed)
	}
	return nil
}

// Commit implements stream.Transaction: it commits the open transaction,
// and returns once the brokers have. When a write of the transaction
// failed, or the commit does, Commit aborts the transaction and returns
// the error: nothing of it is committed. (A commit whose answers were
// lost may have gone through all the same: the abort then finds the
// transaction committed, and Commit returns nil.)
//
// When ctx is done before the brokers answer, Commit returns with ctx's
// error and lets the producer go, as Abort does: the commit goes on in
// the background (and, if it fails, an abort), so that the transaction
// may yet be committed, all of it, or aborted, all of it. A fence the
// brokers answer there fences the Producer off, as if Commit had waited.
//
// Once Close has started, nothing is let go: Commit waits for the commit
// until Close gives up (Config.CloseTimeout), which closes the connection
// under the request in progress, if any; ctx done before stops the
// commit's retries, and Commit waits for the request in progress to be
// answered, until then. It returns the commit's outcome, or, when the
// commit was given up so, an error wrapping ErrClosed: the transaction may
// have been committed all the same.
func (p *Producer) Commit(ctx context.Context) error {
	p.mu.Lock()
	if !p.open {
		p.mu.Unlock()
		return fmt.Errorf("txn %s: commit: %w", p.cfg.ID, ErrNoTransaction)
	}
	err := p.failed
	if err == nil {
		err = p.commitWithin(ctx)
	}
	if err != nil && p.reg != nil {
		committed, aerr := p.abortWithin(ctx, false)
		if aerr != nil && aerr != err {
			err = errors.Join(err, aerr)
		}
		if committed {
			// The commit's answers were lost, and it went through.
			p.log.Warn("transaction commit found committed by the abort that followed", "err", err)
			err = nil
		}
	}
	p.open, p.failed = false, nil
	hooks := p.onEnd
	p.onEnd = nil
	p.mu.Unlock()
	for _, f := range hooks {
		f(err == nil)
	}
	return err
}

// Abort implements stream.Transaction: it aborts the open transaction, if
// any. When a write of the transaction failed, the next Begin starts a new
// producer epoch, so that nothing of the aborted transaction can follow
// and the partitions' sequence numbers start again; otherwise the next
// transaction goes on in the producer's epoch, as Kafka's own producer
// does, and a newer producer that fenced this one off is found out by its
// next write. When the abort fails,
// the brokers abort the transaction when it times out or when the next
// producer epoch starts. When the brokers fenced the producer off, Abort
// returns ErrFenced, as every Begin after does.
//
// After the brokers refused a write for the transaction being over at
// the coordinator (it timed the transaction out, or a newer producer
// registered the ID: see the package doc), the abort sends no EndTxn,
// which the coordinator would refuse either way, but asks at once for a
// bump of the producer's epoch, which tells the two apart: refused,
// Abort returns ErrFenced; given up (ctx done), Abort returns nil, for
// the transaction is over, and the next Begin asks again.
//
// The abort waits for what the transaction sent to be answered. When ctx
// is done first (a broker that does not answer), Abort returns with ctx's
// error and lets the producer go: it finishes the abort and disconnects
// in the background, Close waits for it, and the next Begin starts a new
// producer epoch, whose start aborts the transaction at the brokers if
// the abort had not (or fails with ErrFenced, when the brokers answered
// the abort with a fence meanwhile). Once Close has started, nothing is
// let go: Abort waits for the abort as Commit does for the commit, and
// returns an error wrapping ErrClosed when the abort was given up.
func (p *Producer) Abort(ctx context.Context) error {
	p.mu.Lock()
	if !p.open {
		p.mu.Unlock()
		return nil
	}
	_, err := p.abortWithin(ctx, p.failed == nil)
	p.open, p.failed = false, nil
	hooks := p.onEnd
	p.onEnd = nil
	p.mu.Unlock()
	for _, f := range hooks {
		f(false)
	}
	return err
}

// ended records how the abort of s ended: kept, s stays the registration;
// closed after an abort that ended the transaction, or found none open
// (INVALID_TXN_STATE: the coordinator's last transaction has ended, as
// when the partitions of this one were refused), the next registration
// bumps the epoch of s. So it does after a stale s (see
// registration.stale), whose abort sent no EndTxn: then only the
// coordinator can tell whether s was fenced off, by refusing the bump.
// It returns what the abort returns: an error only when the producer was
// fenced off. p.mu is held.
func (p *Producer) ended(s *registration, kept bool, err error) error {
	p.fence(err)
	if kept {
		return p.fenced
	}
	if p.reg == s {
		p.reg = nil
	}
	if err == nil || errors.Is(err, sarama.ErrInvalidTxnState) || s.stale {
		p.resume = &producerEpoch{pid: s.pid, epoch: s.epoch, stale: s.stale}
	}
	return p.fenced
}

// endAbort ends the transaction of s with an abort, and closes s unless
// keep and the abort succeeded; it reports whether s was kept. A stale s
// sends no EndTxn (see registration.stale): its transaction is over at
// the coordinator, and the bump of its epoch that follows (see
// abortWithin) tells whether s was fenced off.
func (p *Producer) endAbort(s *registration, keep bool) (bool, error) {
	if s.flight != nil {
		<-s.flight
	}
	var err error
	if !s.stale {
		err = s.end(false)
	}
	switch {
	case s.stale:
		p.log.Warn("transaction ended by the coordinator, which moved the producer's epoch on")
	case errors.Is(err, errCommitted):
		p.log.Warn("transaction abort found the transaction committed", "err", err)
	case err != nil:
		p.log.Warn("transaction abort failed; the next producer epoch's start aborts it", "err", err)
	default:
		p.log.Warn("transaction aborted")
	}
	if keep && err == nil && !s.stale {
		return true, nil
	}
	if cerr := s.close(); cerr != nil {
		p.log.Debug("close the transactional producer", "err", cerr)
	}
	return false, err
}

// fence reports whether err says that the brokers fenced the producer
// off (PRODUCER_FENCED), and if so sets p.fenced. INVALID_PRODUCER_EPOCH
// is not a fence but for a registration (see init): the brokers answer it
// to a transaction they timed out too (KIP-588). p.mu is held.
func (p *Producer) fence(err error) bool {
	if !errors.Is(err, sarama.ErrProducerFenced) {
		return false
	}
	p.fenceOff(err)
	return true
}

// fenceOff sets p.fenced, for err, unless it is set, and returns it. p.mu
// is held.
func (p *Producer) fenceOff(err error) error {
	if p.fenced == nil {
		p.log.Error("transactional producer fenced off: a newer producer has its transactional id", "err", err)
		p.fenced = fmt.Errorf("txn %s: %w (%w)", p.cfg.ID, ErrFenced, err)
	}
	return p.fenced
}

// abortWithin aborts the open transaction, once its delivery in flight
// has ended, giving up waiting when ctx is done: see Abort. With keep
// (none of the transaction's writes failed), the registration goes on
// into the next transaction; else it is closed. It reports whether the
// abort found the transaction committed (its commit's answers lost). It
// fails only when the producer was fenced off, or the abort is given up:
// ctx done first, or, once Close has started, ctx done or Close giving
// up, which fail with ErrClosed (see endWithin).
//
// After a stale registration, whose EndTxn the coordinator would refuse,
// it asks for the bump of the producer's epoch at once, as Kafka's
// producer does (KIP-360): the coordinator refuses it to a producer
// fenced off, and so Abort returns ErrFenced, as it does when an EndTxn
// is refused. Granted, it aborts what the coordinator may still hold of
// the transaction, and the new registration goes on into the next
// transaction. Failed otherwise, the next Begin asks again; once Close
// has started, none does, and it does not ask. p.mu is held.
func (p *Producer) abortWithin(ctx context.Context, keep bool) (bool, error) {
	s := p.reg
	if s == nil {
		return false, p.fenced
	}
	committed, err := p.abortOf(ctx, s, keep)
	if err != nil || !s.stale || p.isClosing() {
		// Closing, no Begin follows: the coordinator ended the
		// transaction of a stale s already.
		return committed, err
	}
	if err := p.init(ctx); err != nil && p.fenced == nil {
		p.log.Warn("bump of the producer's epoch failed; the next Begin asks again", "err", err)
	}
	return committed, p.fenced
}

// abortOf aborts the transaction of s: see abortWithin. It reports too
// whether the abort found the transaction committed (errCommitted). p.mu
// is held.
func (p *Producer) abortOf(ctx context.Context, s *registration, keep bool) (bool, error) {
	var kept bool
	ended, err := p.endWithin(ctx, func(s *registration) (err error) {
		kept, err = p.endAbort(s, keep)
		return err
	}, func(s *registration, err error) error {
		if kept {
			// Let go, it is of no further use.
			if cerr := s.close(); cerr != nil {
				p.log.Debug("close the transactional producer let go", "err", cerr)
			}
		}
		return err
	})
	if !ended {
		p.log.Warn("transaction abort given up waiting for; it goes on in the background, and the next producer's start aborts the transaction if it had not")
		if errors.Is(p.failed, errStale) {
			// The next registration must be a bump all the same (see
			// ended).
			p.resume = &producerEpoch{pid: s.pid, epoch: s.epoch, stale: true}
		}
		return false, fmt.Errorf("txn %s: abort: %w (it goes on in the background)", p.cfg.ID, context.Cause(ctx))
	}
	committed := errors.Is(err, errCommitted)
	if ferr := p.ended(s, kept, err); ferr != nil || !errors.Is(err, ErrClosed) {
		return committed, ferr
	}
	return committed, fmt.Errorf("txn %s: abort: %w", p.cfg.ID, err)
}

// commitWithin commits the open transaction, giving up waiting when ctx
// is done: the registration is then let go, to finish the commit, or abort
// what it could not commit, and close in the background. p.mu is held.
func (p *Producer) commitWithin(ctx context.Context) error {
	ended, err := p.endWithin(ctx, (*registration).commit, func(s *registration, err error) error {
		if err != nil {
			p.log.Warn("transaction commit given up waiting for failed", "err", err)
			_, err = p.endAbort(s, false)
			return err
		}
		if cerr := s.close(); cerr != nil {
			p.log.Debug("close the transactional producer let go", "err", cerr)
		}
		return nil
	})
	switch {
	case !ended:
		p.log.Warn("transaction commit given up waiting for; it goes on in the background")
		return fmt.Errorf("txn %s: commit: %w (it goes on in the background: the transaction may yet be committed)", p.cfg.ID, context.Cause(ctx))
	case p.fence(err):
		return p.fenced
	case errors.Is(err, ErrClosed):
		return fmt.Errorf("txn %s: commit: %w (the transaction may have been committed all the same)", p.cfg.ID, err)
	case err != nil:
		return fmt.Errorf("txn %s: commit: %w", p.cfg.ID, err)
	}
	return nil
}

// endWithin runs end, the registration's commit or abort, and waits for it
// until ctx is done; it reports whether it did, and end's error. When
// ctx is done first, it lets the registration go: in the background, end
// finishes, then after (if not nil) with its error, returning what
// became of the abort it may send; Close waits for it, and the next
// Begin starts a new registration, unless the brokers fenced the one let
// go off before (see learnt).
//
// Once Close has started, it lets nothing go, for Close may be waiting
// for those let go before (letGo.Wait), and may have set out to close:
// see endClosing. p.mu is held, which Close takes after it has started,
// before it waits.
func (p *Producer) endWithin(ctx context.Context, end func(*registration) error, after func(*registration, error) error) (bool, error) {
	s := p.reg
	ended := make(chan error, 1)
	go func() { ended <- end(s) }()
	select {
	case err := <-ended:
		return true, err
	case <-ctx.Done():
	case <-p.closing:
	}
	if p.isClosing() {
		return true, p.endClosing(ctx, s, ended)
	}
	p.reg = nil
	p.adrift = append(p.adrift, s)
	registered := p.registered
	p.letGo.Go(func() {
		err := <-ended
		p.mu.Lock()
		p.learnt(s, registered, err)
		p.mu.Unlock()
		if after != nil {
			err = after(s, err)
		}
		p.mu.Lock()
		p.learnt(s, registered, err)
		p.adrift = slices.DeleteFunc(p.adrift, func(a *registration) bool { return a == s })
		p.mu.Unlock()
	})
	return false, nil
}

// endClosing waits for ended, the end of s, until Close gives up
// (closeBy), then stops s, closing its connections under the request in
// progress, if any: it returns the end's error, wrapping ErrClosed when
// the end was given up so (not when an answer ended it). ctx done first
// stops the retries of s, and the request in progress, if any, is waited
// for until then: its answer tells the end's outcome. p.mu is held.
func (p *Producer) endClosing(ctx context.Context, s *registration, ended <-chan error) error {
	t := time.NewTimer(time.Until(p.closeBy))
	defer t.Stop()
	var err error
	select {
	case err = <-ended:
		return err
	case <-ctx.Done():
		s.stopRetries()
		select {
		case err = <-ended:
		case <-t.C:
			s.stop()
			err = <-ended
		}
	case <-t.C:
		s.stop()
		err = <-ended
	}
	if errors.Is(err, errStopped) {
		return fmt.Errorf("%w (as the producer closes: %w)", err, ErrClosed)
	}
	return err
}

// learnt passes on what the brokers answered s, let go, in the
// background, as if Commit or Abort had waited: a fence (PRODUCER_FENCED)
// fences the Producer off, and a refusal of its epoch (see
// registration.stale) makes the next registration a bump of it, never
// the ID registered afresh, which would fence off a newer producer. It
// does nothing once a registration has started since the one of s
// (registered then), whose epoch may be what the brokers refused. p.mu
// is held.
func (p *Producer) learnt(s *registration, registered int, err error) {
	if p.registered != registered {
		return
	}
	if !p.fence(err) && s.stale && p.resume == nil {
		p.resume = &producerEpoch{pid: s.pid, epoch: s.epoch, stale: true}
	}
}

// CloseTimeout is the default of Config.CloseTimeout: how long Close waits
// for the abort of an open transaction, and for the commits and aborts
// that Commit and Abort let go, or have in progress, to end, before it
// gives them up: the brokers abort a transaction left open when it times
// out (Config.Timeout), or when the transactional ID is registered again.
const CloseTimeout = 5 * time.Second

// Close aborts the open transaction, if any, disconnects, and waits for
// those Commit and Abort let go to end, for up to Config.CloseTimeout in
// all, giving up what is left then: the retries of a delivery in flight
// too, and the requests in progress, to a coordinator or produce requests,
// whose connections it closes rather than wait for their answers until
// they time out (the Sarama config's Net.ReadTimeout). A registration in
// progress (Init, or Begin) and a Send in progress (see Send) are stopped
// first, and fail with ErrClosed, as every Init, Begin, Send and
// AddOffsets after does; a Commit or Abort in progress is not let go once
// Close has started, but given up with the rest at Config.CloseTimeout
// (see Commit and Abort). It is safe to call more than once; the other
// methods fail after it.
func (p *Producer) Close() error {
	p.closeOnce.Do(func() {
		p.closeBy = time.Now().Add(p.cfg.CloseTimeout)
		close(p.closing)
	})
	ctx, cancel := context.WithDeadline(context.Background(), p.closeBy)
	defer cancel()
	if err := p.Abort(ctx); err != nil {
		p.log.Warn("abort on close", "err", err)
	}
	// Nothing is let go once Close has started (see endWithin): the
	// abort, which took p.mu, follows every letGo.Go.
	ended := make(chan struct{})
	go func() {
		p.letGo.Wait()
		close(ended)
	}()
	select {
	case <-ended:
	case <-ctx.Done():
		p.mu.Lock()
		adrift := p.adrift
		p.adrift = nil
		p.mu.Unlock()
		p.log.Warn("transactions left to end in the background given up on close", "count", len(adrift))
		for _, s := range adrift {
			s.stop()
		}
		<-ended
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Once Close has started, no registration is made: after the first
	// Close, p.reg stays nil.
	if p.reg == nil {
		return nil
	}
	err := p.reg.close()
	p.reg = nil
	if err != nil {
		return fmt.Errorf("txn %s: close: %w", p.cfg.ID, err)
	}
	return nil
}
