package changelog_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink/changelog"
	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/checkpoint"
)

func startBroker(t testing.TB) *kafkatest.Broker {
	t.Helper()
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

// newStore returns a store on topic, which it creates with 4 partitions,
// closed when the test ends.
func newStore(t testing.TB, b *kafkatest.Broker, topic string) *changelog.Kafka {
	t.Helper()
	k, err := changelog.NewKafka(changelog.Config{Brokers: b.Addrs(), Topic: topic, Partitions: 4, RestoreTimeout: 10 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, k.Close()) })
	return k
}

// state is what a restore put, by operator, partition and key.
type state map[string]string

func (s state) put(e stream.Entry) error {
	k := fmt.Sprintf("%s/%d/%s", e.Op, e.Partition, e.Key)
	if e.Deleted {
		delete(s, k)
	} else {
		s[k] = string(e.Value)
	}
	return nil
}

func restore(t *testing.T, k *changelog.Kafka, partitions []int32) (state, []stream.Offset) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := state{}
	offsets, err := k.Restore(ctx, partitions, s.put)
	require.NoError(t, err)
	return s, offsets
}

func TestRoundTrip(t *testing.T) {
	b := startBroker(t)
	k := newStore(t, b, "rt")
	s, offsets := restore(t, k, nil)
	require.Empty(t, s, "a topic that does not exist is an empty state")
	require.Empty(t, offsets)

	ctx := context.Background()
	want := state{}
	rng := rand.New(rand.NewPCG(1, 2))
	wantOffsets := map[int32]stream.Offset{}
	for batch := int64(1); batch <= 20; batch++ {
		c := &stream.Changes{Batch: stream.Info{ID: batch}}
		for p := range int32(3) {
			if p == 0 || rng.IntN(2) == 0 && batch < 20 { // some input partitions have nothing new
				o := stream.Offset{Source: "in", Partition: p, Next: batch*100 + int64(p)}
				c.Offsets = append(c.Offsets, o)
				wantOffsets[p] = o
			}
		}
		for range 50 {
			e := stream.Entry{Op: []string{"totals", "counts"}[rng.IntN(2)], Partition: rng.Int32N(4), Key: fmt.Appendf(nil, "k%d", rng.IntN(40))}
			if rng.IntN(5) == 0 {
				e.Deleted = true
			} else {
				e.Value = fmt.Appendf(nil, "v%d", rng.IntN(1000))
			}
			if rng.IntN(20) == 0 {
				e.Value = []byte{} // an empty value is not a delete
			}
			c.Entries = append(c.Entries, e)
			require.NoError(t, want.put(e))
		}
		require.NoError(t, k.Checkpoint(ctx, c))
	}
	require.NotEmpty(t, want)

	got, offsets := restore(t, newStore(t, b, "rt"), nil)
	assert.Equal(t, want, got)
	assert.ElementsMatch(t, slices.Collect(maps.Values(wantOffsets)), offsets, "the last offset of every input partition")

	// The store that wrote it reads the same.
	got, _ = restore(t, k, nil)
	assert.Equal(t, want, got)
}

// countingInterceptor adds a header to every message it sees and counts them.
type countingInterceptor struct{ seen *int }

func (c countingInterceptor) OnSend(m *sarama.ProducerMessage) {
	*c.seen++
	m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte("seen"), Value: []byte("yes")})
}

// The producer interceptors of Config.Sarama see every record the store
// writes, once, as they would with sarama's producers, and what they add
// does not get in the way of a restore.
func TestCheckpointRunsInterceptors(t *testing.T) {
	b := startBroker(t)
	var seen int
	sc := sarama.NewConfig()
	sc.Producer.Interceptors = []sarama.ProducerInterceptor{countingInterceptor{&seen}}
	k, err := changelog.NewKafka(changelog.Config{Brokers: b.Addrs(), Topic: "icpt", Partitions: 2, RestoreTimeout: 10 * time.Second, Sarama: sc})
	require.NoError(t, err)
	defer func() { assert.NoError(t, k.Close()) }()
	_, _ = restore(t, k, nil)

	c := &stream.Changes{Batch: stream.Info{ID: 1}, Offsets: []stream.Offset{{Source: "in", Partition: 0, Next: 7}}}
	want := state{}
	for i := range 5 {
		e := stream.Entry{Op: "totals", Partition: int32(i % 2), Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i)}
		c.Entries = append(c.Entries, e)
		require.NoError(t, want.put(e))
	}
	require.NoError(t, k.Checkpoint(context.Background(), c))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := b.Records(ctx, "icpt")
	require.NoError(t, err)
	require.NotEmpty(t, recs)
	assert.Equal(t, len(recs), seen, "each record written seen once")
	for _, r := range recs {
		assert.Equal(t, "yes", r.Headers["seen"], "partition %d offset %d", r.Partition, r.Offset)
	}
	got, offsets := restore(t, newStore(t, b, "icpt"), nil)
	assert.Equal(t, want, got)
	assert.Equal(t, c.Offsets, offsets)
}

