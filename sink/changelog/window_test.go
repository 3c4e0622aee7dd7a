package changelog_test

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream"
)

type int64Pair = stream.Pair[int64, int64]

// chunked is a source that gives one chunk of records a batch: after a
// chunk, Poll waits for the batch's deadline. It ends after the last.
type chunked struct {
	chunks [][]stream.Record[int]
	gave   bool
}

func (c *chunked) Poll(ctx context.Context, buf []stream.Record[int]) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	if c.gave {
		c.gave = false
		<-ctx.Done()
		return 0, ctx.Err()
	}
	n := copy(buf, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
		c.gave = true
	}
	return n, nil
}

// A window kept in the changelog is restored from it after a restart,
// every write and delete of its batches read back: the windows after the
// restart are those of a run that did not stop.
func TestWindowRestoresFromTheChangelog(t *testing.T) {
	b := startBroker(t)
	rng := rand.New(rand.NewPCG(3, 3))
	var chunks [][]stream.Record[int]
	offs := map[int32]int64{}
	for v := range 12 {
		var ch []stream.Record[int]
		for j := range 1 + rng.IntN(4) {
			p := int32(rng.IntN(3))
			ch = append(ch, stream.Record[int]{Value: v*10 + j, Origin: stream.Origin{Source: "in", Partition: p, Offset: offs[p]}})
			offs[p]++
		}
		chunks = append(chunks, ch)
	}
	runs := func(store stream.Store, from, to int) map[int]string {
		t.Helper()
		opts := []stream.Option{stream.Interval(5 * time.Millisecond)}
		if store != nil {
			opts = append(opts, stream.WithStore(store))
		}
		p := stream.NewPipeline(opts...)
		w := stream.Window(stream.From(p, &chunked{chunks: slices.Clone(chunks[from:to])}), 4, 2).Named("w")
		got := map[int]string{}
		stream.ForEachBatch(w, func(_ context.Context, b *stream.Batch[int]) error {
			var sb strings.Builder
			for _, part := range b.Partitions {
				fmt.Fprintf(&sb, "%d:%v ", part.ID, slices.Sorted(slices.Values(part.Values)))
			}
			got[from+int(b.Info.ID)] = sb.String()
			return nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, p.Run(ctx))
		return got
	}
	want := runs(nil, 0, 12)
	got := map[int]string{}
	for _, seg := range [][2]int{{0, 5}, {5, 8}, {8, 12}} {
		for at, w := range runs(newStore(t, b, "windows"), seg[0], seg[1]) {
			got[at] = w
		}
	}
	assert.Equal(t, want, got)
}

// runWindows runs over src a Window of the Keyed stream and a
// ReduceByKeyAndWindow of the stream that is not (which, under an
// Assigner, windows each source partition), with store (nil: none), and
// returns both windows written down by the position of their batch in
// the whole input, from batches before the run.
func runWindows(t *testing.T, src stream.Source[int64Pair], store stream.Store, from int) (map[int]string, error) {
	t.Helper()
	opts := []stream.Option{stream.Interval(0), stream.MaxRecords(37), stream.Parallelism(4)}
	if store != nil {
		opts = append(opts, stream.WithStore(store))
	}
	p := stream.NewPipeline(opts...)
	in := stream.From(p, src)
	plus := func(a, b int64) int64 { return a + b }
	minus := func(a, b int64) int64 { return a - b }
	w := stream.Window(stream.Keyed(in), 3, 2).Named("w")
	r := stream.ReduceByKeyAndWindow(in, plus, minus, 4, 3).Named("r")
	got := map[int]string{}
	stream.ForEachBatch(w, func(_ context.Context, b *stream.Batch[int64Pair]) error {
		var sb strings.Builder
		for _, part := range b.Partitions {
			vs := slices.Clone(part.Values)
			slices.SortFunc(vs, func(a, b int64Pair) int { return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Value, b.Value)) })
			fmt.Fprintf(&sb, "%d:%v ", part.ID, vs)
		}
		got[from+int(b.Info.ID)] += "window " + sb.String()
		return nil
	})
	stream.ForEachBatch(r, func(_ context.Context, b *stream.Batch[int64Pair]) error {
		sums := map[int64]int64{}
		for kv := range b.All() {
			sums[kv.Key] = kv.Value
		}
		got[from+int(b.Info.ID)] += fmt.Sprint("sums ", sums)
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return got, p.Run(ctx)
}

// Windows kept in the changelog by a consumer group member, restored
// partition by partition, come back as of the checkpoint whose offsets
// the group committed: after a crash between checkpoints, and after a
// checkpoint cut short (some of its entries written, no marker) by the
// same store, which then restores and repairs the partitions, the
// windows are those of a run that did not stop.
func TestWindowsRestoreFromTheChangelogAfterACheckpointCutShort(t *testing.T) {
	b := startBroker(t)
	all := []int32{0, 1, 2, 3}
	want, err := runWindows(t, member{newLog(600, 2).member(all, 0)}, nil, 0)
	require.NoError(t, err)
	require.Greater(t, len(want), 5)

	l := newLog(600, 2)
	k := newStore(t, b, "windows")
	got, err := runWindows(t, member{l.member(all, 5*37+10)}, k, 0)
	require.ErrorIs(t, err, errCrash, "a crash as the sixth batch is read")
	from := 5
	cut, err := runWindows(t, member{l.member(all, 0)}, &refusing{k, 3}, from)
	require.ErrorContains(t, err, "batch 3: checkpoint")
	assert.True(t, endsWithEntries(t, b, "windows"), "a partition ends with an unfinished checkpoint")
	for at, w := range cut {
		if at <= from+2 { // not the batch whose checkpoint failed
			got[at] = w
		}
	}
	from += 2
	last, err := runWindows(t, member{l.member(all, 0)}, k, from)
	require.NoError(t, err)
	for at, w := range last {
		got[at] = w
	}
	assert.Equal(t, want, got)
}
