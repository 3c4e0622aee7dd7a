package main

import (
	"cmp"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink/changelog"
	"github.com/sluicehq/sluice/sink/txn"
)

// committedTotals reads the totals and offsets of a changelog topic as a
// read_committed consumer: what aborted transactions wrote is left out.
// It registers the transactional ID id first, as a restarted process
// does: that aborts the transaction a killed process with that ID left
// open, which would otherwise hold read_committed readers back until it
// times out.
func committedTotals(t *testing.T, addr, topic, id string) (map[int64]int64, int64) {
	t.Helper()
	tx, err := txn.New(txn.Config{Brokers: []string{addr}, ID: id})
	require.NoError(t, err)
	defer tx.Close()
	store, err := changelog.NewKafka(changelog.Config{Brokers: []string{addr}, Topic: topic, RestoreTimeout: 10 * time.Second, Transaction: tx})
	require.NoError(t, err)
	defer store.Close()
	return restoredTotals(t, store, nil, false)
}

// batchesOf groups the records of a topic by their batch header, and
// checks that each batch's records are contiguous: written by one
// transaction, not by two.
func batchesOf(t *testing.T, recs []kafkatest.Record) map[string][]kafkatest.Record {
	t.Helper()
	out := map[string][]kafkatest.Record{}
	last := ""
	for _, r := range recs {
		b, ok := r.Headers[batchHeader]
		require.True(t, ok, "record %d@%d has a batch header", r.Partition, r.Offset)
		if b != last {
			assert.NotContains(t, out, b, "batch %s seen again at %d@%d: written twice", b, r.Partition, r.Offset)
		}
		out[b] = append(out[b], r)
		last = b
	}
	return out
}

// With -exactly-once, the pipeline killed with SIGKILL at random moments
// and restarted each time ends with every user's total exact, and a
// read_committed consumer of its output sees every batch once: each input
// event is counted by exactly one committed batch, no batch's output is
// seen twice, and what the killed runs left uncommitted is not seen.
func TestExactlyOnceCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts processes")
	}
	addr := startStandaloneBroker(t)
	const seed, first, users, events, rate = 17, 1000, 200, 30_000, 2500
	produced, want := produceEvents(t, addr, seed, first, users, events, rate)

	const topic, thresholds = "eos-totals-changelog", "eos-thresholds"
	admin, err := sarama.NewClusterAdmin([]string{addr}, sarama.NewConfig())
	require.NoError(t, err)
	require.NoError(t, admin.CreateTopic(thresholds, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false))
	require.NoError(t, admin.Close())
	const instance = "eos-1"
	args := []string{"-brokers", addr, "-group", "eos", "-exactly-once", "-instance", instance, "-changelog-topic", topic,
		"-threshold-topic", thresholds, "-json", "-interval", "100ms", "-batch-records", "200", "-sketch", "exact"}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	progress := []int64{0}
	midTxn := 0 // kills that interrupted a batch's transaction
	for kill := 1; kill <= 6; kill++ {
		p := start(t, args...)
		waitFor(t, time.Minute, "the first records of the run", func() bool { return recordsOf(t, p) > 0 })
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		if kill%2 == 0 {
			// A batch is printed by its last output, inside its
			// transaction: killed as soon as one is, the process likely
			// dies before the commit.
			printed := len(p.stdout.lines())
			for deadline := time.Now().Add(10 * time.Second); len(p.stdout.lines()) == printed && time.Now().Before(deadline); {
				time.Sleep(100 * time.Microsecond)
			}
		}
		p.kill(t)
		_, read := committedTotals(t, addr, topic, instance)
		t.Logf("kill %d after %d events in this run: %d events committed", kill, recordsOf(t, p), read)
		if n := len(progress); int64(recordsOf(t, p)) > read-cmp.Or(progress[n-1:]...) {
			midTxn++ // printed by its last output, not committed
		}
		progress = append(progress, read)
	}
	requireKilledMidway(t, produced, progress, events)

	runUntilAll(t, len(want), args...)
	got, read := committedTotals(t, addr, topic, instance)
	assert.Equal(t, int64(events), read, "the changelog reflects every event")
	assert.Equal(t, want, got, "every user's total is exact")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	brokers := []string{addr}
	cuts, err := kafkatest.Read(ctx, brokers, thresholds, sarama.ReadCommitted)
	require.NoError(t, err)
	cutBatches := batchesOf(t, cuts)
	counted := 0
	for b, recs := range cutBatches {
		require.Len(t, recs, 1, "batch %s has one threshold", b)
		n, err := strconv.Atoi(recs[0].Headers[recordsHeader])
		require.NoError(t, err)
		counted += n
	}
	assert.Equal(t, events, counted, "every event is counted by exactly one committed batch")

	popular, err := kafkatest.Read(ctx, brokers, defaultOutTopic, sarama.ReadCommitted)
	require.NoError(t, err)
	require.NotEmpty(t, popular)
	for b, recs := range batchesOf(t, popular) {
		assert.Contains(t, cutBatches, b, "popular users of batch %s were committed with its threshold", b)
		seen := map[int64]bool{}
		for _, r := range recs {
			var pair [2]int64
			require.NoError(t, json.Unmarshal(r.Value, &pair))
			assert.False(t, seen[pair[0]], "user %d twice in batch %s", pair[0], b)
			seen[pair[0]] = true
		}
	}

	// What the brokers hold but a read_committed consumer does not see:
	// batches of transactions that the kills left open, aborted since.
	raw, err := kafkatest.Read(ctx, brokers, thresholds, sarama.ReadUncommitted)
	require.NoError(t, err)
	rawCounted := 0
	for _, r := range raw {
		n, err := strconv.Atoi(r.Headers[recordsHeader])
		require.NoError(t, err)
		rawCounted += n
	}
	if midTxn > 0 {
		assert.Greater(t, len(raw), len(cuts), "a kill inside a transaction left a batch in the topic that read_committed does not see")
	}
	t.Logf("%d committed batches counted %d events; the topic holds %d batches counting %d, aborted ones included; %d kills interrupted a transaction",
		len(cuts), counted, len(raw), rawCounted, midTxn)
}
