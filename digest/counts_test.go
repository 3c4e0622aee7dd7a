package digest

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func countsOf(t testing.TB, vs ...int64) *Counts {
	t.Helper()
	c := NewCounts()
	for _, v := range vs {
		require.NoError(t, c.AddInt(v))
	}
	return c
}

func TestCountsQuantile(t *testing.T) {
	tests := []struct {
		name string
		vs   []int64
		q    float64
		want float64
	}{
		{"empty", nil, 0.5, math.NaN()},
		{"q<0", []int64{1}, -0.5, math.NaN()},
		{"q>1", []int64{1}, 1.5, math.NaN()},
		{"q NaN", []int64{1}, math.NaN(), math.NaN()},
		{"single", []int64{4}, 0.5, 4},
		{"q=0 is the minimum", []int64{5, -2, 9}, 0, -2},
		{"q=1 is the maximum", []int64{5, -2, 9}, 1, 9},
		{"median of four is the second", []int64{4, 1, 3, 2}, 0.5, 2},
		{"just past the second", []int64{4, 1, 3, 2}, 0.5000001, 3},
		{"median of five", []int64{5, 1, 4, 2, 3}, 0.5, 3},
		{"0.95 of 100 is the 95th", seq(1, 100), 0.95, 95},
		{"0.07 of 100 is the 7th", seq(1, 100), 0.07, 7},
		{"0.95 of 101 is the 96th", seq(1, 101), 0.95, 96},
		{"tiny q is the minimum", seq(1, 100), 1e-12, 1},
		{"ties", []int64{2, 2, 2, 1, 3}, 0.5, 2},
		{"negative", []int64{-10, -20, -30}, 0.5, -20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := countsOf(t, tt.vs...).Quantile(tt.q)
			if math.IsNaN(tt.want) {
				assert.True(t, math.IsNaN(got), "got %v", got)
				return
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func seq(lo, hi int64) []int64 {
	var vs []int64
	for v := lo; v <= hi; v++ {
		vs = append(vs, v)
	}
	return vs
}

func TestCountsAddRejects(t *testing.T) {
	tests := []struct {
		name string
		x    float64
	}{
		{"NaN", math.NaN()},
		{"+Inf", math.Inf(1)},
		{"-Inf", math.Inf(-1)},
		{"fraction", 1.5},
		{"tiny fraction", math.SmallestNonzeroFloat64},
		{"over 2^53", MaxExactInt * 2},
		{"under -2^53", -MaxExactInt * 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := countsOf(t, 1)
			assert.ErrorIs(t, c.Add(tt.x), ErrInvalidValue)
			assert.Equal(t, uint64(1), c.Count())
		})
	}
	t.Run("AddInt out of range", func(t *testing.T) {
		c := NewCounts()
		assert.ErrorIs(t, c.AddInt(MaxExactInt+1), ErrInvalidValue)
		assert.ErrorIs(t, c.AddInt(math.MinInt64), ErrInvalidValue)
		assert.NoError(t, c.AddInt(-MaxExactInt))
		assert.NoError(t, c.Add(MaxExactInt))
		assert.Equal(t, uint64(2), c.Count())
	})
	t.Run("full", func(t *testing.T) {
		var c Counts
		require.NoError(t, c.UnmarshalBinary(encodeCounts(1, 1, MaxCount)))
		assert.ErrorIs(t, c.AddInt(1), ErrFull)
		assert.ErrorIs(t, c.Add(2), ErrFull)
		assert.ErrorIs(t, countsOf(t, 1).Merge(&c), ErrFull)
		assert.Equal(t, uint64(MaxCount), c.Count())
	})
}

func TestCountsRemoveMove(t *testing.T) {
	t.Run("remove", func(t *testing.T) {
		c := countsOf(t, 40, 40, 41)
		require.NoError(t, c.Remove(40))
		assert.Equal(t, uint64(1), c.CountOf(40))
		require.NoError(t, c.Remove(40))
		assert.Zero(t, c.CountOf(40))
		assert.Equal(t, 1, c.Distinct())
		assert.ErrorIs(t, c.Remove(40), ErrNotFound)
		assert.ErrorIs(t, c.Remove(99), ErrNotFound)
		assert.Equal(t, uint64(1), c.Count())
		assert.Equal(t, 41.0, c.Quantile(0))
		require.NoError(t, c.AddInt(40)) // the emptied value comes back
		assert.Equal(t, 40.0, c.Quantile(0))
	})
	t.Run("move", func(t *testing.T) {
		c := countsOf(t, 10, 40, 50)
		require.NoError(t, c.Move(40, 43))
		assert.Equal(t, 43.0, c.Quantile(0.5))
		assert.Equal(t, uint64(3), c.Count())
		require.NoError(t, c.Move(43, 43))
		assert.ErrorIs(t, c.Move(40, 41), ErrNotFound)
		assert.ErrorIs(t, c.Move(40, 40), ErrNotFound)
		assert.ErrorIs(t, c.Move(43, MaxExactInt+1), ErrInvalidValue)
		assert.Equal(t, uint64(1), c.CountOf(43), "a failed move changes nothing")
		assert.Equal(t, []float64{10, 43, 50}, []float64{c.Quantile(0), c.Quantile(0.5), c.Quantile(1)})
	})
}

// TestCountsRandomOps checks Counts against sorted data through a long mix
// of adds, removes, moves and queries, so that the incremental sort and the
// compaction of emptied values are both exercised.
func TestCountsRandomOps(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	c := NewCounts()
	var vals []int64 // the reference multiset
	ops := 200_000
	if testing.Short() || raceEnabled {
		ops = 50_000
	}
	for i := range ops {
		switch op := r.IntN(10); {
		case op < 3 || len(vals) == 0:
			v := int64(r.IntN(3000)) - 100
			require.NoError(t, c.AddInt(v))
			vals = append(vals, v)
		case op < 4:
			j := r.IntN(len(vals))
			require.NoError(t, c.Remove(vals[j]))
			vals[j] = vals[len(vals)-1]
			vals = vals[:len(vals)-1]
		default: // totals drift upwards, leaving emptied values behind
			j := r.IntN(len(vals))
			to := vals[j] + int64(1+r.IntN(3))
			require.NoError(t, c.Move(vals[j], to))
			vals[j] = to
		}
		if i%997 == 0 && len(vals) > 0 {
			sorted := make([]float64, len(vals))
			for k, v := range vals {
				sorted[k] = float64(v)
			}
			slices.Sort(sorted)
			require.Equal(t, uint64(len(vals)), c.Count())
			for _, q := range []float64{0, 0.3, 0.5, 0.9, 0.95, 0.99, 1} {
				require.Equal(t, exactQuantile(sorted, q), c.Quantile(q), "op %d, q=%v", i, q)
			}
			require.Equal(t, len(slices.Compact(sorted)), c.Distinct())
		}
	}
	assert.Less(t, len(c.vals), 3*c.Distinct()+2048, "emptied values are dropped")
}

func TestCountsMerge(t *testing.T) {
	t.Run("parts equal the whole", func(t *testing.T) {
		r := rand.New(rand.NewPCG(10, 10))
		xs := userTotals(r, 40_000)
		whole := NewCounts()
		m := NewCounts()
		for p := range 8 {
			part := NewCounts()
			for _, x := range xs[p*5000 : (p+1)*5000] {
				require.NoError(t, part.Add(x))
				require.NoError(t, whole.Add(x))
			}
			require.NoError(t, m.Merge(part))
		}
		assert.Equal(t, must(whole.MarshalBinary()), must(m.MarshalBinary()))
		sorted := sortedCopy(xs)
		for _, q := range []float64{0, 0.5, 0.95, 0.999, 1} {
			assert.Equal(t, exactQuantile(sorted, q), m.Quantile(q))
		}
	})
	t.Run("leaves its argument", func(t *testing.T) {
		other := countsOf(t, 3, 1, 2, 2)
		require.NoError(t, other.Remove(1))
		require.NoError(t, other.AddInt(9)) // unsorted new value
		before := must(other.MarshalBinary())
		require.NoError(t, other.AddInt(-4))
		vals, ns, order := slices.Clone(other.vals), slices.Clone(other.ns), slices.Clone(other.order)
		c := countsOf(t, 2)
		require.NoError(t, c.Merge(other))
		assert.Equal(t, vals, other.vals)
		assert.Equal(t, ns, other.ns)
		assert.Equal(t, order, other.order)
		require.NoError(t, other.Remove(-4))
		assert.Equal(t, before, must(other.MarshalBinary()))
		assert.Equal(t, uint64(6), c.Count())
		assert.Equal(t, uint64(3), c.CountOf(2))
		assert.Zero(t, c.CountOf(1))
	})
	t.Run("concurrently into several", func(t *testing.T) {
		src := countsOf(t, seq(1, 1000)...)
		require.NoError(t, src.AddInt(5000)) // unsorted: a reader that sorted would race
		var wg sync.WaitGroup
		dsts := make([]*Counts, 4)
		for i := range dsts {
			dsts[i] = countsOf(t, int64(i))
			wg.Go(func() { assert.NoError(t, dsts[i].Merge(src)) })
		}
		wg.Wait()
		for _, d := range dsts {
			assert.Equal(t, uint64(1002), d.Count())
		}
	})
	t.Run("itself", func(t *testing.T) {
		c := countsOf(t, 1, 2, 2, 3)
		require.NoError(t, c.Merge(c))
		assert.Equal(t, uint64(8), c.Count())
		assert.Equal(t, uint64(4), c.CountOf(2))
	})
	t.Run("nil and empty", func(t *testing.T) {
		c := countsOf(t, 1)
		require.NoError(t, c.Merge(nil))
		require.NoError(t, c.Merge(NewCounts()))
		assert.Equal(t, uint64(1), c.Count())
	})
}

func TestCountsReset(t *testing.T) {
	c := countsOf(t, 1, 2, 3)
	c.Reset()
	assert.Zero(t, c.Count())
	assert.Zero(t, c.Distinct())
	assert.True(t, math.IsNaN(c.Quantile(0.5)))
	require.NoError(t, c.AddInt(2))
	assert.Equal(t, 2.0, c.Quantile(0.5))
}
