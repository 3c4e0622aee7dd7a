package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/sink/txn"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// dlqSuffix names the dead-letter topic of an input topic by default.
const dlqSuffix = ".dlq"

// faultConfig is how the run command handles bad input and brokers that
// cannot be reached: the flags of this file.
type faultConfig struct {
	deadLetterFile string
	dlqTopic       string // resolved: "" sends no dead letter to Kafka
	maxBadRatio    float64
	connectTimeout time.Duration
	outputRetry    time.Duration
}

func (f *faultConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&f.deadLetterFile, "dead-letter", "", "write records that do not decode to `file`, one JSON object per line, appended when the run resumes (Kafka input, or -input with -checkpoint); with neither this nor a -dlq-topic, they go to standard error")
	fs.StringVar(&f.dlqTopic, "dlq-topic", "", "Kafka `topic` for the records of -topic that do not decode, with the error in headers; default -topic with .dlq appended, -dlq-topic= for none")
	fs.Float64Var(&f.maxBadRatio, "max-bad-ratio", 0, "fail the run (exit 1) when more than this `share` of a batch's records do not decode, in [0,1); 0: never")
	fs.DurationVar(&f.connectTimeout, "connect-timeout", source.DefaultKafkaConnectTimeout, "give up after this `long` without reaching the Kafka brokers: of the input, at start or later, and of the outputs")
	fs.DurationVar(&f.outputRetry, "output-retry", 30*time.Second, "retry a batch's Kafka output that fails for this `long` before the run fails; 0: no retry. Not with -exactly-once, whose failed batch aborts its transaction")
}

// check validates the flags and resolves the dead-letter topic's default.
func (f *faultConfig) check(fs *flag.FlagSet, c *runConfig) error {
	dlqSet := isSet(fs, "dlq-topic")
	switch {
	case !(f.maxBadRatio >= 0 && f.maxBadRatio < 1):
		return usagef("-max-bad-ratio %v: must be 0 (off) or a share of a batch's records in (0,1)", f.maxBadRatio)
	case f.connectTimeout <= 0:
		return usagef("-connect-timeout %v: must be positive, such as 30s", f.connectTimeout)
	case f.outputRetry < 0:
		return usagef("-output-retry %v: must be 0 (no retry) or positive, such as 30s", f.outputRetry)
	case c.exactlyOnce && isSet(fs, "output-retry") && f.outputRetry != 0:
		return usagef("-output-retry %v: with -exactly-once a failed write aborts the batch's transaction and the run fails, to restart from the last committed batch; leave it out", f.outputRetry)
	case c.input != "" && dlqSet && f.dlqTopic != "":
		return usagef("-dlq-topic takes the bad records of the Kafka input; with -input, use -dead-letter FILE")
	case c.input != "" && len(c.brokers) == 0 && isSet(fs, "connect-timeout"):
		return usagef("-connect-timeout bounds the wait for Kafka brokers: with -input it needs -brokers")
	case f.deadLetterFile == "-":
		return usagef("-dead-letter -: standard output is the report; name a file (with neither -dead-letter nor a -dlq-topic, dead letters go to standard error)")
	case f.deadLetterFile != "" && sameFile(f.deadLetterFile, c.input):
		return usagef("-dead-letter %q is the -input file: it would be overwritten", f.deadLetterFile)
	}
	if c.input != "" {
		f.dlqTopic = ""
		return nil
	}
	if !dlqSet {
		f.dlqTopic = c.topic + dlqSuffix
	}
	if f.dlqTopic != "" && (f.dlqTopic == c.topic || f.dlqTopic == c.outTopic || f.dlqTopic == c.thresholdTopic) {
		return usagef("-dlq-topic %q must differ from -topic, -out-topic and -threshold-topic", f.dlqTopic)
	}
	return nil
}

