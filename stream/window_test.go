package stream_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

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

// statsHook keeps the states of every batch and of the commit that ends
// the run, and cancels the run after batch cancelAt.
type statsHook struct {
	cancelAt int64
	cancel   context.CancelFunc
	batches  [][]stream.StateStats
	final    []stream.StateStats
}

func (h *statsHook) BatchDone(s stream.BatchStats) {
	h.batches = append(h.batches, slices.Clone(s.State))
	if s.Info.ID == h.cancelAt {
		h.cancel()
	}
}

func (h *statsHook) FinalCommit(s stream.CommitStats) { h.final = slices.Clone(s.State) }

// BatchStats.State and CommitStats.State count the values that windows
// hold, beside the keys of UpdateStateByKey: the values of the batches a
// window keeps for its next windows, or ReduceByKeyAndWindow's result by
// key of each.
func TestStateStatsCountWindows(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := &statsHook{cancelAt: 5, cancel: cancel}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(4), stream.CommitInterval(time.Hour), stream.WithHook(h))
	in := stream.From(p, source.NewSlice("n", ints(100), 1))
	collect(stream.Window(in, 3, 1).Named("window"))
	pairs := stream.Map(in, func(v int) stream.Pair[int, int] { return stream.KV(v%2, v) })
	collect(stream.ReduceByKeyAndWindow(pairs, plus, nil, 3, 1).Named("recomputed"))
	collect(stream.ReduceByKeyAndWindow(pairs, plus, func(a, b int) int { return a - b }, 3, 1).Named("inverse"))
	collect(stream.UpdateStateByKey(stream.Keyed(pairs), sum).Named("totals"))
	require.NoError(t, p.Run(ctx))

	keys := func(st []stream.StateStats) map[string]int {
		m := map[string]int{}
		for _, s := range st {
			assert.Positive(t, s.Bytes, s.Name)
			m[s.Name] = s.Keys
		}
		return m
	}
	require.Len(t, h.batches, 5)
	for i, st := range h.batches {
		held := min(i+1, 2) // batches the windows keep for the next ones
		assert.Equal(t, map[string]int{"window": 4 * held, "recomputed": 2 * held, "inverse": 2 * held, "totals": 2}, keys(st), "batch %d", i+1)
	}
	assert.Equal(t, map[string]int{"window": 8, "recomputed": 4, "inverse": 4, "totals": 2}, keys(h.final))
}
