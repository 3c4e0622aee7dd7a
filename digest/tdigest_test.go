package digest

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/influxdata/tdigest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newDigest(t testing.TB, xs []float64, opts ...Option) *TDigest {
	t.Helper()
	d, err := NewTDigest(opts...)
	require.NoError(t, err)
	for _, x := range xs {
		require.NoError(t, d.Add(x))
	}
	return d
}

func TestNewTDigest(t *testing.T) {
	tests := []struct {
		name        string
		opts        []Option
		compression float64
		wantErr     bool
	}{
		{"default", nil, DefaultCompression, false},
		{"minimum", []Option{WithCompression(MinCompression)}, MinCompression, false},
		{"maximum", []Option{WithCompression(MaxCompression)}, MaxCompression, false},
		{"fractional", []Option{WithCompression(123.5)}, 123.5, false},
		{"last option wins", []Option{WithCompression(50), WithCompression(60)}, 60, false},
		{"too small", []Option{WithCompression(MinCompression - 1)}, 0, true},
		{"too large", []Option{WithCompression(MaxCompression + 1)}, 0, true},
		{"zero", []Option{WithCompression(0)}, 0, true},
		{"negative", []Option{WithCompression(-100)}, 0, true},
		{"NaN", []Option{WithCompression(math.NaN())}, 0, true},
		{"+Inf", []Option{WithCompression(math.Inf(1))}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := NewTDigest(tt.opts...)
			if tt.wantErr {
				assert.ErrorIs(t, err, ErrInvalidOption)
				assert.Nil(t, d)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.compression, d.Compression())
			assert.Zero(t, d.Count())
		})
	}
}

func TestTDigestZeroValue(t *testing.T) {
	var d TDigest
	assert.Equal(t, float64(DefaultCompression), d.Compression())
	assert.True(t, math.IsNaN(d.Quantile(0.5)))
	assert.True(t, math.IsNaN(d.Min()))
	assert.True(t, math.IsNaN(d.Max()))
	for i := range 10 {
		require.NoError(t, d.Add(float64(i)))
	}
	assert.Equal(t, uint64(10), d.Count())
	assert.Equal(t, 4.0, d.Quantile(0.5))
}

func TestTDigestAddRejects(t *testing.T) {
	tests := []struct {
		name string
		x    float64
	}{
		{"NaN", math.NaN()},
		{"+Inf", math.Inf(1)},
		{"-Inf", math.Inf(-1)},
		{"over MaxAbsValue", MaxAbsValue * 10},
		{"under -MaxAbsValue", -math.MaxFloat64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDigest(t, []float64{1, 2, 3})
			before, err := d.MarshalBinary()
			require.NoError(t, err)
			assert.ErrorIs(t, d.Add(tt.x), ErrInvalidValue)
			after, err := d.MarshalBinary()
			require.NoError(t, err)
			assert.Equal(t, before, after, "a rejected value leaves the digest unchanged")
			assert.Equal(t, 2.0, d.Quantile(0.5))
		})
	}
	t.Run("MaxAbsValue itself", func(t *testing.T) {
		d := newDigest(t, []float64{-MaxAbsValue, MaxAbsValue, 0})
		assert.Equal(t, -MaxAbsValue, d.Quantile(0))
		assert.Equal(t, MaxAbsValue, d.Quantile(1))
		assert.Equal(t, 0.0, d.Quantile(0.5))
	})
}

// TestTDigestInfDoesNotPoison: the library takes +Inf and its upper
// quantiles stop being numbers. Ours refuses it and keeps answering.
func TestTDigestInfDoesNotPoison(t *testing.T) {
	lib := tdigest.NewWithCompression(100)
	ours := newDigest(t, nil, WithCompression(100))
	for i := range 2000 {
		if i == 1000 || i == 1001 {
			lib.Add(math.Inf(1), 1)
			require.ErrorIs(t, ours.Add(math.Inf(1)), ErrInvalidValue)
		}
		lib.Add(float64(i%1000), 1)
		require.NoError(t, ours.Add(float64(i%1000)))
	}
	libQ := lib.Quantile(0.999)
	require.True(t, math.IsNaN(libQ) || math.IsInf(libQ, 0), "the library's failure this test guards against")
	assert.Equal(t, 999.0, ours.Quantile(0.999))
	assert.Equal(t, 999.0, ours.Quantile(1))
}

func TestTDigestMinMaxExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	xs := make([]float64, 20_000)
	for i := range xs {
		xs[i] = r.NormFloat64()
	}
	xs[1234], xs[5678] = -7.25, 9.5 // extremes a centroid mean would blur
	tests := []struct {
		name     string
		opts     []Option
		libWrong bool // whether the library itself misses the extremes
	}{
		{"default", nil, false},
		{"coarse", []Option{WithCompression(MinCompression)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDigest(t, xs, tt.opts...)
			if tt.libWrong {
				lib := tdigest.NewWithCompression(d.Compression())
				for _, x := range xs {
					lib.Add(x, 1)
				}
				require.NotEqual(t, 9.5, lib.Quantile(1), "the library's failure this test guards against")
				require.NotEqual(t, -7.25, lib.Quantile(0), "the library's failure this test guards against")
			}

			assert.Equal(t, -7.25, d.Min())
			assert.Equal(t, 9.5, d.Max())
			assert.Equal(t, -7.25, d.Quantile(0))
			assert.Equal(t, 9.5, d.Quantile(1))
			// Survives merging and encoding.
			m := newDigest(t, nil)
			require.NoError(t, m.Merge(d))
			var e TDigest
			require.NoError(t, e.UnmarshalBinary(must(m.MarshalBinary())))
			for _, s := range []*TDigest{m, &e} {
				assert.Equal(t, -7.25, s.Quantile(0))
				assert.Equal(t, 9.5, s.Quantile(1))
			}
		})
	}
}

// TestTDigestTail checks the ranks in the last half of the last centroid,
// where the library answers with that centroid's mean, not the maximum.
func TestTDigestTail(t *testing.T) {
	xs := make([]float64, 10_000)
	for i := range xs {
		xs[i] = float64(i) + 0.5 // fractional: no rounding to integers
	}
	d := newDigest(t, xs, WithCompression(MinCompression))
	d.compact()
	last := d.cents[len(d.cents)-1]
	require.Greater(t, last.Weight, 2.0, "a coarse digest has a heavy last centroid")
	sorted := sortedCopy(xs)

	halfStart := 1 - last.Weight/2/float64(len(xs))
	prev := last.Mean
	for _, q := range []float64{halfStart, halfStart + 1e-5, 1 - 1e-4, 1 - 1e-5, 1 - 1e-9} {
		v := d.Quantile(q)
		assert.GreaterOrEqual(t, v, prev, "q=%v: increasing towards the maximum", q)
		assert.LessOrEqual(t, v, d.Max(), "q=%v", q)
		assert.LessOrEqual(t, rankError(sorted, q, v), last.Weight/2/float64(len(xs)), "q=%v: within half the last centroid", q)
		prev = v
	}
	assert.Greater(t, d.Quantile(1-1e-5), last.Mean, "beyond the last mean, towards the true maximum")
	assert.Equal(t, 9999.5, d.Quantile(1))
}

