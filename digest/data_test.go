package digest

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
)

// A dataset is a named generator of test values.
type dataset struct {
	name string
	gen  func(r *rand.Rand, n int) []float64
}

var datasets = []dataset{
	{"uniform", func(r *rand.Rand, n int) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = r.Float64()
		}
		return xs
	}},
	{"exponential", func(r *rand.Rand, n int) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = r.ExpFloat64()
		}
		return xs
	}},
	{"totals", userTotals},
}

// userTotals models the running totals of the popular-users pipeline: each
// user has a Pareto-distributed number of events (α = 1.5, so a few users
// have thousands), each scoring 1, 2 or 3.
func userTotals(r *rand.Rand, n int) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		events := int(min(math.Floor(1/math.Pow(1-r.Float64(), 1/1.5)), 100_000))
		total := 0
		// Twenty scores from each random word: its base-3 digits
		// (2^64 is five billion times 3^20: the modulo bias is negligible).
		for ; events > 0; events -= 20 {
			w := r.Uint64() % 3486784401 // 3^20
			for range min(events, 20) {
				total += 1 + int(w%3)
				w /= 3
			}
		}
		xs[i] = float64(total)
	}
	return xs
}

// rankError returns how far q is from the ranks v holds in sorted: 0 if
// some position of v among the sorted values is a q-quantile.
func rankError(sorted []float64, q, v float64) float64 {
	n := float64(len(sorted))
	lo := float64(sort.SearchFloat64s(sorted, v)) // values < v
	hi := float64(sort.Search(len(sorted), func(i int) bool { return sorted[i] > v }))
	return max(0, lo/n-q, q-hi/n)
}

func sortedCopy(xs []float64) []float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s
}
