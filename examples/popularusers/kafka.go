package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/sink/txn"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// startBroker starts an embedded broker on listen with topics. When
// fallback is set and listen's port is taken, it listens on a free port
// instead and says so: the default port is often held by a Kafka that is
// already running.
func startBroker(listen string, fallback bool, dataDir string, topics map[string]int32, log *slog.Logger, stderr io.Writer) (*kafkatest.Broker, error) {
	cfg := kafkatest.Config{
		Addr:    listen,
		Topics:  topics,
		DataDir: dataDir,
		// The broker's own chatter only when something is wrong.
		Logger: quieter(log, slog.LevelWarn).With("component", "kafka broker"),
	}
	b, err := kafkatest.Start(cfg)
	if err != nil && fallback && errors.Is(err, syscall.EADDRINUSE) {
		host, _, _ := net.SplitHostPort(listen)
		cfg.Addr = net.JoinHostPort(host, "0")
		if b, err = kafkatest.Start(cfg); err == nil {
			log.Warn("port in use: the embedded broker listens on a free port instead (choose one with -listen, or use the Kafka already there with -brokers "+listen+")",
				"wanted", listen, "addr", b.Addrs()[0])
		}
	}
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("embedded Kafka broker: %s is in use: pass -listen 127.0.0.1:0 for a free port, or -brokers %s to use the Kafka listening there: %w", listen, listen, err)
	case err != nil:
		return nil, fmt.Errorf("embedded Kafka broker: %w", err)
	}
	return b, nil
}

// newProducer returns a pipeline that writes the events of gen to topic,
// keyed by user id so that all events of a user land in one partition,
// and the sink to close once the pipeline has returned. The first write
// retries brokers that cannot be reached until connectTimeout has passed,
// and fails then, or once stop is done: the pipeline is to run with stop
// as its context.
func newProducer(stop context.Context, gen source.GeneratorConfig, brokers []string, topic string, connectTimeout time.Duration, log *slog.Logger) (*stream.Pipeline, *sink.Kafka[score.Event], error) {
	g, err := source.NewGenerator(gen)
	if err != nil {
		return nil, nil, err
	}
	out, err := sink.NewKafka(sink.KafkaConfig{Brokers: brokers, Topic: topic, ConnectTimeout: connectTimeout, Logger: log}, encodeEvent)
	if err != nil {
		return nil, nil, err
	}
	// Short batches: events reach Kafka within 100 ms of being made.
	p := stream.NewPipeline(stream.Interval(100*time.Millisecond), stream.MaxRecords(10_000), stream.Logger(log))
	stream.To(stream.From(p, g), &unreachedStop{Kafka: out, stop: stop, brokers: brokers, topic: topic, connectTimeout: connectTimeout, log: log})
	return p, out, nil
}

// unreachedStop retries a Write while the brokers have not answered yet,
// until connectTimeout has passed: the sink's own attempt gives up after
// sarama's few retries (under a second) when the brokers refuse
// connections, as they do while they start. It ends such a Write once
// stop is done. The pipeline finishes its batch in progress after a stop,
// for up to its drain timeout (30s): against brokers that never answer, a
// signal would otherwise wait all of it, to deliver nothing. Once they
// have answered, the batch is delivered as usual. No message is sent
// before the brokers answer, so a Write tried again sends none twice.
type unreachedStop struct {
	*sink.Kafka[score.Event]
	stop           context.Context
	brokers        []string
	topic          string
	connectTimeout time.Duration
	log            *slog.Logger
}

