package changelog

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/stream"
)

func TestMain(m *testing.M) {
	// sarama's metrics start one process-wide goroutine that never ends.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
}

// openStore returns a store on topic that the test closes.
func openStore(t *testing.T, addrs []string, topic string) *Kafka {
	t.Helper()
	k, err := NewKafka(Config{Brokers: addrs, Topic: topic, Partitions: 2, RestoreTimeout: 10 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { k.Close() })
	return k
}

// restoredStore starts a broker and opens a store on its topic "state",
// restored once (empty), as a pipeline does before its first checkpoint;
// both end with the test.
func restoredStore(t *testing.T) (*kafkatest.Broker, *Kafka) {
	t.Helper()
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	k := openStore(t, b.Addrs(), "state")
	restoreAll(t, k, nil)
	return b, k
}

// restoreAll restores partitions into a map of key to value, and returns
// it with the offsets.
func restoreAll(t *testing.T, k *Kafka, partitions []int32) (map[string]string, []stream.Offset) {
	t.Helper()
	state := map[string]string{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	offsets, err := k.Restore(ctx, partitions, func(e stream.Entry) error {
		if e.Deleted {
			delete(state, string(e.Key))
		} else {
			state[string(e.Key)] = string(e.Value)
		}
		return nil
	})
	require.NoError(t, err)
	return state, offsets
}

func entry(p int32, key, value string) stream.Entry {
	return stream.Entry{Op: "totals", Partition: p, Key: []byte(key), Value: []byte(value)}
}

// raw returns the record of an entry as Checkpoint writes it.
func raw(p int32, key, value string) kafkatest.Record {
	r := kafkatest.Record{Partition: p, Key: appendEntryKey(nil, "totals", []byte(key))}
	if value != "" {
		r.Value = appendEntryValue(nil, []byte(value))
	}
	return r
}

// markerAt returns the offset of the last marker of partition p.
func markerAt(t *testing.T, b *kafkatest.Broker, topic string, p int32) int64 {
	t.Helper()
	recs, err := b.Records(context.Background(), topic)
	require.NoError(t, err)
	at := int64(-1)
	for _, r := range recs {
		if r.Partition == p && string(r.Key) == string(markerKey) {
			at = r.Offset
		}
	}
	require.GreaterOrEqual(t, at, int64(0), "partition %d has a marker", p)
	return at
}

// A crash between the entries of a checkpoint and its marker leaves them
// at the end of the partition: Restore ignores them, and repairs them so
// that the next checkpoint's marker does not make them count.
func TestUnfinishedCheckpointIsIgnoredAndRepaired(t *testing.T) {
	b, k := restoredStore(t)
	ctx := context.Background()
	require.NoError(t, k.Checkpoint(ctx, &stream.Changes{
		Batch:   stream.Info{ID: 1},
		Offsets: []stream.Offset{{Source: "in", Partition: 0, Next: 10}},
		Entries: []stream.Entry{entry(0, "a", "1"), entry(0, "b", "2"), entry(1, "c", "3")},
	}))
	// The crashed checkpoint: a new value of a, a new key d, b deleted.
	require.NoError(t, b.Produce("state", raw(0, "a", "bad"), raw(0, "d", "bad"), raw(0, "b", "")))

	k2 := openStore(t, b.Addrs(), "state")
	state, offsets := restoreAll(t, k2, nil)
	assert.Equal(t, map[string]string{"a": "1", "b": "2", "c": "3"}, state)
	assert.Equal(t, []stream.Offset{{Source: "in", Partition: 0, Next: 10}}, offsets)

	require.NoError(t, k2.Checkpoint(ctx, &stream.Changes{
		Batch:   stream.Info{ID: 1},
		Offsets: []stream.Offset{{Source: "in", Partition: 0, Next: 20}},
		Entries: []stream.Entry{entry(0, "e", "5")},
	}))
	state, offsets = restoreAll(t, openStore(t, b.Addrs(), "state"), nil)
	assert.Equal(t, map[string]string{"a": "1", "b": "2", "c": "3", "e": "5"}, state, "the next marker did not make the crashed writes count")
	assert.Equal(t, []stream.Offset{{Source: "in", Partition: 0, Next: 20}}, offsets)
}

// The repair writes the values a crashed checkpoint overwrote, so that a
// compaction after it keeps them. The broker here is kfake itself, for
// its Compact; it compacts every record batch but the last, as Kafka
// compacts every segment but the active one.
func TestRepairSurvivesCompaction(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	addrs := c.ListenAddrs()
	ctx := context.Background()

	k := openStore(t, addrs, "state")
	restoreAll(t, k, nil)
	require.NoError(t, k.Checkpoint(ctx, &stream.Changes{
		Batch:   stream.Info{ID: 1},
		Offsets: []stream.Offset{{Source: "in", Partition: 0, Next: 10}},
		Entries: []stream.Entry{entry(0, "a", "1"), entry(0, "b", "2")},
	}))
	produce := func(recs ...kafkatest.Record) {
		cfg := sarama.NewConfig()
		cfg.Producer.Partitioner = sarama.NewManualPartitioner
		cfg.Producer.Return.Successes = true
		p, err := sarama.NewSyncProducer(addrs, cfg)
		require.NoError(t, err)
		defer p.Close()
		for _, r := range recs { // one record batch each
			m := &sarama.ProducerMessage{Topic: "state", Partition: r.Partition, Key: sarama.ByteEncoder(r.Key)}
			if r.Value != nil {
				m.Value = sarama.ByteEncoder(r.Value)
			}
			_, _, err := p.SendMessage(m)
			require.NoError(t, err)
		}
	}
	produce(raw(0, "a", "bad"), raw(0, "b", ""), raw(0, "c", "bad"))

	before := readRecords(t, addrs)
	state, _ := restoreAll(t, openStore(t, addrs, "state"), nil)
	require.Equal(t, map[string]string{"a": "1", "b": "2"}, state)
	c.Compact()

	// Compaction dropped every record of a and b written before the
	// repair: only the repair's are left.
	after := readRecords(t, addrs)
	for off, rec := range before {
		assert.NotContains(t, after, off, "record %s at %d compacted away", rec, off)
	}
	assert.Len(t, after, 3, "the repair's a, b and c")
	state, offsets := restoreAll(t, openStore(t, addrs, "state"), nil)
	assert.Equal(t, map[string]string{"a": "1", "b": "2"}, state)
	assert.Equal(t, []stream.Offset{{Source: "in", Partition: 0, Next: 10}}, offsets)
}

// readRecords returns the entry records of partition 0 of topic state, as
// "key=value" by offset.
func readRecords(t *testing.T, addrs []string) map[int64]string {
	t.Helper()
	cons, err := sarama.NewConsumer(addrs, nil)
	require.NoError(t, err)
	defer cons.Close()
	client, err := sarama.NewClient(addrs, nil)
	require.NoError(t, err)
	defer client.Close()
	end, err := client.GetOffset("state", 0, sarama.OffsetNewest)
	require.NoError(t, err)
	pc, err := cons.ConsumePartition("state", 0, sarama.OffsetOldest)
	require.NoError(t, err)
	defer pc.Close()
	out := map[int64]string{}
	for m := range pc.Messages() {
		if op, key, isMarker, err := decodeKey(m.Key); err == nil && !isMarker && op == "totals" {
			out[m.Offset] = string(key) + "=" + string(m.Value)
		}
		if m.Offset >= end-1 {
			break
		}
	}
	return out
}

// A checkpoint cut short after the marker of one of its two partitions:
// restoring all partitions rolls both back, with the offsets before it;
// restoring the partition alone keeps it, with its input partition's
// offset, as a Keyed pipeline's state may.
func TestCheckpointCutShortBetweenMarkers(t *testing.T) {
	b, k := restoredStore(t)
	ctx := context.Background()
	first := []stream.Offset{{Source: "in", Partition: 0, Next: 5}, {Source: "in", Partition: 1, Next: 7}}
	require.NoError(t, k.Checkpoint(ctx, &stream.Changes{
		Batch: stream.Info{ID: 1}, Offsets: first,
		Entries: []stream.Entry{entry(0, "a", "1"), entry(1, "b", "2")},
	}))
	// Checkpoint 2 writes both partitions, but only partition 0's marker.
	second := []stream.Offset{{Source: "in", Partition: 0, Next: 9}, {Source: "in", Partition: 1, Next: 11}}
	m := &marker{seq: 2, batch: 2, prev: markerAt(t, b, "state", 0), parts: []int32{0, 1}, offsets: second}
	require.NoError(t, b.Produce("state", raw(0, "a", "10"), raw(0, "x", "10"), raw(1, "b", "20")))
	require.NoError(t, b.Produce("state", kafkatest.Record{Partition: 0, Key: markerKey, Value: appendMarker(nil, m)}))

	// Restoring partition 0 alone writes nothing: it ends with a marker.
	state, offsets := restoreAll(t, openStore(t, b.Addrs(), "state"), []int32{0})
	assert.Equal(t, map[string]string{"a": "10", "x": "10"}, state, "partition 0 alone is at checkpoint 2")
	assert.Equal(t, []stream.Offset{{Source: "in", Partition: 0, Next: 9}}, offsets)

	for range 2 { // the second time, after the repair
		state, offsets = restoreAll(t, openStore(t, b.Addrs(), "state"), nil)
		assert.Equal(t, map[string]string{"a": "1", "b": "2"}, state, "all partitions are at checkpoint 1")
		assert.ElementsMatch(t, first, offsets)
	}
	state, offsets = restoreAll(t, openStore(t, b.Addrs(), "state"), []int32{0})
	assert.Equal(t, map[string]string{"a": "1"}, state, "partition 0 was repaired")
	assert.Equal(t, []stream.Offset{{Source: "in", Partition: 0, Next: 5}}, offsets)
	state, offsets = restoreAll(t, openStore(t, b.Addrs(), "state"), []int32{1})
	assert.Equal(t, map[string]string{"b": "2"}, state)
	assert.Equal(t, []stream.Offset{{Source: "in", Partition: 1, Next: 7}}, offsets)
}

// A repair cut short: it rolled partition 1 back and revoked checkpoint 2,
// but crashed before it reached partition 0, whose last marker is still
// checkpoint 2's. The revocation rolls partition 0 back too.
func TestRevokedCheckpointStaysRevoked(t *testing.T) {
	b, k := restoredStore(t)
	ctx := context.Background()
	first := []stream.Offset{{Source: "in", Partition: 0, Next: 5}}
	require.NoError(t, k.Checkpoint(ctx, &stream.Changes{
		Batch: stream.Info{ID: 1}, Offsets: first,
		Entries: []stream.Entry{entry(0, "a", "1"), entry(1, "b", "2")},
	}))
	require.Equal(t, uint64(1), k.seq)
	second := &marker{seq: 2, batch: 2, prev: markerAt(t, b, "state", 0), parts: []int32{0, 1}, offsets: []stream.Offset{{Source: "in", Partition: 0, Next: 9}}}
	prev1 := markerAt(t, b, "state", 1)
	require.NoError(t, b.Produce("state", raw(0, "a", "10"), raw(1, "b", "20")))
	require.NoError(t, b.Produce("state", kafkatest.Record{Partition: 0, Key: markerKey, Value: appendMarker(nil, second)}))
	second.prev = prev1
	require.NoError(t, b.Produce("state", kafkatest.Record{Partition: 1, Key: markerKey, Value: appendMarker(nil, second)}))
	// The repair of partition 1 only.
	repair := &marker{repair: true, seq: 3, prev: prev1, parts: []int32{0, 1}, revokes: []uint64{2}, offsets: first}
	require.NoError(t, b.Produce("state", raw(1, "b", "2")))
	require.NoError(t, b.Produce("state", kafkatest.Record{Partition: 1, Key: markerKey, Value: appendMarker(nil, repair)}))

	state, offsets := restoreAll(t, openStore(t, b.Addrs(), "state"), nil)
	assert.Equal(t, map[string]string{"a": "1", "b": "2"}, state)
	assert.Equal(t, first, offsets)
}

func TestRollBackPastACompactedMarkerFails(t *testing.T) {
	b, k := restoredStore(t)
	require.NoError(t, k.Checkpoint(context.Background(), &stream.Changes{Batch: stream.Info{ID: 1}, Entries: []stream.Entry{entry(0, "a", "1"), entry(1, "b", "1")}}))
	// Checkpoint 2 reached partition 0 only, and names a previous marker
	// that is not there (as if compacted away).
	m := &marker{seq: 2, prev: 0, parts: []int32{0, 1}}
	require.NoError(t, b.Produce("state", raw(0, "a", "2"), kafkatest.Record{Partition: 0, Key: markerKey, Value: appendMarker(nil, m)}))
	_, err := openStore(t, b.Addrs(), "state").Restore(context.Background(), nil, func(stream.Entry) error { return nil })
	require.ErrorIs(t, err, ErrCorrupt)
	assert.ErrorContains(t, err, "state/0")
	assert.ErrorContains(t, err, "cannot be rolled back")
}

func TestRestoreLogsItsProgress(t *testing.T) {
	defer func(d time.Duration) { progressEvery = d }(progressEvery)
	progressEvery = 0
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	defer b.Close()
	var logs strings.Builder
	k, err := NewKafka(Config{Brokers: b.Addrs(), Topic: "state", Partitions: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	defer k.Close()
	restoreAll(t, k, nil)
	require.NoError(t, k.Checkpoint(t.Context(), &stream.Changes{Entries: []stream.Entry{entry(0, "a", "1")}}))
	restoreAll(t, k, nil)
	assert.Contains(t, logs.String(), `msg="restoring changelog" topic=state partition=0 records=`)
	assert.Regexp(t, `msg="restoring changelog" .* of=2 done=\d+\.\d% eta=`, logs.String(), "the partition's 2 records: a share done and an ETA")
	// 3 records: the end of the partition (entry and marker) to find the
	// last marker, then the entry again.
	assert.Contains(t, logs.String(), `msg="changelog restored" topic=state partitions=1 records=3 entries=1`)
}
