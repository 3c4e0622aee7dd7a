package sink_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/sink/txn"
)

// With a Transaction, a Write is seen by read_committed consumers only
// once the transaction commits; the writes of an aborted one stay in the
// topic, unseen.
func TestKafkaSinkInATransaction(t *testing.T) {
	b := startBroker(t, map[string]int32{"out": 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "sink-test"})
	require.NoError(t, err)
	defer func() { assert.NoError(t, tx.Close()) }()
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Transaction: tx}, pairEncoder)
	require.NoError(t, err)
	defer func() { assert.NoError(t, k.Close()) }()

	require.ErrorIs(t, k.Write(ctx, batch([]int{9})), txn.ErrNoTransaction, "a write outside a transaction fails")

	require.NoError(t, tx.Begin(ctx))
	require.NoError(t, k.Write(ctx, batch([]int{1, 2}, []int{3})))
	committed, err := b.CommittedRecords(ctx, "out")
	require.NoError(t, err)
	assert.Empty(t, committed, "nothing is seen before the commit")
	require.NoError(t, tx.Commit(ctx))

	require.NoError(t, tx.Begin(ctx))
	require.NoError(t, k.Write(ctx, batch([]int{4}, []int{5})))
	require.NoError(t, tx.Abort(ctx))

	require.NoError(t, tx.Begin(ctx))
	require.NoError(t, k.Write(ctx, batch([]int{6})))
	require.NoError(t, tx.Commit(ctx))

	committed, err = b.CommittedRecords(ctx, "out")
	require.NoError(t, err)
	var got []string
	for _, r := range committed {
		got = append(got, string(r.Value))
	}
	assert.ElementsMatch(t, []string{"[1,2]", "[2,4]", "[3,6]", "[6,12]"}, got)
	all, err := b.Records(ctx, "out")
	require.NoError(t, err)
	assert.Len(t, all, 6, "the aborted writes are in the topic")
}
