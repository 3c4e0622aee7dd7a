package stream_test

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

func TestWindowSlides(t *testing.T) {
	for _, tc := range []struct {
		length, slide int
		want          [][]int
	}{
		{3, 1, [][]int{{1}, {1, 2}, {1, 2, 3}, {2, 3, 4}, {3, 4, 5}, {4, 5, 6}, {5, 6, 7}}},
		{3, 2, [][]int{{1, 2}, {2, 3, 4}, {4, 5, 6}}},
		{2, 3, [][]int{{2, 3}, {5, 6}}},
		{1, 1, [][]int{{1}, {2}, {3}, {4}, {5}, {6}, {7}}},
	} {
		t.Run("", func(t *testing.T) {
			p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(1))
			c := collect(stream.Window(stream.From(p, source.NewSlice("n", ints(7), 3)), tc.length, tc.slide))
			run(t, p)
			var got [][]int
			for _, vs := range c.values() {
				got = append(got, sorted(vs))
			}
			assert.Equal(t, tc.want, got)
			for _, b := range c.all() {
				for _, part := range b.Partitions {
					require.Len(t, part.Origins, len(part.Values))
					for k, v := range part.Values {
						assert.Equal(t, int64((v-1)/3), part.Origins[k].Offset, "window keeps origins")
					}
				}
			}
		})
	}
}

func TestWindowRejectsBadSizes(t *testing.T) {
	p := stream.NewPipeline()
	collect(stream.Window(stream.From(p, source.NewSlice("n", ints(7), 1)), 0, 1))
	assert.ErrorContains(t, p.Run(t.Context()), "window of 0 batches")
}

func TestReduceByKeyAndWindow(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const batches, per, keys = 40, 50, 12
	pairs := make([]stream.Pair[int, int], batches*per)
	for i := range pairs {
		pairs[i] = stream.KV(rng.IntN(keys), 1+rng.IntN(5))
	}
	add := func(a, b int) int { return a + b }
	sub := func(a, b int) int { return a - b }
	for _, tc := range []struct {
		name          string
		length, slide int
		inverse       func(int, int) int
	}{
		{"recompute 5/1", 5, 1, nil},
		{"inverse 5/1", 5, 1, sub},
		{"recompute 6/3", 6, 3, nil},
		{"inverse 6/3", 6, 3, sub},
		{"inverse 4/5", 4, 5, sub},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(per), stream.Parallelism(3))
			c := collect(stream.ReduceByKeyAndWindow(stream.From(p, source.NewSlice("p", pairs, 4)), add, tc.inverse, tc.length, tc.slide))
			run(t, p)
			got := c.all()
			require.Len(t, got, batches/tc.slide)
			for i, b := range got {
				end := (i + 1) * tc.slide // batches 1..end have passed
				want := map[int]int{}
				for _, kv := range pairs[max(0, end-tc.length)*per : end*per] {
					want[kv.Key] += kv.Value
				}
				assert.Equal(t, want, stateMap(b), "window ending at batch %d", end)
				assert.Equal(t, int64(end), b.Info.ID)
			}
		})
	}
}

func TestReduceByKeyAndWindowDropsKeysThatLeave(t *testing.T) {
	pairs := []stream.Pair[int, int]{stream.KV(1, 1), stream.KV(2, 1), stream.KV(2, 1), stream.KV(2, 1)}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(1))
	c := collect(stream.ReduceByKeyAndWindow(stream.From(p, source.NewSlice("p", pairs, 1)),
		func(a, b int) int { return a + b }, func(a, b int) int { return a - b }, 2, 1))
	run(t, p)
	got := c.all()
	require.Len(t, got, 4)
	assert.Equal(t, map[int]int{1: 1}, stateMap(got[0]))
	assert.Equal(t, map[int]int{1: 1, 2: 1}, stateMap(got[1]))
	assert.Equal(t, map[int]int{2: 2}, stateMap(got[2]), "key 1 left the window: gone, not 0")
	assert.Equal(t, map[int]int{2: 2}, stateMap(got[3]))
}
