package txn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// Sarama is the producer configuration to start from: TLS, SASL, the
	// Kafka version, retries. The producer copies it and sets what a
	// transactional producer needs: Producer.Idempotent,
	// Net.MaxOpenRequests 1, Producer.RequiredAcks WaitForAll,
	// Producer.Transaction.ID and Timeout, and the return of successes
	// and errors. Nil starts from sarama.NewConfig(). The Kafka version
	// must be 0.11 or later; 2.5 or later (sarama's default is) fences
	// offsets of a consumer group generation that has ended.
	Sarama *sarama.Config
}

// Producer is a Kafka producer whose writes go in transactions, one at a
// time: a pipeline's Kafka sinks (sink.KafkaConfig.Transaction), its
// changelog (changelog.Config.Transaction) and its Kafka source's offsets
// (source.KafkaConfig.Transaction) all write through one Producer, and
// the pipeline (stream.WithTransaction) begins and commits a transaction
// per batch, so that a batch's output, state and offsets are committed
// together or not at all.
//
// New connects to nothing; Init, or the first Begin, creates the sarama
// producer, which registers ID with the brokers. Close aborts an open
// transaction and stops it. The methods are safe for concurrent use.
type Producer struct {
	cfg    Config
	sarama *sarama.Config
	log    *slog.Logger

	mu       sync.Mutex
	producer sarama.AsyncProducer
	open     bool  // a transaction is open
	failed   error // the first failure in the open transaction
	fenced   error // set once the brokers fenced the producer off, for good
	closed   bool
	onEnd    []func(committed bool)
	// letGo are producers Abort stopped waiting for: they finish their
	// abort and close in the background; Close waits for them.
	letGo sync.WaitGroup
}

var _ stream.Transaction = (*Producer)(nil)

// Errors returned, wrapped, by the Producer's methods.
var (
	// ErrClosed: the Producer was closed.
	ErrClosed = errors.New("txn: closed")
	// ErrNoTransaction: Send or AddOffsets outside a transaction.
	ErrNoTransaction = errors.New("txn: no transaction open")
	// ErrOpen: Begin while a transaction is open.
	ErrOpen = errors.New("txn: a transaction is already open")
	// ErrFenced: by Abort, Commit and Send, and then by every Begin and
	// Init, once the brokers have fenced the producer off: a newer one
	// registered the transactional ID (or the brokers timed the
	// transaction out and bumped the producer's epoch). Starting a new
	// producer would fence off the newer one in turn: a Producer fenced
	// off stays stopped; a process that must go on creates a new one.
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
	}
	cfg.Brokers = slices.Clone(cfg.Brokers)
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	sc := kafkaconf.Producer(cfg.Sarama)
	// A checkpoint's tens of thousands of records pass through sarama's
	// goroutines one channel operation at a time: with the default 256,
	// they park and wake each other every few records.
	sc.ChannelBufferSize = max(sc.ChannelBufferSize, 1<<14)
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Transaction.ID = cfg.ID
	sc.Producer.Transaction.Timeout = cfg.Timeout
	sc.Producer.Partitioner = withManual(sc.Producer.Partitioner)
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("txn %s: sarama config: %w", cfg.ID, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Producer{cfg: cfg, sarama: sc, log: log.With("transactional_id", cfg.ID)}, nil
}

// ID returns the transactional.id.
func (p *Producer) ID() string { return p.cfg.ID }

// Init creates the sarama producer if there is none, which registers ID
// with the brokers: a producer that used ID before, such as the process
// this one restarts, is fenced off, and the transaction it left open is
// aborted. Call it before reading what such a producer wrote (a
// changelog Restore does). It blocks until the brokers answer.
func (p *Producer) Init(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.init(ctx)
}

func (p *Producer) init(ctx context.Context) error {
	if p.closed {
		return fmt.Errorf("txn %s: %w", p.cfg.ID, ErrClosed)
	}
	if p.fenced != nil {
		return p.fenced
	}
	if p.producer != nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("txn %s: init: %w", p.cfg.ID, context.Cause(ctx))
	}
	ap, err := sarama.NewAsyncProducer(p.cfg.Brokers, p.sarama)
	if err != nil {
		return fmt.Errorf("txn %s: init producer on %v: %w", p.cfg.ID, p.cfg.Brokers, err)
	}
	p.producer = ap
	return nil
}

