package source

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/internal/kafkatest"
)

// SyncBuffer is a bytes.Buffer safe for concurrent use: what a source
// logged, for a test to read, in this package's tests as in source_test's.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// resetBroker starts a broker whose topic "t" has one partition of n
// records, valued by their offsets, and a source k of it, logging to log,
// with its fetch loops started, all stopped at the end of the test.
func resetBroker(t *testing.T, n int, log *SyncBuffer) (*kafkatest.Broker, *Kafka, *kafkaFetch) {
	t.Helper()
	b, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"t": 1}})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	recs := make([]kafkatest.Record, n)
	for i := range recs {
		recs[i] = kafkatest.Record{Value: []byte(strconv.Itoa(i))}
	}
	require.NoError(t, b.Produce("t", recs...))

	k, err := NewKafka(KafkaConfig{Brokers: b.Addrs(), Topic: "t", Group: "g", RevokeTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(log, nil))})
	require.NoError(t, err)
	k.sarama.Consumer.MaxWaitTime = 50 * time.Millisecond
	k.sarama.Consumer.Retry.Backoff = 20 * time.Millisecond
	client, err := sarama.NewClient(b.Addrs(), k.sarama)
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	f := newKafkaFetch(k, client)
	k.mu.Lock()
	k.client, k.fetch = client, f
	k.mu.Unlock()
	t.Cleanup(f.stop)
	return b, k, f
}

// deleteRecords deletes the records of partition 0 of topic "t" before
// offset before, as retention does.
func deleteRecords(t *testing.T, b *kafkatest.Broker, before int64) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(b.Addrs(), sarama.NewConfig())
	require.NoError(t, err)
	defer admin.Close()
	require.NoError(t, admin.DeleteRecords("t", map[int32]int64{0: before}))
}

// pollUntil returns the offsets of the records Poll hands out until it
// hands out last.
func pollUntil(t *testing.T, k *Kafka, last int64) []int64 {
	t.Helper()
	var got []int64
	require.Eventually(t, func() bool {
		for _, o := range poll(k, 1000) {
			got = append(got, o.Offset)
		}
		return slices.Contains(got, last)
	}, 10*time.Second, time.Millisecond, "offset %d not handed out; got %v", last, got)
	for range 3 { // nothing more is queued
		for _, o := range poll(k, 1000) {
			got = append(got, o.Offset)
		}
	}
	return got
}

// span returns the offsets from..to-1.
func span(from, to int64) []int64 {
	var out []int64
	for o := from; o < to; o++ {
		out = append(out, o)
	}
	return out
}

// skipped matches the warning that names the records of partition 0 of
// topic "t" that group "g" skipped, first to last.
func skipped(first, last int64) string {
	return fmt.Sprintf(`msg="kafka records skipped[^"]*" topic=t group=g partition=0 first_skipped=%d last_skipped=%d\n`, first, last)
}

// A claim starts at offset 10; sarama's partition consumer, paused as the
// claim starts, fetched 10..79 before the pause, and hands them out while
// the fetch loop's first fetch, from 10, is under way. Retention then
// deletes the records before 60: the loop's fetch is out of range, and it
// starts again from the oldest record left, 60. The records 60..79 the
// queue already holds are not queued again: each record once, in order.
func TestKafkaFetchResetKeepsWhatThePausedConsumerQueued(t *testing.T) {
	const n, deleted = 100, 60
	var log SyncBuffer
	b, k, f := resetBroker(t, n, &log)
	held, release := b.Stall(int16(kmsg.Fetch))
	defer release()

	c := startTestClaim(k, 0, 10)
	f.add(0, c.epoch, 10)
	<-held // the loop's fetch from 10
	require.True(t, c.push(70))
	deleteRecords(t, b, deleted)
	release()

	assert.Equal(t, span(10, n), pollUntil(t, k, n-1))
	assert.Contains(t, log.String(), "kafka offset out of range")
	assert.NotContains(t, log.String(), "skipped", "no record was")
}

// Records deleted before the loop read them are skipped, and the log
// names the topic, the partition and the offsets skipped.
func TestKafkaFetchResetLogsTheRecordsSkipped(t *testing.T) {
	const n, deleted = 100, 60
	var log SyncBuffer
	b, k, f := resetBroker(t, n, &log)
	held, release := b.Stall(int16(kmsg.Fetch))
	defer release()

	c := startTestClaim(k, 0, 10)
	f.add(0, c.epoch, 10)
	<-held // the loop's fetch from 10
	deleteRecords(t, b, deleted)
	release()

	assert.Equal(t, span(deleted, n), pollUntil(t, k, n-1))
	assert.Regexp(t, skipped(10, 59), log.String())
}