func TestRestoreSomePartitions(t *testing.T) {
	b := startBroker(t)
	k := newStore(t, b, "some")
	restore(t, k, nil)
	require.NoError(t, k.Checkpoint(context.Background(), &stream.Changes{
		Batch: stream.Info{ID: 1},
		Offsets: []stream.Offset{
			{Source: "in", Partition: 0, Next: 10}, {Source: "in", Partition: 1, Next: 11},
			{Source: "in", Partition: 2, Next: 12}, {Source: "in", Partition: 3, Next: 13},
		},
		Entries: []stream.Entry{
			{Op: "a", Partition: 0, Key: []byte("x"), Value: []byte("1")},
			{Op: "a", Partition: 1, Key: []byte("y"), Value: []byte("2")},
			{Op: "a", Partition: 2, Key: []byte("z"), Value: []byte("3")},
		},
	}))
	s, offsets := restore(t, newStore(t, b, "some"), []int32{2, 0, 9})
	assert.Equal(t, state{"a/0/x": "1", "a/2/z": "3"}, s)
	assert.ElementsMatch(t, []stream.Offset{{Source: "in", Partition: 0, Next: 10}, {Source: "in", Partition: 2, Next: 12}}, offsets,
		"the offsets of the input partitions restored, not of the others")

	s, offsets = restore(t, newStore(t, b, "some"), []int32{3})
	assert.Empty(t, s)
	assert.Equal(t, []stream.Offset{{Source: "in", Partition: 3, Next: 13}}, offsets, "a partition without state has its offsets too")
}

// inputLog is a source over a fixed log of pairs in 4 partitions, keyed by
// key%4 like a Kafka topic written with a key partitioner. It starts at
// the committed offsets of the group it shares with other members, can
// own some partitions only (an Assigner, as a consumer group member), and
// can fail after some records, as a crashed process would stop.
type inputLog struct {
	recs       *[4][]stream.Pair[int64, int64]
	group      *group
	owned      []int32 // nil: all, and no Assigner
	next       [4]int64
	failAfter  int // records to deliver before failing; 0: never
	failCommit bool
	given      int
}

type group struct {
	mu        sync.Mutex
	committed [4]int64
}

var errCrash = errors.New("crash")

func newLog(n int, seed uint64) *inputLog {
	rng := rand.New(rand.NewPCG(seed, 1))
	l := &inputLog{recs: &[4][]stream.Pair[int64, int64]{}, group: &group{}}
	for range n {
		k := 1000 + rng.Int64N(200)
		l.recs[k%4] = append(l.recs[k%4], stream.KV(k, 1+rng.Int64N(3)))
	}
	return l
}

// member returns a new run of the log from the group's committed offsets,
// owning the given partitions (nil: all).
func (l *inputLog) member(owned []int32, failAfter int) *inputLog {
	l.group.mu.Lock()
	defer l.group.mu.Unlock()
	return &inputLog{recs: l.recs, group: l.group, owned: owned, next: l.group.committed, failAfter: failAfter}
}

func (l *inputLog) owns(p int32) bool { return l.owned == nil || slices.Contains(l.owned, p) }

