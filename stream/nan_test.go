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
