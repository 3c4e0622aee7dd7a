package digest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// errorBound is the rank error bound of the package doc, at q for n values:
// a quarter of a centroid's share of the ranks there, plus two values.
func errorBound(q, compression float64, n int) float64 {
	return math.Pi*math.Sqrt(q*(1-q))/(4*compression) + 2/float64(n)
}

// TestAccuracy measures the rank error against sorted data, for one digest
// and for the merge of 8 digests built on disjoint parts.
func TestAccuracy(t *testing.T) {
	n, seeds := 100_000, uint64(2)
	if testing.Short() || raceEnabled {
		seeds = 1
	}
	qs := []float64{0.5, 0.9, 0.95, 0.99, 0.999}
	for _, ds := range datasets {
		for seed := range seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", ds.name, seed), func(t *testing.T) {
				t.Parallel()
				xs := ds.gen(rand.New(rand.NewPCG(seed, 42)), n)
				sorted := sortedCopy(xs)
				whole := newDigest(t, xs)
				merged := newDigest(t, nil)
				for p := range 8 {
					require.NoError(t, merged.Merge(newDigest(t, xs[p*n/8:(p+1)*n/8])))
				}
				require.Equal(t, uint64(n), merged.Count())
				for name, d := range map[string]*TDigest{"whole": whole, "merged": merged} {
					for _, q := range qs {
						err := rankError(sorted, q, d.Quantile(q))
						assert.LessOrEqual(t, err, errorBound(q, DefaultCompression, n), "%s q=%v", name, q)
					}
					assert.Equal(t, sorted[0], d.Quantile(0), name)
					assert.Equal(t, sorted[n-1], d.Quantile(1), name)
				}
			})
		}
	}
}

// TestAccuracyBoundBites shows that the bound is tight enough to notice a
// digest ten times coarser than the default.
func TestAccuracyBoundBites(t *testing.T) {
	xs := datasets[0].gen(rand.New(rand.NewPCG(1, 42)), 100_000)
	sorted := sortedCopy(xs)
	d := newDigest(t, xs, WithCompression(DefaultCompression/10))
	worst := 0.0
	for _, q := range []float64{0.5, 0.9, 0.95, 0.99} {
		worst = max(worst, rankError(sorted, q, d.Quantile(q))/errorBound(q, DefaultCompression, len(xs)))
	}
	assert.Greater(t, worst, 1.0)
}

// TestAccuracyCounts: Counts is exact on the same data.
func TestAccuracyCounts(t *testing.T) {
	xs := userTotals(rand.New(rand.NewPCG(3, 42)), 100_000)
	sorted := sortedCopy(xs)
	c := NewCounts()
	for _, x := range xs {
		require.NoError(t, c.Add(x))
	}
	for _, q := range []float64{0, 0.5, 0.9, 0.95, 0.99, 0.999, 1} {
		assert.Zero(t, rankError(sorted, q, c.Quantile(q)), "q=%v", q)
		assert.Equal(t, exactQuantile(sorted, q), c.Quantile(q), "q=%v", q)
	}
}

// Where q falls at the step between two heavily tied values far apart, a
// centroid mixes the two and the estimate lands between them: the rank
// error there passes ε(q), and stays under 4·ε(q) at the default
// compression, as the package doc says, whatever the order of the values.
func TestTDigestTwoTiedValuesFarApart(t *testing.T) {
	const n = 100_000
	worst, at := 0.0, ""
	for low := 90_100; low <= 99_000; low += 600 {
		xs := make([]float64, 0, n)
		for range low {
			xs = append(xs, 1)
		}
		for len(xs) < n {
			xs = append(xs, 1000)
		}
		for _, shuffled := range []bool{false, true} {
			d, err := NewTDigest()
			require.NoError(t, err)
			order := rand.New(rand.NewPCG(uint64(low), 1)).Perm(n)
			for i := range n {
				if shuffled {
					i = order[i]
				}
				require.NoError(t, d.Add(xs[i]))
			}
			for _, q := range []float64{0.9, 0.95, 0.99} {
				v := d.Quantile(q)
				if r := rankError(xs, q, v) / errorBound(q, DefaultCompression, n); r > worst {
					worst, at = r, fmt.Sprintf("%d ones of %d, shuffled %v: Quantile(%v) = %v", low, n, shuffled, q, v)
				}
			}
		}
	}
	t.Logf("worst rank error %.2f·ε(q), at %s", worst, at)
	assert.Less(t, worst, 4.0, "at %s", at)
}
