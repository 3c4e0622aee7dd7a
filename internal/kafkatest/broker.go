package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// Config configures a Broker. The zero Config starts an empty broker on
// 127.0.0.1 and a free port, keeping everything in memory.
type Config struct {
	// Addr is the host:port to listen on. Empty means 127.0.0.1 and a port
	// chosen by the system.
	Addr string
	// Topics maps the name of each topic to create to its number of
	// partitions. A topic that already exists (loaded from DataDir) is kept
	// if it has that many partitions; Start fails if it has another number.
	Topics map[string]int32
	// DataDir keeps topics, records and group offsets across restarts. The
	// directory is created if needed. Empty keeps them in memory.
	DataDir string
	// MinSessionTimeout is the shortest session timeout a consumer group
	// member may ask for. Kafka's and kfake's default is 6s; tests lower it
	// so that a group notices a member that left within a second.
	MinSessionTimeout time.Duration
	// Logger receives the broker's warnings and errors. Nil discards them.
	Logger *slog.Logger
	// MaxVersions caps the request versions the broker advertises and
	// serves, as an older Kafka does; nil serves all that kfake knows.
	MaxVersions *kversion.Versions
}

// Broker is a running in-process Kafka broker. Its methods are safe for
// concurrent use.
type Broker struct {
	cluster *kfake.Cluster
	addrs   []string
	close   sync.Once
}

// Start starts a broker. It returns once the broker accepts connections.
// The caller must Close it.
func Start(cfg Config) (*Broker, error) {
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if cfg.Addr != "" {
		addr := cfg.Addr
		// kfake asks for 127.0.0.1 and a port; listen where the caller
		// asked instead. The address a client sees in metadata is the
		// listener's, so it must be reachable by clients.
		opts = append(opts, kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, addr)
		}))
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if cfg.MinSessionTimeout > 0 {
		opts = append(opts, kfake.GroupMinSessionTimeout(cfg.MinSessionTimeout))
	}
	if cfg.Logger != nil {
		opts = append(opts, kfake.WithLogger(logger{cfg.Logger}))
	}
	if cfg.MaxVersions != nil {
		opts = append(opts, kfake.MaxVersions(cfg.MaxVersions))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: start broker on %q: %w", cfg.Addr, err)
	}
	b := &Broker{cluster: c, addrs: c.ListenAddrs()}
	for topic, partitions := range cfg.Topics {
		if err := b.CreateTopic(topic, partitions); err != nil {
			b.Close()
			return nil, err
		}
	}
	return b, nil
}

// Addrs returns the addresses clients connect to ("host:port").
func (b *Broker) Addrs() []string { return append([]string(nil), b.addrs...) }

// CreateTopic creates topic with the given number of partitions. A topic
// that exists with as many partitions is not an error.
func (b *Broker) CreateTopic(topic string, partitions int32) error {
	if topic == "" || partitions < 1 {
		return fmt.Errorf("kafkatest: create topic %q with %d partitions: need a name and at least 1 partition", topic, partitions)
	}
	if b.cluster.TopicInfo(topic) != nil {
		if n := int32(len(b.cluster.PartitionInfos(topic))); n != partitions {
			return fmt.Errorf("kafkatest: topic %q exists with %d partitions, not %d", topic, n, partitions)
		}
		return nil
	}
	if err := b.cluster.CreateTopic(topic, partitions, nil); err != nil {
		return fmt.Errorf("kafkatest: create topic %q: %w", topic, err)
	}
	return nil
}

// HighWatermarks returns the offset after the last record of each partition
// of topic, indexed by partition. It is nil when the topic does not exist.
func (b *Broker) HighWatermarks(topic string) []int64 {
	infos := b.cluster.PartitionInfos(topic)
	if infos == nil {
		return nil
	}
	hw := make([]int64, len(infos))
	for i, p := range infos {
		hw[i] = p.HighWatermark
	}
	return hw
}

// WaitStable waits until group is stable (every member has joined and got
// its assignment) with members members, or any number when members is -1,
// and returns the partitions of topic that each member owns, by member ID.
func (b *Broker) WaitStable(ctx context.Context, group, topic string, members int) (map[string][]int32, error) {
	info, err := b.cluster.WaitGroupStable(ctx, group, members)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: wait for group %q to be stable with %d members: %w", group, members, err)
	}
	owned := make(map[string][]int32, len(info.Members))
	for _, m := range info.Members {
		owned[m.MemberID] = m.Assignment[topic]
	}
	return owned, nil
}

// Committed returns the offsets that group has committed for topic, by
// partition.
func (b *Broker) Committed(group, topic string) map[int32]int64 {
	out := make(map[int32]int64)
	info := b.cluster.GroupInfo(group)
	if info == nil {
		return out
	}
	for p, c := range info.Commits[topic] {
		out[p] = c.Offset
	}
	return out
}

