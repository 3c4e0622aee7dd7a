package changelog_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink/changelog"
	"github.com/sluicehq/sluice/sink/txn"
	"github.com/sluicehq/sluice/stream"
)

// newTxnStore returns a store on topic that writes in transactions of a
// producer with transactional ID id; both are closed when the test ends.
func newTxnStore(t *testing.T, b *kafkatest.Broker, topic, id string) (*changelog.Kafka, *txn.Producer) {
	t.Helper()
	tx, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: id, Timeout: 10 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, tx.Close()) })
	k, err := changelog.NewKafka(changelog.Config{Brokers: b.Addrs(), Topic: topic, Partitions: 2, RestoreTimeout: 10 * time.Second, Transaction: tx})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, k.Close()) })
	return k, tx
}

func changes(batch int64, value string, next int64) *stream.Changes {
	return &stream.Changes{
		Batch:   stream.Info{ID: batch},
		Offsets: []stream.Offset{{Source: "in", Partition: 0, Next: next}, {Source: "in", Partition: 1, Next: next}},
		Entries: []stream.Entry{
			{Op: "op", Partition: 0, Key: []byte("a"), Value: []byte(value)},
			{Op: "op", Partition: 1, Key: []byte("b"), Value: []byte(value)},
		},
	}
}

// oneCommittedOneAborted restores k, empty, then checkpoints "one" at
// offset 10 in a transaction that commits, and "aborted" at 20 in one that
// aborts.
func oneCommittedOneAborted(t *testing.T, k *changelog.Kafka, tx *txn.Producer) {
	t.Helper()
	ctx := context.Background()
	s, _ := restore(t, k, nil)
	require.Empty(t, s)
	require.NoError(t, tx.Begin(ctx))
	require.NoError(t, k.Checkpoint(ctx, changes(1, "one", 10)))
	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, tx.Begin(ctx))
	require.NoError(t, k.Checkpoint(ctx, changes(2, "aborted", 20)))
	require.NoError(t, tx.Abort(ctx))
}

// In a transaction, a checkpoint counts only once the transaction
// commits: an aborted one, and one left open by a process that died,
// are in the topic but not restored, and the producer that left one open
// is fenced off by the next one with its ID.
func TestTransactionalCheckpoints(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	const topic, id = "txn-state", "txn-test"
	k, tx := newTxnStore(t, b, topic, id)
	oneCommittedOneAborted(t, k, tx)
	err := k.Checkpoint(ctx, changes(3, "x", 30))
	require.ErrorIs(t, err, changelog.ErrNotRestored, "after an abort the store must restore again")

	want := state{"op/0/a": "one", "op/1/b": "one"}
	wantOffsets := []stream.Offset{{Source: "in", Partition: 0, Next: 10}, {Source: "in", Partition: 1, Next: 10}}
	s, offsets := restore(t, k, nil)
	assert.Equal(t, want, s, "the aborted checkpoint is not restored")
	assert.ElementsMatch(t, wantOffsets, offsets)

	// A transaction left open, as by a process killed in its batch.
	require.NoError(t, tx.Begin(ctx))
	require.NoError(t, k.Checkpoint(ctx, changes(3, "open", 30)))

	raw, err := b.Records(ctx, topic)
	require.NoError(t, err)
	var uncommitted int
	for _, r := range raw {
		if v := string(r.Value); len(v) > 1 && (v[1:] == "aborted" || v[1:] == "open") {
			uncommitted++
		}
	}
	assert.Equal(t, 4, uncommitted, "the aborted and the open checkpoints' entries are in the topic")

	k2, tx2 := newTxnStore(t, b, topic, id)
	s, offsets = restore(t, k2, nil)
	assert.Equal(t, want, s, "the open transaction of the replaced producer is aborted, not restored")
	assert.ElementsMatch(t, wantOffsets, offsets)
	assert.Error(t, tx.Commit(ctx), "the replaced producer is fenced off")

	require.NoError(t, tx2.Begin(ctx))
	require.NoError(t, k2.Checkpoint(ctx, changes(4, "four", 40)))
	require.NoError(t, tx2.Commit(ctx))
	k3, _ := newTxnStore(t, b, topic, id+"-other")
	s, offsets = restore(t, k3, nil)
	assert.Equal(t, state{"op/0/a": "four", "op/1/b": "four"}, s)
	assert.ElementsMatch(t, []stream.Offset{{Source: "in", Partition: 0, Next: 40}, {Source: "in", Partition: 1, Next: 40}}, offsets)
}

// A changelog written in transactions and restored by a store without
// one (a pipeline run again without exactly-once) restores what the
// transactions committed: not an aborted one's entries.
func TestRestoreWithoutATransactionSkipsAbortedOnes(t *testing.T) {
	b := startBroker(t)
	ctx := context.Background()
	const topic = "txn-state"
	k, tx := newTxnStore(t, b, topic, "txn-test")
	oneCommittedOneAborted(t, k, tx)

	plain, err := changelog.NewKafka(changelog.Config{Brokers: b.Addrs(), Topic: topic, Partitions: 2, RestoreTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer plain.Close()
	s, offsets := restore(t, plain, nil)
	assert.Equal(t, state{"op/0/a": "one", "op/1/b": "one"}, s, "the aborted transaction's entries are not restored")
	assert.ElementsMatch(t, []stream.Offset{{Source: "in", Partition: 0, Next: 10}, {Source: "in", Partition: 1, Next: 10}}, offsets)

	// It checkpoints after them, and a restore reads its checkpoint.
	require.NoError(t, plain.Checkpoint(ctx, changes(3, "three", 30)))
	s, offsets = restore(t, plain, nil)
	assert.Equal(t, state{"op/0/a": "three", "op/1/b": "three"}, s)
	assert.ElementsMatch(t, []stream.Offset{{Source: "in", Partition: 0, Next: 30}, {Source: "in", Partition: 1, Next: 30}}, offsets)
}
