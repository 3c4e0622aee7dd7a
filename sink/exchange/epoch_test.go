package exchange

import (
	"context"
	"log/slog"
	"strings"
	"testing"

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
// process, one more than the latest it read. A process that read nothing
// of the partition publishes epoch 0: unknown.
func TestPublishersNumberTheirOwnerships(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	a, c := newExchange(t, b, "a"), newExchange(t, b, "c")
	ctx := context.Background()
	require.NoError(t, a.Publish(ctx, []Partial{{Partition: 0, Value: []byte("a0")}}))
	assert.Equal(t, map[int32]int64{0: 0}, epochs(synced(t, a)), "nothing read of partition 0 before")
	require.NoError(t, a.Publish(ctx, []Partial{{Partition: 0, Value: []byte("a0")}, {Partition: 1, Value: []byte("a1")}}))
	assert.Equal(t, map[int32]int64{0: 1, 1: 0}, epochs(synced(t, a)))
	require.NoError(t, a.Publish(ctx, []Partial{{Partition: 0, Value: []byte("a0")}, {Partition: 1, Value: []byte("a1")}}))
	assert.Equal(t, map[int32]int64{0: 1, 1: 1}, epochs(synced(t, a)), "a keeps its epochs")

	synced(t, c)
	require.NoError(t, c.Publish(ctx, []Partial{{Partition: 0, Value: []byte("c0")}}))
	assert.Equal(t, map[int32]int64{0: 2, 1: 1}, epochs(synced(t, c)), "c takes partition 0 over")
	synced(t, a)
	require.NoError(t, a.Publish(ctx, []Partial{{Partition: 0, Value: []byte("a0")}}))
	assert.Equal(t, map[int32]string{0: "a:a0", 1: "a:a1"}, values(synced(t, c)), "a takes it back")
	assert.Equal(t, map[int32]int64{0: 3, 1: 1}, epochs(synced(t, c)))
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
	reader, err := New(Config{Brokers: b.Addrs(), Topic: "digests", Member: "r", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	running(t, reader)
	old, taker := newExchange(t, b, "old"), newExchange(t, b, "new")
	ctx := context.Background()
	for range 2 {
		require.NoError(t, old.Publish(ctx, []Partial{{Partition: 0, Value: []byte("old")}}))
		synced(t, old)
	}
	// What the old owner encodes as it still owns the partition...
	late := encode(Partial{Partition: 0, Value: []byte("late"), Member: "old", Epoch: synced(t, old)[0].Epoch})
	synced(t, taker)
	require.NoError(t, taker.Publish(ctx, []Partial{{Partition: 0, Value: []byte("new")}}))
	// ... lands after the new owner's partial.
	require.NoError(t, b.Produce("digests", kafkatest.Record{Key: []byte("0"), Value: late}))
	assert.Equal(t, map[int32]string{0: "new:new"}, values(synced(t, reader)))
	assert.Equal(t, int64(1), reader.Late())
	assert.Contains(t, logs.String(), `level=WARN msg="exchange partial of an earlier owner of its partition left out" exchange=digests partition=0 origin=digests/0@3 member=old epoch=1 latest_epoch=2`)
	assert.Equal(t, map[int32]string{0: "new:new"}, values(synced(t, newExchange(t, b, "later"))))
}
