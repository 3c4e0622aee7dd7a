package exchange

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
)

// encodeV1 is a record value as the first version of the header wrote
// it, with no kind nor input: still found on a topic written before.
func encodeV1(p Partial) []byte {
	b := []byte{1}
	b = binary.AppendVarint(b, p.Batch)
	b = binary.AppendVarint(b, p.Time.UnixNano())
	b = binary.AppendUvarint(b, uint64(len(p.Member)))
	b = append(b, p.Member...)
	return append(b, p.Value...)
}

// A process merges the partials of its own kind alone: one of another
// kind (a process of the group run with another sketch, or one published
// before the change) is left out, counted, logged once with where it is,
// and replaced when its owner publishes one of this kind. It supersedes
// the partition's partial before it, as it would after compaction.
func TestPartialsOfAnotherKindAreLeftOut(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"messages": 4}})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	var logs strings.Builder
	exact := started(t, b, Config{Member: "e", Kind: "exact", Input: "messages", Logger: textLogger(&logs)})
	td := started(t, b, Config{Member: "t", Kind: "tdigest", Input: "messages"})
	ctx := context.Background()

	require.NoError(t, exact.Publish(ctx, []Partial{{Partition: 0, Value: []byte("e0")}, {Partition: 1, Value: []byte("e1")}}))
	require.NoError(t, td.Publish(ctx, []Partial{{Partition: 1, Value: []byte("t1")}, {Partition: 2, Value: []byte("t2")}}))
	require.NoError(t, td.Publish(ctx, []Partial{{Partition: 2, Value: []byte("t2")}}))
	got := synced(t, exact)
	assert.Equal(t, map[int32]string{0: "e:e0"}, values(got), "partition 1's partial of this kind is superseded by one of another")
	assert.Equal(t, "exact", got[0].Kind)
	assert.Equal(t, "messages", got[0].Input)
	assert.Equal(t, map[int32]string{1: "t:t1", 2: "t:t2"}, values(synced(t, td)))
	assert.Equal(t, int64(3), exact.Mismatched())
	assert.Zero(t, exact.Skipped(), "a partial of another kind is not a bad record")
	assert.Contains(t, logs.String(), `level=WARN msg="exchange partial of another kind or input left out until its owner publishes one of this exchange's" exchange=digests partition=1 origin=digests/0@2 member=t kind=tdigest input=messages want_kind=exact want_input=messages`)
	assert.Equal(t, 1, strings.Count(logs.String(), "partition=2 "), "logged once while the partition's partials stay of another kind:\n%s", logs.String())

	// A partial of the first header version has no kind: it is returned,
	// of unknown kind, for the caller to tell by its value.
	require.NoError(t, b.Produce("digests", kafkatest.Record{Key: []byte("3"), Value: encodeV1(Partial{Value: []byte("old"), Member: "o", Batch: 4, Time: time.Unix(7, 0)})}))
	// Its owner publishes one of this kind: it replaces the other.
	require.NoError(t, exact.Publish(ctx, []Partial{{Partition: 1, Value: []byte("e1'")}}))
	got = synced(t, exact)
	assert.Equal(t, map[int32]string{0: "e:e0", 1: "e:e1'", 3: "o:old"}, values(got))
	assert.Equal(t, "", got[2].Kind, "partition 3's kind is unknown")
	assert.Equal(t, int64(4), got[2].Batch)

	// Without a kind, an exchange takes every partial.
	all := newExchange(t, b, "all")
	assert.Equal(t, map[int32]string{0: "e:e0", 1: "e:e1'", 2: "t:t2", 3: "o:old"}, values(synced(t, all)))
}

// A partial of another input (a pipeline that read another topic, whose
// partition numbers the keys share) is left out as one of another kind.
func TestPartialsOfAnotherInputAreLeftOut(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"messages": 3, "events": 3}})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	before := started(t, b, Config{Member: "before", Kind: "exact", Input: "messages"})
	ctx := context.Background()
	require.NoError(t, before.Publish(ctx, []Partial{{Partition: 0, Value: []byte("m0")}, {Partition: 1, Value: []byte("m1")}}))
	require.NoError(t, b.Produce("digests", kafkatest.Record{Key: []byte("2"), Value: encodeV1(Partial{Value: []byte("old"), Member: "o"})}))
	synced(t, before)

	after := started(t, b, Config{Member: "after", Kind: "exact", Input: "events"})
	assert.Equal(t, map[int32]string{2: "o:old"}, values(synced(t, after)), "the partials of messages are left out, the one of unknown input is not")
	assert.Equal(t, int64(2), after.Mismatched())
	require.NoError(t, after.Publish(ctx, []Partial{{Partition: 1, Value: []byte("e1")}}))
	assert.Equal(t, map[int32]string{1: "after:e1", 2: "o:old"}, values(synced(t, after)))
	assert.Equal(t, map[int32]string{0: "before:m0", 2: "o:old"}, values(synced(t, before)))
}
