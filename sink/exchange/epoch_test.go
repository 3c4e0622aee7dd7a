package exchange

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
)

// epochs returns the partition -> epoch of partials.
func epochs(ps []Partial) map[int32]int64 {
	out := map[int32]int64{}
	for _, p := range ps {
		out[p.Partition] = p.Epoch
	}
	return out
}

// A partition's owner publishes in the epoch of its ownership: the one it
// read of its own partial, or, taking the partition over from another
// process, a new one, the offset after the last record it read. A process
// that read nothing of the partition publishes epoch 0: unknown.
func TestPublishersNumberTheirOwnerships(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	a, c := newExchange(t, b, "a"), newExchange(t, b, "c")
	ctx := context.Background()
	require.NoError(t, a.Publish(ctx, []Partial{{Partition: 0, Value: []byte("a0")}}))
	assert.Equal(t, map[int32]int64{0: 0}, epochs(synced(t, a)), "nothing read of partition 0 before")
	require.NoError(t, a.Publish(ctx, []Partial{{Partition: 0, Value: []byte("a0")}, {Partition: 1, Value: []byte("a1")}}))
	assert.Equal(t, map[int32]int64{0: 1, 1: 0}, epochs(synced(t, a)), "offsets 1 and 2")
	require.NoError(t, a.Publish(ctx, []Partial{{Partition: 0, Value: []byte("a0")}, {Partition: 1, Value: []byte("a1")}}))
	assert.Equal(t, map[int32]int64{0: 1, 1: 3}, epochs(synced(t, a)), "a keeps its epoch of partition 0, and leaves the unknown one of partition 1")
	require.NoError(t, a.Publish(ctx, []Partial{{Partition: 0, Value: []byte("a0")}, {Partition: 1, Value: []byte("a1")}}))
	assert.Equal(t, map[int32]int64{0: 1, 1: 3}, epochs(synced(t, a)), "a keeps its epochs")

	synced(t, c)
	require.NoError(t, c.Publish(ctx, []Partial{{Partition: 0, Value: []byte("c0")}}))
	assert.Equal(t, map[int32]int64{0: 7, 1: 3}, epochs(synced(t, c)), "c takes partition 0 over, having read up to offset 6")
	synced(t, a)
	require.NoError(t, a.Publish(ctx, []Partial{{Partition: 0, Value: []byte("a0")}}))
	assert.Equal(t, map[int32]string{0: "a:a0", 1: "a:a1"}, values(synced(t, c)), "a takes it back")
	assert.Equal(t, map[int32]int64{0: 8, 1: 3}, epochs(synced(t, c)))
}

// A partial its old owner sent as the partition was taken from it, which
// lands after the new owner's, is of an earlier epoch: it is left out,
// by the processes that read both as by those that start later, instead
// of standing until the new owner's next partial.
func TestALatePartialOfTheOldOwnerIsLeftOut(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	var logs strings.Builder
	reader := started(t, b, Config{Member: "r", Logger: textLogger(&logs)})
	landLate(t, b, newExchange(t, b, "old"), newExchange(t, b, "new"))
	assert.Equal(t, map[int32]string{0: "new:new"}, values(synced(t, reader)))
	assert.Equal(t, int64(1), reader.Late())
	assert.Contains(t, logs.String(), `level=WARN msg="exchange partial of an earlier owner of its partition left out" exchange=digests partition=0 origin=digests/0@3 member=old epoch=1 latest_epoch=2`)
	assert.Equal(t, map[int32]string{0: "new:new"}, values(synced(t, newExchange(t, b, "later"))))
}

// landLate has old publish partition 0 twice, then taker take it over,
// and lands after taker's partial the one old encoded as it still owned
// the partition: the value "late", of old's epoch, which "new" follows.
func landLate(t *testing.T, b *kafkatest.Broker, old, taker *Kafka) {
	t.Helper()
	ctx := context.Background()
	for range 2 {
		require.NoError(t, old.Publish(ctx, []Partial{{Partition: 0, Value: []byte("old")}}))
		synced(t, old)
	}
	// What the old owner encodes as it still owns the partition...
	late := encode(Partial{Partition: 0, Value: []byte("late"), Member: old.cfg.Member, Epoch: synced(t, old)[0].Epoch})
	synced(t, taker)
	require.NoError(t, taker.Publish(ctx, []Partial{{Partition: 0, Value: []byte("new")}}))
	// ... lands after the new owner's partial.
	require.NoError(t, b.Produce("digests", kafkatest.Record{Key: []byte("0"), Value: late}))
}

// compact deletes the records of the exchange topic below offset from,
// as compaction leaves the last record of a partition alone when the
// records before it are of that partition.
func compact(t *testing.T, b *kafkatest.Broker, from int64) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(b.Addrs(), sarama.NewConfig())
	require.NoError(t, err)
	require.NoError(t, admin.DeleteRecords("digests", map[int32]int64{0: from}))
	require.NoError(t, admin.Close())
}