func (l *inputLog) Poll(_ context.Context, buf []stream.Record[stream.Pair[int64, int64]]) (int, error) {
	n := 0
	for p := range int32(4) {
		for n < len(buf) && l.owns(p) && l.next[p] < int64(len(l.recs[p])) {
			if l.failAfter > 0 && l.given == l.failAfter {
				return n, errCrash
			}
			buf[n] = stream.Record[stream.Pair[int64, int64]]{Value: l.recs[p][l.next[p]], Origin: stream.Origin{Source: "log", Partition: p, Offset: l.next[p]}}
			l.next[p]++
			l.given++
			n++
		}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (l *inputLog) Commit(_ context.Context, offsets []stream.Offset) error {
	if l.failCommit {
		return errCrash
	}
	l.group.mu.Lock()
	defer l.group.mu.Unlock()
	for _, o := range offsets {
		l.group.committed[o.Partition] = max(l.group.committed[o.Partition], o.Next)
	}
	return nil
}

func (l *inputLog) totals(parts ...int32) map[int64]int64 {
	out := map[int64]int64{}
	for p, recs := range l.recs {
		if parts != nil && !slices.Contains(parts, int32(p)) {
			continue
		}
		for _, kv := range recs {
			out[kv.Key] += kv.Value
		}
	}
	return out
}

// member is an inputLog owning some partitions: an Assigner.
type member struct{ *inputLog }

func (m member) Assignment() []int32 { return m.owned }

func sum(_ int64, vs []int64, s int64, _ bool) (int64, bool) {
	for _, v := range vs {
		s += v
	}
	return s, true
}

// runTotals runs the running-totals pipeline over src with store, and
// returns the state after the last batch.
func runTotals(t *testing.T, src stream.Source[stream.Pair[int64, int64]], store stream.Store, keyed bool, opts ...stream.Option) (map[int64]int64, error) {
	t.Helper()
	p := stream.NewPipeline(append([]stream.Option{stream.Interval(0), stream.MaxRecords(37), stream.Parallelism(4), stream.WithStore(store)}, opts...)...)
	in := stream.From(p, src)
	if keyed {
		in = stream.Keyed(in)
	}
	totals := stream.UpdateStateByKey(in, sum).Named("totals")
	var last map[int64]int64
	stream.ForEachBatch(totals, func(_ context.Context, b *stream.Batch[stream.Pair[int64, int64]]) error {
		last = map[int64]int64{}
		for kv := range b.All() {
			if _, dup := last[kv.Key]; dup {
				t.Errorf("key %d in two partitions", kv.Key)
			}
			last[kv.Key] = kv.Value
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return last, p.Run(ctx)
}

func TestRestartAfterCrashCountsEveryRecordOnce(t *testing.T) {
	for _, keyed := range []bool{true, false} {
		t.Run(map[bool]string{true: "keyed", false: "shuffled"}[keyed], func(t *testing.T) {
			b := startBroker(t)
			l := newLog(2000, 1)
			src := l.member(nil, 700)
			_, err := runTotals(t, src, newStore(t, b, "totals"), keyed)
			require.ErrorIs(t, err, errCrash)
			require.NotZero(t, l.group.committed, "some batches were committed before the crash")

			// Crash between the checkpoint and the commit: the checkpoint
			// is ahead of the source's committed offsets.
			src = l.member(nil, 1300)
			src.failCommit = true
			_, err = runTotals(t, src, newStore(t, b, "totals"), keyed)
			require.ErrorIs(t, err, errCrash)

			// Crash in the middle of a checkpoint: some of its entries are
			// written, and no marker.
			_, err = runTotals(t, l.member(nil, 0), &refusing{newStore(t, b, "totals"), 3}, keyed)
			require.ErrorContains(t, err, "batch 3: checkpoint")
			assert.True(t, endsWithEntries(t, b, "totals"), "a partition ends with an unfinished checkpoint")

			// A crash after the next checkpoint, of a smaller batch than
			// the unfinished one: its marker must not make the unfinished
			// writes count.
			_, err = runTotals(t, l.member(nil, 12), newStore(t, b, "totals"), keyed, stream.MaxRecords(11))
			require.ErrorIs(t, err, errCrash)

			res, err := runTotals(t, l.member(nil, 0), newStore(t, b, "totals"), keyed)
			require.NoError(t, err)
			assert.Equal(t, l.totals(), res, "no record lost, none counted twice")

			// Nothing left to read: the state is the changelog's.
			res, err = runTotals(t, l.member(nil, 0), newStore(t, b, "totals"), keyed)
			require.NoError(t, err)
			assert.Equal(t, l.totals(), res, "the changelog holds what the last run counted")
		})
	}
}

// refusing is a store whose checkpoint of batch at fails half written: it
// adds an entry too large for the producer, which refuses that one and
// writes the others.
type refusing struct {
	*changelog.Kafka
	at int64
}

func (r *refusing) Checkpoint(ctx context.Context, c *stream.Changes) error {
	if c.Batch.ID == r.at {
		big := stream.Entry{Op: "totals", Partition: 0, Key: []byte{0}, Value: make([]byte, 2<<20)}
		c = &stream.Changes{Batch: c.Batch, Offsets: c.Offsets, Entries: append(slices.Clone(c.Entries), big)}
	}
	return r.Kafka.Checkpoint(ctx, c)
}

// endsWithEntries reports whether a partition of topic ends with records
// other than a marker.
func endsWithEntries(t *testing.T, b *kafkatest.Broker, topic string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := b.Records(ctx, topic)
	require.NoError(t, err)
	last := map[int32]string{}
	for _, r := range recs {
		last[r.Partition] = string(r.Key)
	}
	for _, key := range last {
		if key != "\x01\x01" {
			return true
		}
	}
	return false
}

// The partitions of a keyed pipeline move between processes, as a
// consumer group moves them, each process restoring the partitions it is
// given from the changelog, whoever wrote them.
func TestPartitionsMoveBetweenProcesses(t *testing.T) {
	b := startBroker(t)
	l := newLog(3000, 7)
	run := func(owned []int32, failAfter int, failCommit bool) (map[int64]int64, error) {
		src := member{l.member(owned, failAfter)}
		src.failCommit = failCommit
		return runTotals(t, src, newStore(t, b, "moves"), true)
	}
	_, err := run([]int32{0, 1}, 400, false)
	require.ErrorIs(t, err, errCrash)
	_, err = run([]int32{2, 3}, 0, true) // checkpointed its first batch, then died
	require.ErrorIs(t, err, errCrash)
	_, err = run([]int32{1, 2}, 500, false)
	require.ErrorIs(t, err, errCrash)
	res, err := run([]int32{0, 3}, 0, false)
	require.NoError(t, err)
	assert.Equal(t, l.totals(0, 3), res, "partitions 0 and 3, from the state others wrote")
	res, err = run([]int32{1, 2}, 0, false)
	require.NoError(t, err)
	assert.Equal(t, l.totals(1, 2), res)
	res, err = run([]int32{0, 1, 2, 3}, 0, false)
	require.NoError(t, err)
	assert.Equal(t, l.totals(), res, "no record lost, none counted twice")
}

// A pipeline whose state is placed by hash, restarted under a smaller
// Parallelism, moves keys to other partitions: its checkpoint writes each
// under its new partition and deletes it under the old. The restore after
// that reads the old partition's values and delete too, after the new
// partition's value: they stand for the old partition, not for the key,
// whose state stays. The same through a checkpoint directory, which gives
// only each partition's last state.
func TestRestoreAfterTheParallelismChangedKeepsMovedKeys(t *testing.T) {
	b := startBroker(t)
	for name, open := range map[string]func() stream.Store{
		"changelog": func() stream.Store { return newStore(t, b, "totals") },
		"directory": func() func() stream.Store {
			dir := t.TempDir()
			var last *checkpoint.Dir // a run's, done: the next opens the directory again
			t.Cleanup(func() { last.Close() })
			return func() stream.Store {
				if last != nil {
					require.NoError(t, last.Close())
				}
				d, err := checkpoint.Open(dir)
				require.NoError(t, err)
				last = d
				return d
			}
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			l := newLog(2000, 7)
			for i, par := range []int{4, 2, 2, 4, 4} {
				res, err := runTotals(t, l.member(nil, 0), open(), false, stream.Parallelism(par))
				require.NoError(t, err)
				require.Equal(t, l.totals(), res, "run %d, parallelism %d", i+1, par)
			}
		})
	}
}

func TestCheckpointNeedsARestore(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	k := newStore(t, b, "fresh")
	c := &stream.Changes{Batch: stream.Info{ID: 1}, Entries: []stream.Entry{{Op: "a", Partition: 1, Key: []byte("k"), Value: []byte("v")}}}
	err := k.Checkpoint(ctx, c)
	require.ErrorIs(t, err, changelog.ErrNotRestored)
	assert.ErrorContains(t, err, "fresh/1")

	restore(t, k, []int32{0})
	require.ErrorIs(t, k.Checkpoint(ctx, c), changelog.ErrNotRestored, "partition 1 was not restored")
	restore(t, k, []int32{1})
	require.NoError(t, k.Checkpoint(ctx, c))

	// A record larger than the producer's limit fails the checkpoint;
	// then nothing is written until a restore.
	big := &stream.Changes{Batch: stream.Info{ID: 2}, Entries: []stream.Entry{{Op: "a", Partition: 1, Key: []byte("k"), Value: make([]byte, 2<<20)}}}
	require.Error(t, k.Checkpoint(ctx, big))
	require.ErrorIs(t, k.Checkpoint(ctx, c), changelog.ErrNotRestored)
	s, _ := restore(t, k, []int32{1})
	assert.Equal(t, state{"a/1/k": "v"}, s)
	require.NoError(t, k.Checkpoint(ctx, c))
}

func TestTopic(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	admin, err := sarama.NewClusterAdmin(b.Addrs(), sarama.NewConfig())
	require.NoError(t, err)
	defer admin.Close()
	entryIn := func(p int32) *stream.Changes {
		return &stream.Changes{Batch: stream.Info{ID: 1}, Entries: []stream.Entry{{Op: "a", Partition: p, Key: []byte("k"), Value: []byte("v")}}}
	}

	t.Run("created compacted", func(t *testing.T) {
		k, err := changelog.NewKafka(changelog.Config{Brokers: b.Addrs(), Topic: "made", Partitions: 3, TopicConfig: map[string]string{"min.compaction.lag.ms": "3600000"}})
		require.NoError(t, err)
		defer k.Close()
		restore(t, k, nil)
		require.NoError(t, k.Checkpoint(ctx, entryIn(2)))
		topics, err := admin.DescribeTopics([]string{"made"})
		require.NoError(t, err)
		assert.Len(t, topics[0].Partitions, 3)
		res, err := admin.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: "made"}}, sarama.DescribeConfigsOptions{})
		require.NoError(t, err)
		require.Len(t, res, 1)
		got := map[string]string{}
		for _, e := range res[0].Configs {
			got[e.Name] = e.Value
		}
		assert.Equal(t, "compact", got["cleanup.policy"])
		assert.Equal(t, "3600000", got["min.compaction.lag.ms"])

		err = k.Checkpoint(ctx, entryIn(3))
		require.Error(t, err)
		assert.ErrorContains(t, err, "topic made has 3 partitions; partition 3 is needed")
	})
	// Kafka never compacts the segment being written, which rolls by
	// default at 1 GiB or after 7 days: a restore would read that much of
	// old values. A topic the store creates rolls every 10 minutes and
	// compacts nothing younger than an hour (see Repair in the package
	// doc), but for settings of TopicConfig, which win.
	for _, c := range []struct {
		topic   string
		config  map[string]string
		want    string
		wantLag string
	}{
		{"rolled", nil, "600000", "3600000"},
		{"rolled-mine", map[string]string{"segment.ms": "60000"}, "60000", "3600000"},
		{"lag-mine", map[string]string{"min.compaction.lag.ms": "0"}, "600000", "0"},
	} {
		t.Run("rolls its segments: "+c.topic, func(t *testing.T) {
			k, err := changelog.NewKafka(changelog.Config{Brokers: b.Addrs(), Topic: c.topic, Partitions: 1, TopicConfig: c.config})
			require.NoError(t, err)
			defer k.Close()
			restore(t, k, nil)
			require.NoError(t, k.Checkpoint(ctx, entryIn(0)))
			res, err := admin.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: c.topic, ConfigNames: []string{"segment.ms", "min.compaction.lag.ms", "cleanup.policy"}}}, sarama.DescribeConfigsOptions{})
			require.NoError(t, err)
			require.Len(t, res, 1)
			got := map[string]string{}
			for _, e := range res[0].Configs {
				got[e.Name] = e.Value
			}
			assert.Equal(t, map[string]string{"segment.ms": c.want, "min.compaction.lag.ms": c.wantLag, "cleanup.policy": "compact"}, got)
		})
	}
	t.Run("missing without partitions", func(t *testing.T) {
		k, err := changelog.NewKafka(changelog.Config{Brokers: b.Addrs(), Topic: "absent"})
		require.NoError(t, err)
		defer k.Close()
		restore(t, k, nil)
		err = k.Checkpoint(ctx, entryIn(0))
		assert.ErrorContains(t, err, "topic absent does not exist")
	})
	t.Run("not compacted", func(t *testing.T) {
		require.NoError(t, b.CreateTopic("plain", 2))
		k := newStore(t, b, "plain")
		restore(t, k, nil)
		err := k.Checkpoint(ctx, entryIn(0))
		assert.ErrorContains(t, err, "topic plain has cleanup.policy=delete")
	})
}