// RefuseProduce makes the broker answer the next n produce requests with
// the error code code for every partition they write to, storing nothing,
// and returns a function that tells how many it refused so far.
func (b *Broker) RefuseProduce(n int, code int16) func() int {
	return b.refuse(kmsg.Produce.Int16(), n, func(r kmsg.Request) kmsg.Response {
		req := r.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	})
}

// RefuseAddPartitions makes the broker answer the next n
// AddPartitionsToTxn requests (of versions 0 to 3, sarama's) with the
// error code code for every partition they add, adding none, and returns
// a function that tells how many it refused so far.
func (b *Broker) RefuseAddPartitions(n int, code int16) func() int {
	return b.refuse(kmsg.AddPartitionsToTxn.Int16(), n, func(r kmsg.Request) kmsg.Response {
		req := r.(*kmsg.AddPartitionsToTxnRequest)
		resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewAddPartitionsToTxnResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	})
}

// RefuseInitProducerID makes the broker answer the next n InitProducerId
// requests with the error code code, and returns a function that tells
// how many it refused so far.
func (b *Broker) RefuseInitProducerID(n int, code int16) func() int {
	return b.refuse(kmsg.InitProducerID.Int16(), n, func(r kmsg.Request) kmsg.Response {
		resp := r.(*kmsg.InitProducerIDRequest).ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode, resp.ProducerID, resp.ProducerEpoch = code, -1, -1
		return resp
	})
}

// RefuseEndTxn makes the broker answer the next n EndTxn requests with
// the error code code, ending nothing, and returns a function that tells
// how many it refused so far.
func (b *Broker) RefuseEndTxn(n int, code int16) func() int {
	return b.refuse(kmsg.EndTxn.Int16(), n, func(r kmsg.Request) kmsg.Response {
		resp := r.(*kmsg.EndTxnRequest).ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = code
		return resp
	})
}

// RefuseTxnOffsetCommit makes the broker answer the next n
// TxnOffsetCommit requests with the error code code for every partition
// they commit, storing nothing, and returns a function that tells how
// many it refused so far.
func (b *Broker) RefuseTxnOffsetCommit(n int, code int16) func() int {
	return b.refuse(kmsg.TxnOffsetCommit.Int16(), n, func(r kmsg.Request) kmsg.Response {
		req := r.(*kmsg.TxnOffsetCommitRequest)
		resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
		for _, t := range req.Topics {
			rt := kmsg.NewTxnOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	})
}

// LoseCommitAnswers makes the broker commit the transaction that the
// next EndTxn request committing one asks for, but lose the answer: it
// closes the connection instead, as a broker or a network failing right
// after the commit would. So it does to the EndTxn requests committing
// after it (the producer's retries), n in all, committing nothing more. It
// returns a function that tells how many answers it lost so far.
func (b *Broker) LoseCommitAnswers(n int) func() int {
	var (
		mu         sync.Mutex
		lost       int
		forwarding bool // the first request, sent again on a connection of our own
	)
	b.cluster.ControlKey(kmsg.EndTxn.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
		req := r.(*kmsg.EndTxnRequest)
		mu.Lock()
		defer mu.Unlock()
		if forwarding || !req.Commit {
			b.cluster.KeepControl()
			return nil, nil, false
		}
		if lost++; lost < n {
			b.cluster.KeepControl()
		} else {
			b.cluster.DropControl()
		}
		if lost == 1 {
			// The broker handles one request at a time: the first is
			// handled as it is sent again, on another connection, while
			// this one sleeps.
			forwarding = true
			mu.Unlock()
			b.cluster.SleepControl(func() { b.endTxn(req) })
			mu.Lock()
			forwarding = false
		}
		return nil, errAnswerLost, true
	})
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return lost
	}
}

var errAnswerLost = errors.New("kafkatest: answer lost")

// endTxn sends req to the broker on a connection of its own, and waits for
// the answer, whatever it is.
func (b *Broker) endTxn(req *kmsg.EndTxnRequest) {
	cfg := config()
	cfg.Version = sarama.V2_8_0_0
	br := sarama.NewBroker(b.addrs[0])
	if err := br.Open(cfg); err != nil {
		return
	}
	defer br.Close()
	_, _ = br.EndTxn(&sarama.EndTxnRequest{Version: 3, TransactionalID: req.TransactionalID, ProducerID: req.ProducerID, ProducerEpoch: req.ProducerEpoch, TransactionResult: req.Commit})
}

// Watch calls f with every request of the given key (kmsg.InitProducerID.Int16(),
// ...) the broker receives from now on, before the broker handles it as
// usual. f must not keep the request.
func (b *Broker) Watch(key int16, f func(kmsg.Request)) {
	b.cluster.ControlKey(key, func(r kmsg.Request) (kmsg.Response, error, bool) {
		b.cluster.KeepControl()
		f(r)
		return nil, nil, false
	})
}