func (u *unreachedStop) Write(ctx context.Context, b *stream.Batch[score.Event]) error {
	if u.Reached() {
		return u.Kafka.Write(ctx, b)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(u.stop, func() {
		if !u.Reached() {
			cancel(errors.New("stopped before the brokers answered"))
		}
	})()
	tried, err := retryLoop(ctx, u.connectTimeout, 250*time.Millisecond,
		func() error { return u.Kafka.Write(ctx, b) },
		func(error) bool { return u.Reached() },
		func(_ int, backoff time.Duration, err error) {
			u.log.Warn("kafka brokers unreachable; retrying", "brokers", u.brokers, "err", err, "retry_in", backoff)
		})
	if !tried.timedOut {
		return err
	}
	if cause := errors.Unwrap(err); cause != nil {
		err = cause // the sink's message gives the time of its attempt alone
	}
	return fmt.Errorf("kafka sink %s: brokers %v unreachable for %v (%d attempts): %w",
		u.topic, u.brokers, tried.took.Round(time.Millisecond), tried.n, err)
}

// encodeEvent returns an event's Kafka key, the user id in decimal, and its
// value, the JSON event, in one allocation.
func encodeEvent(e score.Event) (key, value []byte, err error) {
	b := strconv.AppendInt(make([]byte, 0, 64), e.UserID, 10)
	n := len(b)
	b = score.AppendJSON(b, e)
	return b[:n:n], b[n:], nil
}

// batchKey returns the key of a batch's output messages,
// popular_<unix seconds>, as the original's.
func batchKey(t time.Time) []byte {
	return strconv.AppendInt([]byte("popular_"), t.Unix(), 10)
}

// popularSink publishes popular users: one message per user, key
// popular_<unix seconds of the batch>, value [user_id, score].
type popularSink struct {
	kafka   *sink.Kafka[total]
	key     []byte        // the batch's, read by encode during Write
	headers []sink.Header // the batch's
}

// batchHeader is the header of every output message that names its batch:
// the time the batch was cut, in Unix nanoseconds, which tells batches
// apart even within one second (the key's resolution).
const batchHeader = "batch"

// recordsHeader is the header of a threshold message that says how many
// input records its batch counted.
const recordsHeader = "records"

func batchHeaderOf(t time.Time) sink.Header {
	return sink.Header{Key: batchHeader, Value: strconv.AppendInt(nil, t.UnixNano(), 10)}
}

var _ stream.Sink[total] = (*popularSink)(nil)

func newPopularSink(brokers []string, topic string, connectTimeout time.Duration, tx *txn.Producer, log *slog.Logger) (*popularSink, error) {
	s := &popularSink{}
	cfg := sink.KafkaConfig{Brokers: brokers, Topic: topic, ConnectTimeout: connectTimeout, Logger: log, Transaction: tx, Async: tx == nil}
	k, err := sink.NewKafkaMessages(cfg, func(t total) (sink.Message, error) {
		return sink.Message{Key: s.key, Value: appendPair(nil, t), Headers: s.headers}, nil
	})
	s.kafka = k
	return s, err
}

// Write implements stream.Sink. The sink's encode has no batch, so the key
// is set here, for all of the batch's messages at once.
func (s *popularSink) Write(ctx context.Context, b *stream.Batch[total]) error {
	// A new slice every batch: messages of a Write abandoned on
	// cancellation may still hold the previous one.
	s.key = batchKey(b.Info.Time)
	s.headers = []sink.Header{batchHeaderOf(b.Info.Time)}
	return s.kafka.Write(ctx, b)
}

// Flush implements stream.Flusher: the messages written are delivered
// while the pipeline goes on, and the pipeline flushes before it commits.
func (s *popularSink) Flush(ctx context.Context) error { return s.kafka.Flush(ctx) }

func (s *popularSink) Close() error { return s.kafka.Close() }

// appendPair appends t as the JSON pair [user_id, score].
func appendPair(b []byte, t total) []byte {
	b = append(b, '[')
	b = strconv.AppendInt(b, t.Key, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, t.Value, 10)
	return append(b, ']')
}

// newThresholdSink publishes every batch's threshold as one JSON record,
// {"batch":N,"quantile":Q,"threshold":T,"users":U}, with the key and batch
// header of the batch's popular users, and a header with the number of
// input records the batch counted.
func newThresholdSink(brokers []string, topic string, connectTimeout time.Duration, tx *txn.Producer, log *slog.Logger) (*sink.Kafka[cut], error) {
	cfg := sink.KafkaConfig{Brokers: brokers, Topic: topic, ConnectTimeout: connectTimeout, Logger: log, Transaction: tx, Async: tx == nil}
	return sink.NewKafkaMessages(cfg, func(c cut) (sink.Message, error) {
		return sink.Message{Key: batchKey(c.Time), Value: appendThreshold(nil, c), Headers: []sink.Header{
			batchHeaderOf(c.Time), {Key: recordsHeader, Value: strconv.AppendInt(nil, int64(c.Records), 10)},
		}}, nil
	})
}

func appendThreshold(b []byte, c cut) []byte {
	b = append(b, `{"batch":`...)
	b = strconv.AppendInt(b, c.Batch, 10)
	b = append(b, `,"quantile":`...)
	b = strconv.AppendFloat(b, c.Quantile, 'f', -1, 64)
	b = append(b, `,"threshold":`...)
	b = appendNumber(b, c.Threshold)
	b = append(b, `,"users":`...)
	b = strconv.AppendUint(b, c.Users, 10)
	return append(b, '}')
}
