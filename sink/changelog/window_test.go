package changelog_test

import (
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
