package digest

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestRank(t *testing.T) {
	tests := []struct {
		q    float64
		n    uint64
		want uint64
	}{
		{0, 1, 1},
		{0, 100, 1},
		{1, 100, 100},
		{0.5, 1, 1},
		{0.5, 2, 1},
		{0.5, 3, 2},
		{0.5, 4, 2},
		{0.95, 100, 95},
		{0.95, 101, 96},
		{0.07, 100, 7}, // 0.07·100 is 7.000000000000001 in float64
		{0.29, 100, 29},
		{0.999, 1000, 999},
		{0.9990001, 1000, 1000},
		{1e-9, 1_000_000, 1},
		{0.5, MaxCount, MaxCount / 2},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("q=%v/n=%d", tt.q, tt.n), func(t *testing.T) {
			assert.Equal(t, tt.want, rank(tt.q, tt.n))
		})
	}
}

// exactQuantile is the package's quantile definition applied to sorted
// data, the reference both sketches are tested against.
func exactQuantile(sorted []float64, q float64) float64 {
	return sorted[rank(q, uint64(len(sorted)))-1]
}

// TestTieRule shows what `score > Quantile(q)` selects when many values
// share a score, as the package doc states: never a value equal to the
// threshold, so at most (1-q)·n values, and possibly far fewer.
func TestTieRule(t *testing.T) {
	scores := func(groups ...[2]int) []float64 { // {score, how many}
		var xs []float64
		for _, g := range groups {
			for range g[1] {
				xs = append(xs, float64(g[0]))
			}
		}
		return xs
	}
	tests := []struct {
		name      string
		xs        []float64
		q         float64
		threshold float64
		selected  int
	}{
		{"5% strictly above", scores([2]int{10, 95}, [2]int{20, 5}), 0.95, 10, 5},
		{"4% above", scores([2]int{10, 96}, [2]int{20, 4}), 0.95, 10, 4},
		{"top score shared by 10%", scores([2]int{10, 90}, [2]int{20, 10}), 0.95, 20, 0},
		{"everyone equal", scores([2]int{7, 1000}), 0.95, 7, 0},
		{"rank lands on the last of a tie", scores([2]int{1, 50}, [2]int{2, 45}, [2]int{3, 5}), 0.95, 2, 5},
		{"rank lands on the first of a tie", scores([2]int{1, 94}, [2]int{2, 3}, [2]int{3, 3}), 0.95, 2, 3},
		{"heavy ties, many users", scores([2]int{1, 60_000}, [2]int{2, 30_000}, [2]int{3, 9_000}, [2]int{40, 1_000}), 0.95, 3, 1_000},
		{"q=0 keeps all but the minimum", scores([2]int{1, 3}, [2]int{2, 7}), 0, 1, 7},
		{"q=1 keeps nobody", scores([2]int{1, 3}, [2]int{2, 7}), 1, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Counts
			td, err := NewTDigest()
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range tt.xs {
				assert.NoError(t, c.Add(x))
				assert.NoError(t, td.Add(x))
			}
			for name, s := range map[string]interface{ Quantile(float64) float64 }{"counts": &c, "tdigest": td} {
				thr := s.Quantile(tt.q)
				assert.Equal(t, tt.threshold, thr, name)
				selected := 0
				for _, x := range tt.xs {
					if x > thr {
						selected++
					}
				}
				assert.Equal(t, tt.selected, selected, name)
				assert.LessOrEqual(t, float64(selected), math.Ceil((1-tt.q)*float64(len(tt.xs))), name)
			}
		})
	}
}