func TestTDigestQuantileEdges(t *testing.T) {
	tests := []struct {
		name string
		xs   []float64
		q    float64
		want float64 // NaN for NaN
	}{
		{"empty", nil, 0.5, math.NaN()},
		{"empty q=0", nil, 0, math.NaN()},
		{"q<0", []float64{1, 2}, -0.1, math.NaN()},
		{"q>1", []float64{1, 2}, 1.1, math.NaN()},
		{"q NaN", []float64{1, 2}, math.NaN(), math.NaN()},
		{"single q=0", []float64{3.5}, 0, 3.5},
		{"single q=0.5", []float64{3.5}, 0.5, 3.5},
		{"single q=1", []float64{3.5}, 1, 3.5},
		{"two, lower half", []float64{2.5, 1.5}, 0.5, 1.5},
		{"two, upper half", []float64{2.5, 1.5}, 0.51, 2.5},
		{"negative zero", []float64{math.Copysign(0, -1)}, 0.5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDigest(t, tt.xs)
			got := d.Quantile(tt.q)
			if math.IsNaN(tt.want) {
				assert.True(t, math.IsNaN(got), "got %v", got)
				return
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestTDigestSmallIsExact: while every value has a centroid of its own, the
// digest answers exactly as Counts and the package definition do.
func TestTDigestSmallIsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, n := range []int{1, 2, 3, 10, 99, 500} {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = float64(r.IntN(50)) + r.Float64()
		}
		d := newDigest(t, xs)
		sorted := sortedCopy(xs)
		for _, q := range []float64{0, 0.01, 0.1, 0.25, 0.5, 0.07, 0.9, 0.95, 0.99, 0.999, 1} {
			assert.Equal(t, exactQuantile(sorted, q), d.Quantile(q), "n=%d q=%v", n, q)
		}
	}
}

func TestTDigestIntegersRound(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	xs := userTotals(r, 50_000)
	d := newDigest(t, xs)
	for q := 0.0; q <= 1; q += 0.001 {
		v := d.Quantile(q)
		assert.Equal(t, math.Round(v), v, "q=%v: integer data, integer quantile", q)
	}
	t.Run("one fraction turns rounding off", func(t *testing.T) {
		f := newDigest(t, []float64{0.5})
		m := newDigest(t, xs)
		require.NoError(t, m.Merge(f))
		fractions := 0
		for q := 0.0; q <= 1; q += 0.001 {
			if v := m.Quantile(q); v != math.Round(v) {
				fractions++
			}
		}
		assert.Positive(t, fractions)
	})
}

// snapshot copies the state of d that Merge must not touch.
type snapshot struct {
	n          uint64
	min, max   float64
	fractional bool
	cents      tdigest.CentroidList
	pending    []uint64
	cum        []uint64
}

func snap(d *TDigest) snapshot {
	return snapshot{d.n, d.min, d.max, d.fractional, slices.Clone(d.cents), slices.Clone(d.pending), slices.Clone(d.cum)}
}

func TestTDigestMergeLeavesArgument(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	xs := make([]float64, 12_345)
	for i := range xs {
		xs[i] = r.ExpFloat64()
	}
	other := newDigest(t, xs)
	other.Quantile(0.5) // fills the rank cache
	// Then leave values pending.
	for range 100 {
		require.NoError(t, other.Add(r.ExpFloat64()))
	}
	require.NotEmpty(t, other.pending)
	require.NotEmpty(t, other.cents)
	require.NotEmpty(t, other.cum)
	before := snap(other)

	d := newDigest(t, []float64{-1, 100})
	require.NoError(t, d.Merge(other))
	assert.Equal(t, before, snap(other))
	assert.Equal(t, other.Count()+2, d.Count())
	assert.Equal(t, -1.0, d.Min())
	assert.Equal(t, 100.0, d.Max())

	// Merging again gives the same digest: nothing of other was used up.
	again := newDigest(t, []float64{-1, 100})
	require.NoError(t, again.Merge(other))
	assert.Equal(t, must(d.MarshalBinary()), must(again.MarshalBinary()))
}

// TestTDigestConcurrentMerge merges one digest into several at once: with
// -race this fails if Merge writes to its argument.
func TestTDigestConcurrentMerge(t *testing.T) {
	src := newDigest(t, sortedCopy(userTotals(rand.New(rand.NewPCG(5, 5)), 5_000)))
	var wg sync.WaitGroup
	dsts := make([]*TDigest, 4)
	for i := range dsts {
		dsts[i] = newDigest(t, []float64{float64(i)})
		wg.Go(func() { assert.NoError(t, dsts[i].Merge(src)) })
	}
	wg.Wait()
	for _, d := range dsts {
		assert.Equal(t, src.Count()+1, d.Count())
	}
}

func TestTDigestMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	xs := make([]float64, 40_000)
	for i := range xs {
		xs[i] = r.NormFloat64()
	}
	sorted := sortedCopy(xs)

	t.Run("parts equal the whole", func(t *testing.T) {
		m := newDigest(t, nil)
		for p := range 8 {
			require.NoError(t, m.Merge(newDigest(t, xs[p*5000:(p+1)*5000])))
		}
		assert.Equal(t, uint64(len(xs)), m.Count())
		assert.Equal(t, sorted[0], m.Min())
		assert.Equal(t, sorted[len(sorted)-1], m.Max())
		for _, q := range []float64{0.5, 0.95} {
			assert.LessOrEqual(t, rankError(sorted, q, m.Quantile(q)), errorBound(q, DefaultCompression, len(xs)))
		}
	})
	t.Run("itself", func(t *testing.T) {
		d := newDigest(t, xs)
		require.NoError(t, d.Merge(d))
		assert.Equal(t, uint64(2*len(xs)), d.Count())
		assert.Equal(t, sorted[0], d.Min())
		assert.Equal(t, sorted[len(sorted)-1], d.Max())
		for _, q := range []float64{0.5, 0.95} {
			// Every value twice: the same ranks as once.
			assert.LessOrEqual(t, rankError(sorted, q, d.Quantile(q)), errorBound(q, DefaultCompression, len(xs)))
		}
	})
	t.Run("nil and empty", func(t *testing.T) {
		d := newDigest(t, xs[:10])
		want := must(d.MarshalBinary())
		require.NoError(t, d.Merge(nil))
		require.NoError(t, d.Merge(newDigest(t, nil)))
		assert.Equal(t, want, must(d.MarshalBinary()))
	})
	t.Run("into empty", func(t *testing.T) {
		src := newDigest(t, xs[:5000])
		d := newDigest(t, nil)
		require.NoError(t, d.Merge(src))
		assert.Equal(t, src.Min(), d.Min())
		assert.Equal(t, src.Max(), d.Max())
		assert.Equal(t, src.Quantile(0.3), d.Quantile(0.3))
	})
	t.Run("keeps the receiver's compression", func(t *testing.T) {
		d := newDigest(t, xs[:100], WithCompression(50))
		require.NoError(t, d.Merge(newDigest(t, xs, WithCompression(2000))))
		assert.Equal(t, 50.0, d.Compression())
		d.compact()
		assert.LessOrEqual(t, len(d.cents), maxCentroids(50))
	})
	t.Run("full", func(t *testing.T) {
		var full TDigest
		require.NoError(t, full.UnmarshalBinary(encodeTDigest(DefaultCompression, 0, MaxCount, 1, 1, [][2]float64{{1, MaxCount}})))
		assert.ErrorIs(t, full.Add(1), ErrFull)
		d := newDigest(t, []float64{1})
		before := snap(d)
		assert.ErrorIs(t, d.Merge(&full), ErrFull)
		assert.Equal(t, before, snap(d))
		var empty TDigest
		require.NoError(t, empty.Merge(&full))
		assert.Equal(t, uint64(MaxCount), empty.Count())
	})
}

func TestTDigestReset(t *testing.T) {
	d := newDigest(t, []float64{1.5, 2.5, 3.5}, WithCompression(77))
	d.Reset()
	assert.Zero(t, d.Count())
	assert.Equal(t, 77.0, d.Compression())
	assert.True(t, math.IsNaN(d.Quantile(0.5)))
	require.NoError(t, d.Add(4))
	assert.Equal(t, 4.0, d.Quantile(0.5))
	assert.Equal(t, 4.0, d.Min())
	assert.False(t, d.fractional)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// sortPending sorts as slices.Sort does, by counting when the values are
// integers in a narrow range and by comparing otherwise.
func TestSortPendingMatchesASort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	counted := 0
	for trial := range 300 {
		n := 1 + rng.IntN(3000)
		base, step := float64(rng.IntN(2_000_000)-1_000_000), 1.0
		width := 1 + rng.IntN(4*n) // narrow enough to count, or not
		if trial%10 == 0 {
			// Integers past 2^53, 256 apart: the range counts in floats.
			base, step, width = 1<<60, 256, 1+rng.IntN(max(1, n/128))
		}
		var d TDigest
		for range n {
			d.pending = append(d.pending, key(base+step*float64(rng.IntN(width))))
		}
		if trial%7 == 0 {
			// Around zero, with a -0 that counting would turn into 0.
			d.pending = d.pending[:0]
			for range n {
				d.pending = append(d.pending, key(float64(rng.IntN(width)-width/2)))
			}
			d.pending = append(d.pending, key(math.Copysign(0, -1)), key(0))
		}
		want := slices.Clone(d.pending)
		slices.Sort(want)
		d.sortPending()
		require.Equal(t, want, d.pending, "trial %d: %d values over %d", trial, n, width)
		if len(d.counts) > 0 {
			counted++
			d.counts = d.counts[:0]
		}
	}
	assert.Greater(t, counted, 100, "most trials sorted by counting")
}

// TestClusterAsLibrary: on values that the library clusters in a single
// pass (fewer than its buffer holds, added in order), cluster makes the
// same centroids, runs of ties included.
func TestClusterAsLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const compression = 50 // the library's buffer holds 8·50 values
	for trial := range 200 {
		n := 1 + rng.IntN(8*compression-1)
		xs := make([]float64, n)
		width := 1 + rng.IntN(2*n) // many ties, or few
		for i := range xs {
			xs[i] = float64(rng.IntN(width))
			if trial%4 == 0 {
				xs[i] = rng.NormFloat64()
			}
		}
		d := newDigest(t, xs, WithCompression(compression))
		d.compact()

		sorted := sortedCopy(xs)
		lib := tdigest.NewWithCompression(compression)
		for _, x := range sorted {
			lib.Add(x, 1)
		}
		want := lib.Centroids(nil)
		require.Len(t, d.cents, len(want), "trial %d: %d values over %d", trial, n, width)
		for i, c := range want {
			require.Equal(t, c.Weight, d.cents[i].Weight, "trial %d: centroid %d", trial, i)
			require.InDelta(t, c.Mean, d.cents[i].Mean, 1e-9*max(1, math.Abs(c.Mean)), "trial %d: centroid %d", trial, i)
		}
	}
}
