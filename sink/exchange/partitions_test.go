package exchange

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/internal/kafkatest"
)

// The partials of partitions that the input topic does not have (it was
// made again with fewer) are left out once Sync has read its partitions,
// and stay out when partitions are added, until their owners publish.
func TestPartialsOfPartitionsTheInputDoesNotHaveAreLeftOut(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"messages": 3}})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	var logs strings.Builder
	x := started(t, b, Config{Member: "x", Input: "messages", Logger: textLogger(&logs)})
	ctx := context.Background()
	var ps []Partial
	for p := range int32(5) {
		ps = append(ps, Partial{Partition: p, Value: []byte("old")})
	}
	require.NoError(t, x.Publish(ctx, ps))
	assert.Equal(t, map[int32]string{0: "x:old", 1: "x:old", 2: "x:old"}, values(synced(t, x)))
	assert.Contains(t, logs.String(), `level=WARN msg="exchange partials of partitions the input does not have left out" exchange=digests input=messages partitions=3 left="[3 4]"`)

	// A process without an input takes them all.
	all := newExchange(t, b, "all")
	assert.Len(t, synced(t, all), 5)

	admin, err := sarama.NewClusterAdmin(b.Addrs(), sarama.NewConfig())
	require.NoError(t, err)
	require.NoError(t, admin.CreatePartitions("messages", 5, nil, false))
	require.NoError(t, admin.Close())
	assert.Len(t, synced(t, x), 3, "partitions 3 and 4 are new: the partials of the old ones stay out")
	require.NoError(t, x.Publish(ctx, []Partial{{Partition: 4, Value: []byte("new")}}))
	assert.Equal(t, map[int32]string{0: "x:old", 1: "x:old", 2: "x:old", 4: "x:new"}, values(synced(t, x)))
	assert.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), logs.String())
}

// An input topic that cannot be read (missing) leaves out nothing, with
// one warning.
func TestAMissingInputLeavesOutNothing(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	var logs strings.Builder
	x := started(t, b, Config{Member: "x", Input: "absent", Logger: textLogger(&logs)})
	require.NoError(t, x.Publish(context.Background(), []Partial{{Partition: 0, Value: []byte("v")}, {Partition: 7, Value: []byte("v")}}))
	assert.Len(t, synced(t, x), 2)
	assert.Len(t, synced(t, x), 2)
	assert.Equal(t, 1, strings.Count(logs.String(), `level=WARN msg="exchange: the input's partitions cannot be read: the partials of those it had before are kept" exchange=digests input=absent partitions=-1`), logs.String())
}

// Sync reads the input's partitions within its context: a broker that
// does not answer (until the client's read timeout, 30s by default) does
// not hold the batch that waits for it, which goes on with the count read
// before.
func TestSyncGivesUpOnTheInputsPartitionsWithItsContext(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"messages": 1}})
	require.NoError(t, err)
	t.Cleanup(b.Close) // after the exchanges' cleanups, registered later
	x := started(t, b, Config{Member: "x", Input: "messages"})
	require.NoError(t, x.Publish(context.Background(), []Partial{{Partition: 0, Value: []byte("v")}, {Partition: 1, Value: []byte("v")}}))
	assert.Equal(t, map[int32]string{0: "x:v"}, values(synced(t, x)))

	held, release := b.Stall(kmsg.Metadata.Int16())
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	synced := make(chan error, 1)
	go func() { synced <- x.Sync(ctx) }()
	<-held
	cancel()
	select {
	case err := <-synced:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Error("Sync still waits for the input's partitions 10s after its context ended")
		release()
		<-synced
	}
	assert.Equal(t, map[int32]string{0: "x:v"}, values(x.Latest()))
	release()
}