// RefuseFetch makes the broker answer the next n fetch requests with the
// error code code for every partition they read, and returns a function
// that tells how many it refused so far.
func (b *Broker) RefuseFetch(n int, code int16) func() int {
	return b.refuse(kmsg.Fetch.Int16(), n, func(r kmsg.Request) kmsg.Response {
		return FetchAnswer(r.(*kmsg.FetchRequest), func(rp *kmsg.FetchResponseTopicPartition) {
			rp.ErrorCode = code
			rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = -1, -1, -1
		})
	})
}

// FetchAnswer returns an answer to req with no records, each partition
// it asks for as fill sets it.
func FetchAnswer(req *kmsg.FetchRequest, fill func(*kmsg.FetchResponseTopicPartition)) *kmsg.FetchResponse {
	resp := req.ResponseKind().(*kmsg.FetchResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			rp := kmsg.NewFetchResponseTopicPartition()
			rp.Partition = p.Partition
			fill(&rp)
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// OffsetFetchError returns an answer to req that fails the group and
// every partition it asks for with the error code code.
func OffsetFetchError(req *kmsg.OffsetFetchRequest, code int16) *kmsg.OffsetFetchResponse {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	resp.ErrorCode = code
	for _, g := range req.Groups {
		rg := kmsg.NewOffsetFetchResponseGroup()
		rg.Group, rg.ErrorCode = g.Group, code
		resp.Groups = append(resp.Groups, rg)
	}
	for _, rt := range req.Topics {
		st := kmsg.NewOffsetFetchResponseTopic()
		st.Topic = rt.Topic
		for _, p := range rt.Partitions {
			sp := kmsg.NewOffsetFetchResponseTopicPartition()
			sp.Partition, sp.Offset, sp.ErrorCode = p, -1, code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// refuse answers the next n requests of key with what answer makes of
// them, and returns a function that tells how many it answered so far.
func (b *Broker) refuse(key int16, n int, answer func(kmsg.Request) kmsg.Response) func() int {
	var mu sync.Mutex
	refused := 0
	b.cluster.ControlKey(key, func(r kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		defer mu.Unlock()
		if refused++; refused < n {
			b.cluster.KeepControl()
		} else {
			b.cluster.DropControl() // KeepControl, once called, lasts
		}
		return answer(r), nil, true
	})
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return refused
	}
}

// Stall holds the next request of the given key (kmsg.Produce.Int16(),
// kmsg.EndTxn.Int16(), ...), unanswered, as a broker that does not answer
// would, until release is called; held is closed once the request is
// held. Call release before Close.
func (b *Broker) Stall(key int16) (held <-chan struct{}, release func()) {
	h, wake := make(chan struct{}), make(chan struct{})
	var holding sync.Once
	b.cluster.ControlKey(key, func(kmsg.Request) (kmsg.Response, error, bool) {
		// kfake runs the control again as the request wakes: once held
		// is enough.
		holding.Do(func() {
			close(h)
			b.cluster.SleepControl(func() { <-wake })
		})
		return nil, nil, false
	})
	var once sync.Once
	return h, func() { once.Do(func() { close(wake) }) }
}

// Ignore makes the broker take every request of the given key from now
// on and never answer it, as a broker that hangs does, for the client's
// retries too, until release is called; the requests after release are
// answered.
func (b *Broker) Ignore(key int16) (release func()) {
	var released atomic.Bool
	b.cluster.ControlKey(key, func(kmsg.Request) (kmsg.Response, error, bool) {
		if released.Load() {
			b.cluster.DropControl()
			return nil, nil, false
		}
		b.cluster.KeepControl()
		return nil, nil, true // neither an answer nor an error: none is sent
	})
	return func() { released.Store(true) }
}

// Close stops the broker and closes its connections. With a DataDir, it
// first saves the broker's state. Close is safe to call more than once.
func (b *Broker) Close() {
	b.close.Do(b.cluster.Close)
}

// logger passes kfake's logs to slog.
type logger struct{ l *slog.Logger }

func (l logger) Logf(level kfake.LogLevel, format string, args ...any) {
	var lv slog.Level
	switch level {
	case kfake.LogLevelError:
		lv = slog.LevelError
	case kfake.LogLevelWarn:
		lv = slog.LevelWarn
	case kfake.LogLevelInfo:
		lv = slog.LevelInfo
	default:
		lv = slog.LevelDebug
	}
	if l.l.Enabled(context.Background(), lv) {
		l.l.Log(context.Background(), lv, fmt.Sprintf(format, args...), "component", "kafka broker")
	}
}

// FreeAddr returns a local address that nothing listens on now: for a
// broker to start on, and start again on after a stop, or for one that
// cannot be reached.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