// sameFile reports whether the paths a and b name one file.
func sameFile(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// deadLetter is a record that did not decode, as written to the dead
// letters: one JSON object per line.
type deadLetter struct {
	Origin string `json:"dead_letter"` // topic/partition@offset, or file:line
	Kind   string `json:"kind"`
	Error  string `json:"error"`
	// Key is a Kafka record's key as a string when it is UTF-8; otherwise
	// KeyBase64 holds it. Both are nil for a record without a key, and for
	// a line of a file.
	Key       *string `json:"key,omitempty"`
	KeyBase64 []byte  `json:"key_base64,omitempty"`
	// Record is the record as a string when it is UTF-8; otherwise it is
	// nil and RecordBase64 holds it, as a JSON string could not carry it
	// unchanged.
	Record       *string `json:"record,omitempty"`
	RecordBase64 []byte  `json:"record_base64,omitempty"`

	origin   stream.Origin
	key, raw []byte // the Kafka record's key and value, for the Kafka dead letters
}

// newDeadLetter makes a dead letter of the record rec, with key, from o,
// which is a line of a file when file is set.
func newDeadLetter(o stream.Origin, file bool, key, rec []byte, err error) deadLetter {
	d := deadLetter{Origin: o.String(), Kind: kindName(err), Error: err.Error(), origin: o, key: key, raw: rec}
	if file {
		d.Origin = fileOrigin(o)
	}
	d.Key, d.KeyBase64 = textOrBytes(key)
	if d.Record, d.RecordBase64 = textOrBytes(rec); rec == nil {
		d.Record = new(string) // a record without a value is written as an empty one
	}
	return d
}

// textOrBytes returns b as a string when it is UTF-8, as bytes (written
// in base64) otherwise, and neither when b is nil.
func textOrBytes(b []byte) (*string, []byte) {
	switch {
	case b == nil:
		return nil, nil
	case utf8.Valid(b):
		s := string(b)
		return &s, nil
	}
	return nil, b
}

// kindName is the name of the score.Kind of err, or "other".
func kindName(err error) string {
	k, _ := score.KindOf(err) // 0 for an error that is not a decoding one
	return kindLabel(int(k))
}

// kindLabel names the score.Kind k of a bad record, or "other" for 0: an
// error that is not a decoding one.
func kindLabel(k int) string {
	if k == 0 {
		return "other"
	}
	return score.Kind(k).String()
}

// recordKey returns the Kafka key of a record, nil for a line of a file.
func recordKey[T any](v T) []byte {
	if m, ok := any(v).(source.Message); ok {
		return m.Key
	}
	return nil
}

// fileOrigin names a line of a file as "path:line": a file's origin
// offset is its line number, and its partition says only which decoder
// took it.
func fileOrigin(o stream.Origin) string {
	return o.Source + ":" + strconv.FormatInt(o.Offset, 10)
}

// Headers of a dead letter on Kafka. The value is the record unchanged.
const (
	headerError     = "dlq.error"
	headerKind      = "dlq.kind"
	headerTopic     = "dlq.topic"
	headerPartition = "dlq.partition"
	headerOffset    = "dlq.offset"
	// headerTruncated, on a dead letter whose value was cut to fit in a
	// Kafka message, holds the length of the whole record.
	headerTruncated = "dlq.truncated"
	// headerKeyTruncated, on a dead letter whose key was cut too (when the
	// value is all cut and the message is still too large), holds the
	// length of the whole key.
	headerKeyTruncated = "dlq.key.truncated"
)

// maxDeadLetterBytes is the largest dead letter sent to Kafka, as sarama
// counts a message's size: its producers' default MaxMessageBytes, less
// the header of the batch that carries it (the broker's limit is on the
// batch), so that the message fits both the producer's limit and a
// broker's default max.message.bytes (the same 1 MiB and 12 bytes). A
// record as large as the input topic takes does not fit once the headers
// are added, and would be refused every time the batch is read again.
var maxDeadLetterBytes = sarama.NewConfig().Producer.MaxMessageBytes - kafkaconf.RecordBatchOverhead

// newDLQSink publishes dead letters to topic: each the bad record's key
// and value unchanged, with why and where from in headers.
func newDLQSink(brokers []string, topic string, connectTimeout time.Duration, tx *txn.Producer, log *slog.Logger) (*sink.Kafka[deadLetter], error) {
	return sink.NewKafkaMessages(sink.KafkaConfig{Brokers: brokers, Topic: topic, ConnectTimeout: connectTimeout, Logger: log, Transaction: tx, Async: tx == nil}, func(d deadLetter) (sink.Message, error) {
		m := sink.Message{Key: d.key, Value: d.raw, Headers: []sink.Header{
			{Key: headerError, Value: []byte(d.Error)},
			{Key: headerKind, Value: []byte(d.Kind)},
			{Key: headerTopic, Value: []byte(d.origin.Source)},
			{Key: headerPartition, Value: strconv.AppendInt(nil, int64(d.origin.Partition), 10)},
			{Key: headerOffset, Value: strconv.AppendInt(nil, d.origin.Offset, 10)},
		}}
		if messageSize(m) > maxDeadLetterBytes {
			// Its origin, in the headers, says where to find it whole.
			m.Headers = append(m.Headers, sink.Header{Key: headerTruncated, Value: strconv.AppendInt(nil, int64(len(d.raw)), 10)})
			m.Value = m.Value[:max(0, len(m.Value)-(messageSize(m)-maxDeadLetterBytes))]
		}
		if messageSize(m) > maxDeadLetterBytes {
			// The key alone is too large: cut it too, or the message
			// would be refused every time the batch is read again.
			m.Headers = append(m.Headers, sink.Header{Key: headerKeyTruncated, Value: strconv.AppendInt(nil, int64(len(d.key)), 10)})
			m.Key = m.Key[:max(0, len(m.Key)-(messageSize(m)-maxDeadLetterBytes))]
		}
		return m, nil
	})
}

// messageSize is the size of m as sarama's producer checks it against
// MaxMessageBytes.
func messageSize(m sink.Message) int {
	pm := sarama.ProducerMessage{Key: sarama.ByteEncoder(m.Key), Value: sarama.ByteEncoder(m.Value)}
	for _, h := range m.Headers {
		pm.Headers = append(pm.Headers, sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
	}
	return pm.ByteSize(2)
}

// dlqSink says, when the dead-letter topic refuses a batch, how to do
// without it.
type dlqSink struct{ kafka *sink.Kafka[deadLetter] }

func (s dlqSink) Write(ctx context.Context, b *stream.Batch[deadLetter]) error {
	if err := s.kafka.Write(ctx, b); err != nil {
		return fmt.Errorf("dead letters (create the topic, or pass -dlq-topic= to send none to Kafka): %w", err)
	}
	return nil
}

// Flush implements stream.Flusher: the Kafka sink delivers dead letters
// after Write returns, and the pipeline flushes it before it commits.
func (s dlqSink) Flush(ctx context.Context) error {
	if err := s.kafka.Flush(ctx); err != nil {
		return fmt.Errorf("dead letters (create the topic, or pass -dlq-topic= to send none to Kafka): %w", err)
	}
	return nil
}

// tee writes every batch to each of its sinks in turn.
type tee[T any] []stream.Sink[T]

// Flush implements stream.Flusher, flushing the sinks that are Flushers.
func (t tee[T]) Flush(ctx context.Context) error {
	for _, s := range t {
		if f, ok := s.(stream.Flusher); ok {
			if err := f.Flush(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

func (t tee[T]) Write(ctx context.Context, b *stream.Batch[T]) error {
	for _, s := range t {
		if err := s.Write(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// deadLetterSinks opens where dead letters go: the -dead-letter file and
// the -dlq-topic, or standard error when neither is given. It returns the
// sink, a description of where it writes for the logs, and what to close.
func (c *runConfig) deadLetterSinks(brokers []string, tx *txn.Producer, stderr io.Writer, log *slog.Logger) (stream.Sink[deadLetter], string, []func() error, error) {
	var (
		sinks   tee[deadLetter]
		where   string
		closers []func() error
	)
	if f := c.faults.deadLetterFile; f != "" {
		open := sink.CreateJSONLines[deadLetter]
		if c.resumes() {
			// The input already committed is not read again: its dead
			// letters are only in the file.
			open = sink.AppendJSONLines[deadLetter]
		}
		s, err := open(f)
		if err != nil {
			return nil, "", nil, fmt.Errorf("-dead-letter: %w", err)
		}
		sinks, where, closers = append(sinks, s), "file "+f, append(closers, s.Close)
	}
	if t := c.faults.dlqTopic; t != "" && len(brokers) > 0 {
		s, err := newDLQSink(brokers, t, c.faults.connectTimeout, tx, log)
		if err != nil {
			for _, cl := range closers {
				cl()
			}
			return nil, "", nil, err
		}
		if where != "" {
			where += " and "
		}
		retried := retrying[deadLetter](dlqSink{s}, "dead-letter topic "+t, retryConfig{c.faults.outputRetry, log})
		sinks, where, closers = append(sinks, retried), where+"topic "+t, append(closers, s.Close)
	}
	if len(sinks) == 0 {
		s := sink.NewJSONLines[deadLetter]("dead letters", stderr)
		sinks, where, closers = append(sinks, s), "standard error", append(closers, s.Close)
	}
	return sinks, where, closers, nil
}

// resumes reports whether the run goes on from where an earlier run
// committed: a Kafka group's offsets, or a file's checkpoint.
func (c *runConfig) resumes() bool {
	if c.input == "" {
		return len(c.brokers) > 0
	}
	return c.checkpointDir(false) != "" && !c.resetState
}

// ErrTooManyBad is returned (wrapped, with the batch and the figures) when
// more than -max-bad-ratio of a batch's records do not decode.
var ErrTooManyBad = errors.New("too many bad records")

// checkBadRatio fails when more than limit of a batch's records are bad.
func checkBadRatio(batch int64, bad, records int, limit float64) error {
	if limit <= 0 || records == 0 || bad == 0 {
		return nil
	}
	if r := float64(bad) / float64(records); r > limit {
		return fmt.Errorf("batch %d: %d of %d records did not decode (ratio %.4g), over -max-bad-ratio %v: %w; they are in the dead letters, and the batch is not committed",
			batch, bad, records, r, limit, ErrTooManyBad)
	}
	return nil
}

// addScores adds points to sum, saturating at math.MaxInt64 instead of
// wrapping around; saturated says that it did. Scores are never negative
// (a Table holds 0..MaxScore), so only the top can be crossed.
func addScores(sum int64, points []int64) (total int64, saturated bool) {
	for _, p := range points {
		if p > 0 && sum > math.MaxInt64-p {
			sum, saturated = math.MaxInt64, true
			continue
		}
		sum += p
	}
	return sum, saturated
}