// Begin implements stream.Transaction: it opens a transaction, creating
// the producer first if needed (see Init).
func (p *Producer) Begin(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open {
		return fmt.Errorf("txn %s: begin: %w", p.cfg.ID, ErrOpen)
	}
	if err := p.init(ctx); err != nil {
		return err
	}
	if err := p.producer.BeginTxn(); err != nil {
		p.reset("begin failed")
		if p.fence(err) {
			return p.fenced
		}
		return fmt.Errorf("txn %s: begin: %w", p.cfg.ID, err)
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
// each message's Metadata. A message not delivered, or ctx done first,
// fails the transaction: Commit will fail, and it must be aborted.
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
	// A Send that returned early (ctx) may leave acknowledgements behind:
	// those are told apart by the token.
	token := &send{manual: manual}
	for _, m := range msgs {
		m.Metadata = token
	}
	settled, errs, err := kafkaconf.SendAll(ctx, p.producer, len(msgs), func(i int) *sarama.ProducerMessage { return msgs[i] }, any(token), nil)
	if err != nil {
		p.failed = fmt.Errorf("txn %s: %d of %d records acknowledged: %w", p.cfg.ID, settled-len(errs), len(msgs), err)
		return p.failed
	}
	if len(errs) > 0 {
		e := errs[0]
		p.failed = fmt.Errorf("txn %s: %d of %d records not written; first to %s/%d: %w", p.cfg.ID, len(errs), len(msgs), e.Msg.Topic, e.Msg.Partition, e.Err)
		if p.fence(e.Err) {
			p.failed = p.fenced
		}
		return p.failed
	}
	return nil
}

// send identifies the messages of one Send, and says how they are
// partitioned. It is not zero-sized, so that every one has an address of
// its own.
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

// AddOffsets adds a consumer group's offsets to the open transaction: the
// group's committed offsets become these when the transaction commits
// (sarama sends them to the group then, in Commit).
// group's generation and member let the brokers refuse offsets of a
// member that has left the group (Kafka 2.5 and later). offsets maps each
// topic to its partitions' next offsets.
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
	if err := p.producer.AddOffsetsToTxnWithGroupMetadata(offsets, group); err != nil {
		p.failed = fmt.Errorf("txn %s: add offsets of group %s (generation %d): %w", p.cfg.ID, group.GroupID, group.GenerationID, err)
		return p.failed
	}
	return nil
}