func TestCorruptRecordsAreErrorsNamingThem(t *testing.T) {
	entryKey := []byte{1, 0, 6, 't', 'o', 't', 'a', 'l', 's', 42}
	for _, tc := range []struct {
		name       string
		key, value []byte
		is         error
		says       string
	}{
		{"null key", nil, []byte{1, 2}, changelog.ErrCorrupt, "key of 0 bytes"},
		{"key of a later version", []byte{2, 0, 1, 'a', 'k'}, []byte{2, 1}, changelog.ErrVersion, "version 2 in the key"},
		{"key of an unknown kind", []byte{1, 7, 1, 'a'}, []byte{1}, changelog.ErrCorrupt, "kind 7"},
		{"operator longer than the key", []byte{1, 0, 9, 'a'}, []byte{1}, changelog.ErrCorrupt, "operator length"},
		{"value of a later version", entryKey, []byte{2, 5}, changelog.ErrVersion, "version 2 in the value"},
		{"marker of a later version", []byte{1, 1}, []byte{2, 0, 1}, changelog.ErrVersion, "version 2 in a marker"},
		{"truncated marker", []byte{1, 1}, []byte{1, 0, 1, 2}, changelog.ErrCorrupt, "marker"},
		{"marker with trailing bytes", []byte{1, 1}, []byte{1, 0, 1, 0, 1, 0, 0, 0, 9}, changelog.ErrCorrupt, "after the end"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t)
			k := newStore(t, b, "bad")
			restore(t, k, nil)
			require.NoError(t, k.Checkpoint(context.Background(), &stream.Changes{Batch: stream.Info{ID: 1}, Entries: []stream.Entry{{Op: "totals", Partition: 2, Key: []byte{1}, Value: []byte{2}}}}))
			// The bad record, then a good checkpoint after it.
			require.NoError(t, b.Produce("bad", kafkatest.Record{Partition: 2, Key: tc.key, Value: tc.value}))
			require.NoError(t, k.Checkpoint(context.Background(), &stream.Changes{Batch: stream.Info{ID: 2}, Entries: []stream.Entry{{Op: "totals", Partition: 2, Key: []byte{3}, Value: []byte{4}}}}))

			_, err := newStore(t, b, "bad").Restore(context.Background(), nil, state{}.put)
			require.ErrorIs(t, err, tc.is)
			assert.ErrorContains(t, err, "bad/2@2", "names the topic, partition and offset")
			assert.ErrorContains(t, err, tc.says)
		})
	}
}

