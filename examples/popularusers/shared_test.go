package main

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/digest"
	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink/exchange"
	"github.com/sluicehq/sluice/stream"
)

// The digest sink publishes the partials of the partitions the source
// still owns as it writes, and every partial when nothing tells ownership
// (a file).
func TestDigestSinkPublishesOwnedPartitionsOnly(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	defer b.Close()
	for _, tc := range []struct {
		name  string
		owns  func(int32) bool
		parts []int32
	}{
		{"partition 1 taken", func(p int32) bool { return p != 1 }, []int32{0, 2}},
		{"ownership untold", nil, []int32{0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, stop := runExchange(t, exchange.Config{Brokers: b.Addrs(), Topic: "digests-" + tc.name, Member: "a"})
			defer stop()
			newSketch := func() (*digest.Counts, error) { return digest.NewCounts(), nil }
			sh := &shared[*digest.Counts]{x: x, newSketch: newSketch, log: slog.New(slog.DiscardHandler), owns: tc.owns, cache: map[int32]cachedPartial[*digest.Counts]{}}
			var vals []partial[*digest.Counts]
			for p := range int32(3) {
				c := digest.NewCounts()
				require.NoError(t, c.AddInt(int64(p+1)))
				vals = append(vals, partial[*digest.Counts]{sketch: c, part: p})
			}
			batch := &stream.Batch[partial[*digest.Counts]]{Info: stream.Info{ID: 1, Time: time.Now()}, Partitions: []stream.Partition[partial[*digest.Counts]]{{Values: vals}}}
			require.NoError(t, digestSink[*digest.Counts]{sh}.Write(context.Background(), batch))

			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			require.NoError(t, x.Sync(sctx))
			var got []int32
			for _, p := range x.Latest() {
				got = append(got, p.Partition)
			}
			assert.Equal(t, tc.parts, got)
		})
	}
}

// runExchange returns an exchange of cfg, running, and the function that
// stops and closes it.
func runExchange(t *testing.T, cfg exchange.Config) (*exchange.Kafka, func()) {
	t.Helper()
	x, err := exchange.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	return x, func() {
		cancel()
		assert.NoError(t, <-done)
		assert.NoError(t, x.Close())
	}
}

// A partial of this process's sketch that does not decode is bad input:
// left out of the threshold, logged once with where it is in the digest
// topic, until its owner publishes one that does.
func TestMergeLeavesOutAPartialThatDoesNotDecode(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	defer b.Close()
	x, stop := runExchange(t, exchange.Config{Brokers: b.Addrs(), Topic: "digests", Member: "other", Kind: "exact"})
	defer stop()
	ctx := context.Background()
	good := digest.NewCounts()
	require.NoError(t, good.AddInt(1))
	v, err := good.MarshalBinary()
	require.NoError(t, err)
	require.NoError(t, x.Publish(ctx, []exchange.Partial{{Partition: 0, Value: v, Batch: 3}, {Partition: 1, Value: []byte("not a sketch"), Batch: 3}}))

	newSketch := func() (*digest.Counts, error) { return digest.NewCounts(), nil }
	var logs strings.Builder
	var undecodable atomic.Int64
	sh := &shared[*digest.Counts]{x: x, newSketch: newSketch, log: slog.New(slog.NewTextHandler(&logs, nil)), cache: map[int32]cachedPartial[*digest.Counts]{}, undecodable: &undecodable}
	for range 2 {
		all, err := sh.merge(nil, 4)
		require.NoError(t, err, "a partial that does not decode is bad input: the threshold goes on with the others")
		assert.Equal(t, uint64(1), all.Count(), "partition 0's partial alone")
	}
	assert.Equal(t, 1, strings.Count(logs.String(), "does not decode"), "logged once: %s", logs.String())
	assert.Equal(t, int64(1), undecodable.Load(), "counted once, for the metrics")
	assert.Contains(t, logs.String(), "partition=1")
	assert.Contains(t, logs.String(), "origin=digests/0@1", "the partial's topic, partition and offset")

	// Its owner's next partial, which decodes, is merged.
	require.NoError(t, x.Publish(ctx, []exchange.Partial{{Partition: 1, Value: v, Batch: 4}}))
	all, err := sh.merge(nil, 5)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), all.Count())
}

// A process of one -sketch merges neither the partials of the other
// sketch nor, of the partials written before they said their kind, those
// that do not decode as its own: it logs them once, and goes on with the
// others until their owners publish again.
func TestMergeLeavesOutThePartialsOfAnotherSketch(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{Topics: map[string]int32{"messages": 4}})
	require.NoError(t, err)
	defer b.Close()
	var logs strings.Builder
	x, stop := runExchange(t, exchange.Config{Brokers: b.Addrs(), Topic: "digests", Member: "e", Kind: "exact", Input: "messages"})
	defer stop()
	ctx := context.Background()
	other, err := exchange.New(exchange.Config{Brokers: b.Addrs(), Topic: "digests", Member: "t", Kind: "tdigest", Input: "messages"})
	require.NoError(t, err)
	defer other.Close()

	exact := digest.NewCounts()
	require.NoError(t, exact.AddInt(5))
	ev, err := exact.MarshalBinary()
	require.NoError(t, err)
	td, err := digest.NewTDigest()
	require.NoError(t, err)
	require.NoError(t, td.Add(1000))
	tv, err := td.MarshalBinary()
	require.NoError(t, err)
	require.NoError(t, x.Publish(ctx, []exchange.Partial{{Partition: 0, Value: ev, Batch: 3}}))
	require.NoError(t, other.Publish(ctx, []exchange.Partial{{Partition: 1, Value: tv, Batch: 3}}))
	// Written before partials said their kind (header version 1): one of
	// each sketch.
	v1 := func(value []byte) []byte { return append([]byte{1, 6, 0, 1, 'o'}, value...) }
	require.NoError(t, b.Produce("digests", kafkatest.Record{Key: []byte("2"), Value: v1(tv)}, kafkatest.Record{Key: []byte("3"), Value: v1(ev)}))

	newSketch := func() (*digest.Counts, error) { return digest.NewCounts(), nil }
	sh := &shared[*digest.Counts]{x: x, newSketch: newSketch, log: slog.New(slog.NewTextHandler(&logs, nil)), cache: map[int32]cachedPartial[*digest.Counts]{}}
	for batch := range int64(3) {
		if batch == 2 { // its owner publishes it again, still of the first version
			require.NoError(t, b.Produce("digests", kafkatest.Record{Key: []byte("2"), Value: v1(tv)}))
		}
		all, err := sh.merge(nil, 4+batch)
		require.NoError(t, err)
		assert.Equal(t, uint64(2), all.Count(), "partitions 0 and 3, exact")
		assert.Equal(t, float64(5), all.Quantile(1))
	}
	assert.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), "logged once:\n%s", logs.String())
	assert.Contains(t, logs.String(), `msg="digest exchange: a partial of unknown kind does not decode as this process's sketch: left out until its owner publishes again" partition=2 origin=digests/0@2 member=o batch=3`)
}