// usable fails unless a transaction is open and has not failed. p.mu is
// held.
func (p *Producer) usable() error {
	switch {
	case p.closed:
		return fmt.Errorf("txn %s: %w", p.cfg.ID, ErrClosed)
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
// the error: nothing of it is committed.
//
// When ctx is done before the brokers answer, Commit returns with ctx's
// error and lets the producer go, as Abort does: the commit goes on in
// the background (and, if it fails, an abort), so that the transaction
// may yet be committed, all of it, or aborted, all of it.
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
	if err != nil && p.producer != nil {
		if aerr := p.abort(); aerr != nil && aerr != err {
			err = errors.Join(err, aerr)
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
// any. When the producer cannot abort (its state is lost), Abort closes
// it: the brokers abort the transaction when it times out or when the
// next producer with this ID starts, and the next Begin starts a new
// producer. When the brokers fenced it off, Abort closes it too, and
// returns ErrFenced, as every Begin after does.
//
// The abort waits for the brokers' answers to what the transaction sent.
// When ctx is done first (a broker that does not answer), Abort returns
// with ctx's error and lets the producer go: it finishes the abort and
// closes in the background, Close waits for it, and the next Begin starts
// a new producer, whose start aborts the transaction at the brokers if
// the abort had not.
func (p *Producer) Abort(ctx context.Context) error {
	p.mu.Lock()
	if !p.open {
		p.mu.Unlock()
		return nil
	}
	err := p.abortWithin(ctx)
	p.open, p.failed = false, nil
	hooks := p.onEnd
	p.onEnd = nil
	p.mu.Unlock()
	for _, f := range hooks {
		f(false)
	}
	return err
}

// abort aborts the open transaction. It fails only when the producer was
// fenced off. p.mu is held.
func (p *Producer) abort() error {
	if err := p.abortTxn(p.producer); err != nil {
		p.reset("fatal transaction state")
		if p.fence(err) {
			return p.fenced
		}
	}
	return nil
}

// fence reports whether err says that the brokers fenced the producer
// off, and if so sets p.fenced. p.mu is held.
func (p *Producer) fence(err error) bool {
	if !errors.Is(err, sarama.ErrProducerFenced) {
		return false
	}
	if p.fenced == nil {
		p.log.Error("transactional producer fenced off: a newer producer has its transactional id")
		p.fenced = fmt.Errorf("txn %s: %w (%w)", p.cfg.ID, ErrFenced, err)
	}
	return true
}

// abortWithin is abort, giving up waiting when ctx is done: see Abort.
// p.mu is held.
func (p *Producer) abortWithin(ctx context.Context) error {
	if ctx.Done() == nil {
		return p.abort()
	}
	ended, err := p.endWithin(ctx, p.abortTxn, nil)
	switch {
	case !ended:
		p.log.Warn("transaction abort given up waiting for; it goes on in the background, and the next producer's start aborts the transaction if it had not")
		return fmt.Errorf("txn %s: abort: %w (it goes on in the background)", p.cfg.ID, context.Cause(ctx))
	case err != nil:
		p.reset("fatal transaction state")
		if p.fence(err) {
			return p.fenced
		}
	}
	return nil
}

// commitWithin commits the open transaction, giving up waiting when ctx
// is done: the producer is then let go, to finish the commit, or abort
// what it could not commit, and close in the background. p.mu is held.
func (p *Producer) commitWithin(ctx context.Context) error {
	ended, err := p.endWithin(ctx, sarama.AsyncProducer.CommitTxn, func(ap sarama.AsyncProducer, err error) {
		if err != nil {
			p.log.Warn("transaction commit given up waiting for failed", "err", err)
			p.abortTxn(ap)
		}
	})
	switch {
	case !ended:
		p.log.Warn("transaction commit given up waiting for; it goes on in the background")
		return fmt.Errorf("txn %s: commit: %w (it goes on in the background: the transaction may yet be committed)", p.cfg.ID, context.Cause(ctx))
	case p.fence(err):
		return p.fenced
	case err != nil:
		return fmt.Errorf("txn %s: commit: %w", p.cfg.ID, err)
	}
	return nil
}

// endWithin runs end, the producer's commit or abort, and waits for it
// until ctx is done; it reports whether it did, and end's error. When
// ctx is done first, it lets the producer go: in the background, end
// finishes, then after (if not nil) with its error, then the producer
// closes; Close waits for it, and the next Begin starts a new producer.
// p.mu is held.
func (p *Producer) endWithin(ctx context.Context, end func(sarama.AsyncProducer) error, after func(sarama.AsyncProducer, error)) (bool, error) {
	ap := p.producer
	ended := make(chan error, 1)
	go func() { ended <- end(ap) }()
	select {
	case err := <-ended:
		return true, err
	case <-ctx.Done():
	}
	p.producer = nil
	p.letGo.Go(func() {
		err := <-ended
		if after != nil {
			after(ap, err)
		}
		if err := ap.Close(); err != nil {
			p.log.Debug("close the transactional producer let go", "err", err)
		}
	})
	return false, nil
}

// errFatal is the abort of a producer in a fatal state.
var errFatal = errors.New("fatal transaction state")

// abortTxn aborts the transaction of ap, and returns why it did not: then
// ap must be closed.
func (p *Producer) abortTxn(ap sarama.AsyncProducer) error {
	if ap.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
		return errFatal
	}
	if err := whileDraining(ap, ap.AbortTxn); err != nil {
		p.log.Warn("transaction abort failed; restarting the producer", "err", err)
		return err
	}
	p.log.Warn("transaction aborted")
	return nil
}

// whileDraining runs f while it reads and drops the producer's
// acknowledgements. A Send cut short (its ctx done) left messages in
// flight whose acknowledgements nobody reads any more, and sarama's
// AbortTxn waits until every one is read: past its channels' buffers, it
// would wait for good. They are of the transaction being aborted.
func whileDraining(ap sarama.AsyncProducer, f func() error) error {
	stop, done := make(chan struct{}), make(chan struct{})
	ok, errs := ap.Successes(), ap.Errors()
	go func() {
		defer close(done)
		for {
			select {
			case <-ok:
			case <-errs:
			case <-stop:
				return
			}
		}
	}()
	err := f()
	close(stop)
	<-done
	return err
}

// reset closes the producer after a fatal error: the next use starts a
// new one, with a new producer epoch. p.mu is held.
func (p *Producer) reset(why string) {
	if p.producer == nil {
		return
	}
	p.log.Warn("transactional producer closed", "why", why, "status", p.producer.TxnStatus().String())
	if err := p.producer.Close(); err != nil {
		p.log.Debug("close the transactional producer", "err", err)
	}
	p.producer = nil
}

// Close aborts the open transaction, if any, and stops the producer, and
// waits for those Abort let go to close. It is safe to call more than
// once; the other methods fail after it.
func (p *Producer) Close() error {
	if err := p.Abort(context.Background()); err != nil {
		p.log.Warn("abort on close", "err", err)
	}
	p.letGo.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.producer == nil {
		return nil
	}
	err := p.producer.Close()
	p.producer = nil
	if err != nil {
		return fmt.Errorf("txn %s: close: %w", p.cfg.ID, err)
	}
	return nil
}