// A process restarting under the name it had (static membership, the
// same -instance) after compaction kept of its partition only the
// partial it sent late before, when the partition was taken from it,
// reads that partial as its own: it is another process all the same, and
// its partials are not of the epoch of that late one, which the others
// leave out, but of a new one. Otherwise they would be left out as late
// for as long as it owns the partition.
func TestAnOwnerRestartedUnderItsNameAfterCompactionIsNotLeftOut(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	reader := newExchange(t, b, "r")
	landLate(t, b, newExchange(t, b, "a"), newExchange(t, b, "b"))
	ctx := context.Background()
	assert.Equal(t, map[int32]string{0: "b:new"}, values(synced(t, reader)))
	compact(t, b, 3) // the late partial is the last of partition 0

	restarted := newExchange(t, b, "a")
	assert.Equal(t, map[int32]string{0: "a:late"}, values(synced(t, restarted)))
	for _, v := range []string{"again", "and again"} {
		require.NoError(t, restarted.Publish(ctx, []Partial{{Partition: 0, Value: []byte(v)}}))
		synced(t, restarted)
		assert.Equal(t, map[int32]string{0: "a:" + v}, values(synced(t, reader)))
	}
}

// A process that starts after compaction finds of a partition the last
// partial alone, which may be of epoch 0 (its publisher had read nothing
// of the partition) or of another kind: nothing of the epochs the others
// read before. Taking the partition over, its partials are of an epoch
// above those all the same: otherwise the others would keep the first
// one and leave out the next ones, as late, for as long as it owns the
// partition.
func TestAnOwnerStartedAfterCompactionIsNotLeftOut(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	reader := newExchange(t, b, "r")
	a, c := newExchange(t, b, "a"), newExchange(t, b, "c")
	ctx := context.Background()
	for _, x := range []*Kafka{a, a, c, a} { // epochs 0, 1, 2, 3 in turn
		synced(t, x)
		require.NoError(t, x.Publish(ctx, []Partial{{Partition: 0, Value: []byte("v")}}))
	}
	// A process that publishes before reading the topic: epoch 0.
	require.NoError(t, b.Produce("digests", kafkatest.Record{Key: []byte("0"), Value: encode(Partial{Partition: 0, Value: []byte("first"), Member: "d"})}))
	assert.Equal(t, map[int32]string{0: "d:first"}, values(synced(t, reader)))
	compact(t, b, 4)

	later := newExchange(t, b, "later")
	synced(t, later)
	for _, v := range []string{"one", "two", "three"} {
		require.NoError(t, later.Publish(ctx, []Partial{{Partition: 0, Value: []byte(v)}}))
		synced(t, later)
		assert.Equal(t, map[int32]string{0: "later:" + v}, values(synced(t, reader)))
	}
	assert.Zero(t, reader.Late())
}

// No publisher reads past its own record, so a partial's epoch is at most
// its offset: one above (a writer of its own, a bit flipped) is taken as
// unknown, with a warning, instead of raising its partition's epoch out
// of the reach of every owner, whose partials would all be left out as
// late, or make the next owner's overflow.
func TestAnEpochAboveItsOffsetIsUnknown(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	var logs strings.Builder
	reader := started(t, b, Config{Member: "r", Logger: textLogger(&logs)})
	owner := newExchange(t, b, "o")
	ctx := context.Background()
	require.NoError(t, owner.Publish(ctx, []Partial{{Partition: 0, Value: []byte("v")}, {Partition: 1, Value: []byte("v")}}))
	require.NoError(t, b.Produce("digests",
		kafkatest.Record{Key: []byte("0"), Value: encode(Partial{Partition: 0, Value: []byte("odd"), Member: "x", Epoch: 1 << 40})},
		kafkatest.Record{Key: []byte("1"), Value: encode(Partial{Partition: 1, Value: []byte("odd"), Member: "x", Epoch: math.MaxInt64})}))
	got := synced(t, reader)
	assert.Equal(t, map[int32]string{0: "x:odd", 1: "x:odd"}, values(got))
	assert.Equal(t, map[int32]int64{0: 0, 1: 0}, epochs(got))
	assert.Contains(t, logs.String(), `level=WARN msg="exchange partial of an epoch above its offset taken as of an unknown epoch" exchange=digests partition=0 origin=digests/0@2 member=x epoch=1099511627776`)
	synced(t, owner)
	for _, v := range []string{"one", "two"} {
		require.NoError(t, owner.Publish(ctx, []Partial{{Partition: 0, Value: []byte(v)}, {Partition: 1, Value: []byte(v)}}))
		synced(t, owner)
		assert.Equal(t, map[int32]string{0: "o:" + v, 1: "o:" + v}, values(synced(t, reader)))
	}
	assert.Zero(t, reader.Late())
	assert.Zero(t, reader.Skipped())
}