// A claim that starts at the newest record (no committed offset, and
// StartNewest) starts where its fetch loop finds it, 100. sarama's
// partition consumer, paused as the claim starts, found another newest
// record, 50, and fetched records from there before its pause: 50..59
// before the loop found its start, 60..69 after. None of them is handed
// out, so that no record is skipped between them and the loop's: the
// records come from 100 on, each once, in order.
func TestKafkaFetchStartsWhereTheLoopFindsIt(t *testing.T) {
	var log SyncBuffer
	b, k, f := resetBroker(t, 100, &log)
	held, release := b.Stall(int16(kmsg.Fetch))
	defer release()

	c := startTestClaim(k, 0, sarama.OffsetNewest)
	c.next = 50
	require.True(t, c.push(10))
	f.add(0, c.epoch, sarama.OffsetNewest)
	<-held // the loop found its start, and fetches from it
	require.True(t, c.push(10))
	release()
	recs := make([]kafkatest.Record, 10)
	for i := range recs {
		recs[i] = kafkatest.Record{Value: []byte(strconv.Itoa(100 + i))}
	}
	require.NoError(t, b.Produce("t", recs...))

	assert.Equal(t, span(100, 110), pollUntil(t, k, 109))
}

// A claim that starts again from the same commit out of range, before
// anything was committed past it (a rebalance soon after the first
// start), does not log the records skipped twice: only those the log
// start moved past since. A claim that starts from another commit out of
// range logs its own.
func TestKafkaRecordsSkippedAtAClaimStartAreLoggedOnce(t *testing.T) {
	var log SyncBuffer
	k, err := NewKafka(KafkaConfig{Brokers: []string{"b:9092"}, Topic: "t", Group: "g", RevokeTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	require.NoError(t, err)

	c := startTestClaimCommitted(k, 0, sarama.OffsetOldest, 50)
	assert.Equal(t, int64(80), k.begin(0, c.epoch, 80))
	c.stopSession()
	c = startTestClaimCommitted(k, 0, sarama.OffsetOldest, 50)
	assert.Equal(t, int64(80), k.begin(0, c.epoch, 80))
	c.stopSession()
	c = startTestClaimCommitted(k, 0, sarama.OffsetOldest, 50)
	assert.Equal(t, int64(90), k.begin(0, c.epoch, 90))
	c.stopSession()
	// The topic made again: a commit out of range from before is a gap
	// of its own.
	c = startTestClaimCommitted(k, 0, sarama.OffsetOldest, 10)
	assert.Equal(t, int64(60), k.begin(0, c.epoch, 60))

	assert.Regexp(t, skipped(50, 79)+`.*`+skipped(80, 89)+`.*`+skipped(10, 59)+`$`, log.String())
	assert.Equal(t, 3, strings.Count(log.String(), "records skipped"))
}

// A claim that started past a commit out of range, and whose fetch then
// fell out of range again before it queued a record (retention went on
// under a pipeline that got nothing), logged both gaps. A claim that
// starts again from the same commit, nothing committed since, logs only
// the records the log start moved past since the second.
func TestKafkaRecordsSkippedAfterAClaimStartAreNotLoggedAgain(t *testing.T) {
	var log SyncBuffer
	k, err := NewKafka(KafkaConfig{Brokers: []string{"b:9092"}, Topic: "t", Group: "g", RevokeTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	require.NoError(t, err)

	c := startTestClaimCommitted(k, 0, sarama.OffsetOldest, 50)
	assert.Equal(t, int64(80), k.begin(0, c.epoch, 80))
	k.refeed(0, c.epoch, 80, 90)
	c.stopSession()
	c = startTestClaimCommitted(k, 0, sarama.OffsetOldest, 50)
	assert.Equal(t, int64(95), k.begin(0, c.epoch, 95))

	assert.Regexp(t, skipped(50, 79)+`.*`+skipped(80, 89)+`.*`+skipped(90, 94)+`$`, log.String())
	assert.Equal(t, 3, strings.Count(log.String(), "records skipped"))
}