func TestPutErrorStopsTheRestore(t *testing.T) {
	b := startBroker(t)
	k := newStore(t, b, "put")
	restore(t, k, nil)
	require.NoError(t, k.Checkpoint(context.Background(), &stream.Changes{Entries: []stream.Entry{{Op: "old", Key: []byte("k"), Value: []byte("v")}}}))
	boom := errors.New("no operator named old")
	_, err := newStore(t, b, "put").Restore(context.Background(), nil, func(stream.Entry) error { return boom })
	require.ErrorIs(t, err, boom)
	assert.ErrorContains(t, err, "put/0@")
}

func TestRestoreStopsWhenCtxIsDone(t *testing.T) {
	b := startBroker(t)
	k := newStore(t, b, "slow")
	restore(t, k, nil)
	require.NoError(t, k.Checkpoint(context.Background(), &stream.Changes{Entries: []stream.Entry{{Op: "a", Key: []byte("k"), Value: []byte("v")}}}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newStore(t, b, "slow").Restore(ctx, nil, state{}.put)
	require.ErrorIs(t, err, context.Canceled)
}

func TestCloseLeavesNoGoroutine(t *testing.T) {
	b := startBroker(t)
	ignore := []goleak.Option{goleak.IgnoreCurrent(), goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick")}
	k, err := changelog.NewKafka(changelog.Config{Brokers: b.Addrs(), Topic: "leak", Partitions: 2})
	require.NoError(t, err)
	goleak.VerifyNone(t, ignore...) // NewKafka starts nothing

	restore(t, k, nil)
	require.NoError(t, k.Checkpoint(context.Background(), &stream.Changes{Entries: []stream.Entry{{Op: "a", Key: []byte("k"), Value: []byte("v")}}}))
	s, _ := restore(t, k, nil)
	require.Len(t, s, 1)
	require.NoError(t, k.Close())
	require.NoError(t, k.Close(), "Close twice")
	goleak.VerifyNone(t, ignore...)

	_, err = k.Restore(context.Background(), nil, s.put)
	require.ErrorIs(t, err, changelog.ErrClosed)
	require.ErrorIs(t, k.Checkpoint(context.Background(), &stream.Changes{Entries: []stream.Entry{{Op: "a"}}}), changelog.ErrClosed)
}

func TestNewKafkaValidates(t *testing.T) {
	for _, tc := range []struct {
		cfg  changelog.Config
		says string
	}{
		{changelog.Config{Topic: "t"}, "no brokers"},
		{changelog.Config{Brokers: []string{"x:1"}}, "no topic"},
		{changelog.Config{Brokers: []string{"x:1"}, Topic: "t", Partitions: -1}, "partitions"},
		{changelog.Config{Brokers: []string{"x:1"}, Topic: "t", ConnectTimeout: -time.Second}, "connect timeout -1s"},
		{changelog.Config{Brokers: []string{"x:1"}, Topic: "t", TopicConfig: map[string]string{"cleanup.policy": "delete"}}, "must be compacted"},
		{changelog.Config{Brokers: []string{"x:1"}, Topic: "t", Sarama: func() *sarama.Config {
			c := sarama.NewConfig()
			c.Version = sarama.V0_10_2_0
			return c
		}()}, "0.11"},
	} {
		_, err := changelog.NewKafka(tc.cfg)
		assert.ErrorContains(t, err, tc.says)
	}
	_, err := changelog.NewKafka(changelog.Config{Brokers: []string{"127.0.0.1:1"}, Topic: "t"})
	assert.NoError(t, err, "NewKafka does not connect")
}

// Brokers that take connections and never answer fail Restore within
// ConnectTimeout, or as soon as its ctx ends, not after sarama's reads of
// 30s each and their retries, for minutes.
func TestRestoreSilentBrokers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		ctxAt   time.Duration
	}{
		{"connect timeout", time.Second, time.Minute},
		{"ctx", 0, 200 * time.Millisecond}, // the default ConnectTimeout
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, hangUp := kafkatest.SilentBrokers(t)
			k, err := changelog.NewKafka(changelog.Config{Brokers: []string{addr}, Topic: "totals", ConnectTimeout: tc.timeout})
			require.NoError(t, err)
			defer func() { assert.NoError(t, k.Close()) }()
			ctx, cancel := context.WithTimeout(context.Background(), tc.ctxAt)
			defer cancel()
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				_, err := k.Restore(ctx, nil, state{}.put)
				done <- err
			}()
			select {
			case err := <-done:
				if tc.timeout > 0 {
					assert.ErrorContains(t, err, "changelog totals: brokers ["+addr+"] unreachable")
				} else {
					assert.ErrorIs(t, err, context.DeadlineExceeded)
					assert.ErrorContains(t, err, "changelog totals: connect to ["+addr+"]")
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Restore still blocked after %v", time.Since(start))
				hangUp() // the reads fail, and sarama gives up
				<-done
			}
		})
	}
}
