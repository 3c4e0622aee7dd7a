package stream_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream"
)

// A key not equal to itself (a NaN) could never be found in the state
// again: the batch that holds one fails, naming its record, whether the
// keys come grouped or reduced first, and the state is left as it was.
func TestStateRefusesAKeyNotEqualToItself(t *testing.T) {
	for _, reduced := range []bool{false, true} {
		t.Run(map[bool]string{false: "grouped", true: "reduced"}[reduced], func(t *testing.T) {
			var b1, b2 []stream.Record[stream.Pair[float64, int]]
			off := int64(0)
			for i := range 10 {
				b1 = append(b1, rec(stream.KV(float64(i), 1), 0, off))
				off++
			}
			for i := range 99 { // new keys that would grow the index, a NaN amid them
				k := float64(100 + i)
				if i == 50 {
					k = math.NaN()
				}
				b2 = append(b2, rec(stream.KV(k, 1), 0, off))
				off++
			}
			p := stream.NewPipeline(stream.Interval(5*time.Millisecond), stream.Parallelism(1))
			in := stream.Keyed(stream.From[stream.Pair[float64, int]](p, &scripted[stream.Pair[float64, int]]{chunks: [][]stream.Record[stream.Pair[float64, int]]{b1, b2}}))
			if reduced {
				in = stream.ReduceByKey(in, func(a, b int) int { return a + b })
			}
			st := stream.UpdateStateByKey(in, func(_ float64, vs []int, s int, _ bool) (int, bool) {
				for _, v := range vs {
					s += v
				}
				return s, true
			}).Named("totals")
			c := collect(st)
			err := p.Run(context.Background())
			require.Error(t, err)
			var se *stream.StageError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, "totals", se.Stage)
			assert.Equal(t, int64(2), se.Batch)
			assert.Contains(t, err.Error(), "key NaN is not equal to itself")
			if !reduced { // ReduceByKey's output has no origins
				var re *stream.RecordError
				require.True(t, errors.As(err, &re), "%v", err)
				assert.Equal(t, int64(60), re.Origin.Offset)
			}
			got := c.all()
			require.Len(t, got, 1, "batch 2 failed")
			assert.Len(t, got[0].Partitions[0].Values, 10)
		})
	}
}

// With an inverse, ReduceByKeyAndWindow keeps running results by key: a
// key not equal to itself (a NaN) could never be found to leave the
// window, and fails the batch, as in UpdateStateByKey; recomputed from
// the window, it leaves with its batch.
func TestWindowOfAKeyNotEqualToItself(t *testing.T) {
	for _, inv := range []bool{false, true} {
		t.Run(map[bool]string{false: "recomputed", true: "inverse"}[inv], func(t *testing.T) {
			chunks := [][]stream.Record[stream.Pair[float64, int]]{
				{rec(stream.KV(math.NaN(), 1), 0, 0)},
				{rec(stream.KV(1.0, 1), 0, 1)}, {rec(stream.KV(1.0, 1), 0, 2)}, {rec(stream.KV(1.0, 1), 0, 3)},
			}
			p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(1))
			in := stream.Keyed(stream.From[stream.Pair[float64, int]](p, &scripted[stream.Pair[float64, int]]{chunks: chunks}))
			var f func(a, b int) int
			if inv {
				f = func(a, b int) int { return a - b }
			}
			c := collect(stream.ReduceByKeyAndWindow(in, func(a, b int) int { return a + b }, f, 2, 1).Named("windowed"))
			err := p.Run(context.Background())
			if inv {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "batch 1: windowed: partition 0: key NaN is not equal to itself")
				return
			}
			require.NoError(t, err)
			got := c.all()
			require.Len(t, got, 4)
			for i := 2; i < 4; i++ {
				for kv := range got[i].All() {
					require.False(t, math.IsNaN(kv.Key), "window %d still holds the NaN key of batch 1", i+1)
				}
			}
		})
	}
}
