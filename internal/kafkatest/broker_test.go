package kafkatest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// sarama's metrics start one process-wide goroutine that never ends.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
}

func records(n int, partitions int32) []Record {
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = Record{Partition: int32(i) % partitions, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i)}
	}
	return recs
}

func TestProduceAndRead(t *testing.T) {
	b, err := Start(Config{Topics: map[string]int32{"in": 3}})
	require.NoError(t, err)
	defer b.Close()

	require.NoError(t, b.Produce("in", records(10, 3)...))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := b.Records(ctx, "in")
	require.NoError(t, err)
	require.Len(t, got, 10)
	// sorted by partition, then offset: partition 0 holds records 0, 3, 6, 9
	assert.Equal(t, Record{Partition: 0, Offset: 0, Key: []byte("k0"), Value: []byte("v0")}, got[0])
	assert.Equal(t, Record{Partition: 0, Offset: 3, Key: []byte("k9"), Value: []byte("v9")}, got[3])
	assert.Equal(t, Record{Partition: 2, Offset: 2, Key: []byte("k8"), Value: []byte("v8")}, got[9])
	assert.Equal(t, []int64{4, 3, 3}, b.HighWatermarks("in"))
	assert.Nil(t, b.HighWatermarks("missing"))
}

func TestChosenAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	b, err := Start(Config{Addr: addr, Topics: map[string]int32{"t": 1}})
	require.NoError(t, err)
	defer b.Close()
	assert.Equal(t, []string{addr}, b.Addrs())
	require.NoError(t, b.Produce("t", Record{Value: []byte("x")}))

	_, err = Start(Config{Addr: addr})
	assert.Error(t, err, "a second broker on a busy address")
}

func TestDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	b, err := Start(Config{DataDir: dir, Topics: map[string]int32{"t": 2}})
	require.NoError(t, err)
	require.NoError(t, b.Produce("t", records(6, 2)...))
	b.Close()
	b.Close() // twice is fine

	b, err = Start(Config{DataDir: dir, Topics: map[string]int32{"t": 2}})
	require.NoError(t, err)
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := b.Records(ctx, "t")
	require.NoError(t, err)
	assert.Len(t, got, 6)

	assert.ErrorContains(t, b.CreateTopic("t", 3), "exists with 2 partitions")
	assert.Error(t, b.CreateTopic("", 1))
	assert.Error(t, b.CreateTopic("u", 0))
}
