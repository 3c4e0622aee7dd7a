package digest

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// encodeTDigest writes a t-digest encoding field by field, valid or not.
func encodeTDigest(comp float64, flags byte, n uint64, lo, hi float64, cents [][2]float64) []byte {
	b := []byte{kindTDigest, version1}
	b = appendFloat(b, comp)
	b = append(b, flags)
	b = binary.AppendUvarint(b, n)
	if n == 0 {
		return b
	}
	b = appendFloat(b, lo)
	b = appendFloat(b, hi)
	b = binary.AppendUvarint(b, uint64(len(cents)))
	for _, c := range cents {
		b = appendFloat(b, c[0])
		b = binary.AppendUvarint(b, uint64(c[1]))
	}
	return b
}

// encodeCounts writes a counts encoding field by field, valid or not:
// pairs are (first value, count), then (gap-1, count).
func encodeCounts(d uint64, first int64, pairs ...uint64) []byte {
	b := []byte{kindCounts, version1}
	b = binary.AppendUvarint(b, d)
	b = binary.AppendVarint(b, first)
	for _, p := range pairs {
		b = binary.AppendUvarint(b, p)
	}
	return b
}

func TestTDigestEncoding(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	big := make([]float64, 30_000)
	for i := range big {
		big[i] = r.ExpFloat64()
	}
	merged := newDigest(t, big[:100])
	require.NoError(t, merged.Merge(newDigest(t, big[100:])))
	tests := []struct {
		name string
		d    *TDigest
	}{
		{"zero value", &TDigest{}},
		{"empty", newDigest(t, nil, WithCompression(42))},
		{"one value", newDigest(t, []float64{-3})},
		{"integers", newDigest(t, []float64{3, 1, 2, 2})},
		{"many, pending", newDigest(t, big)},
		{"merged", merged},
		{"extremes", newDigest(t, []float64{-MaxAbsValue, MaxAbsValue, math.SmallestNonzeroFloat64})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.d.MarshalBinary()
			require.NoError(t, err)
			var got TDigest
			require.NoError(t, got.UnmarshalBinary(b))
			assert.Equal(t, tt.d.Count(), got.Count())
			assert.Equal(t, tt.d.Compression(), got.Compression())
			for _, q := range []float64{0, 0.001, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 1} {
				if tt.d.Count() > 0 { // else NaN, which equals nothing
					assert.Equal(t, tt.d.Quantile(q), got.Quantile(q), "q=%v", q)
				}
			}
			assert.Equal(t, b, must(got.MarshalBinary()), "re-encodes to the same bytes")
			assert.Equal(t, b, must(tt.d.MarshalBinary()), "deterministic")

			// AppendBinary appends.
			prefix := []byte("prefix")
			app, err := tt.d.AppendBinary(prefix)
			require.NoError(t, err)
			assert.Equal(t, append([]byte("prefix"), b...), app)

			// The decoded digest keeps working.
			require.NoError(t, got.Add(1))
			require.NoError(t, got.Merge(tt.d))
			assert.Equal(t, 2*tt.d.Count()+1, got.Count())
		})
	}
	t.Run("size", func(t *testing.T) {
		b := must(merged.MarshalBinary())
		assert.Less(t, len(b), 10*maxCentroids(DefaultCompression), "about 9-10 bytes a centroid")
	})
}

func TestTDigestDecodeRejects(t *testing.T) {
	c := float64(DefaultCompression)
	valid := encodeTDigest(c, 0, 3, 1, 5, [][2]float64{{1, 1}, {2, 1}, {5, 1}})
	withVersion := func(v byte) []byte { b := append([]byte{}, valid...); b[1] = v; return b }
	tests := []struct {
		name    string
		b       []byte
		wantErr error
	}{
		{"nil", nil, ErrCorrupt},
		{"kind only", []byte{kindTDigest}, ErrCorrupt},
		{"counts encoding", must((&Counts{}).MarshalBinary()), ErrCorrupt},
		{"version 0", withVersion(0), ErrVersion},
		{"version 2", withVersion(2), ErrVersion},
		{"trailing byte", append(append([]byte{}, valid...), 0), ErrCorrupt},
		{"compression NaN", encodeTDigest(math.NaN(), 0, 0, 0, 0, nil), ErrCorrupt},
		{"compression +Inf", encodeTDigest(math.Inf(1), 0, 0, 0, 0, nil), ErrCorrupt},
		{"compression too small", encodeTDigest(MinCompression-1, 0, 0, 0, 0, nil), ErrCorrupt},
		{"compression too large", encodeTDigest(MaxCompression*2, 0, 0, 0, 0, nil), ErrCorrupt},
		{"unknown flag", encodeTDigest(c, 2, 1, 1, 1, [][2]float64{{1, 1}}), ErrCorrupt},
		{"flag on empty", encodeTDigest(c, flagFractional, 0, 0, 0, nil), ErrCorrupt},
		{"count over MaxCount", encodeTDigest(c, 0, MaxCount+1, 1, 1, [][2]float64{{1, MaxCount + 1}}), ErrCorrupt},
		{"count max uint64", encodeTDigest(c, 0, math.MaxUint64, 1, 1, [][2]float64{{1, 1}}), ErrCorrupt},
		{"min NaN", encodeTDigest(c, 0, 1, math.NaN(), 1, [][2]float64{{1, 1}}), ErrCorrupt},
		{"max +Inf", encodeTDigest(c, 0, 1, 1, math.Inf(1), [][2]float64{{1, 1}}), ErrCorrupt},
		{"min over max", encodeTDigest(c, 0, 1, 2, 1, [][2]float64{{1, 1}}), ErrCorrupt},
		{"max over MaxAbsValue", encodeTDigest(c, 0, 1, 1, math.MaxFloat64, [][2]float64{{1, 1}}), ErrCorrupt},
		{"no centroids", encodeTDigest(c, 0, 1, 1, 1, nil), ErrCorrupt},
		{"more centroids than values", encodeTDigest(c, 0, 1, 1, 2, [][2]float64{{1, 1}, {2, 1}}), ErrCorrupt},
		{"more centroids than compression allows", func() []byte {
			cents := make([][2]float64, maxCentroids(MinCompression)+1)
			for i := range cents {
				cents[i] = [2]float64{float64(i), 1}
			}
			return encodeTDigest(MinCompression, 0, uint64(len(cents)), 0, float64(len(cents)-1), cents)
		}(), ErrCorrupt},
		{"centroid count beyond the input", append(encodeTDigest(c, 0, 1<<40, 1, 1, nil), 0xff, 0xff, 0xff, 0x0f), ErrCorrupt},
		{"mean NaN", encodeTDigest(c, 0, 2, 1, 2, [][2]float64{{math.NaN(), 1}, {2, 1}}), ErrCorrupt},
		{"mean -Inf", encodeTDigest(c, 0, 2, 1, 2, [][2]float64{{math.Inf(-1), 1}, {2, 1}}), ErrCorrupt},
		{"mean below min", encodeTDigest(c, 0, 2, 1, 2, [][2]float64{{0.5, 1}, {2, 1}}), ErrCorrupt},
		{"mean above max", encodeTDigest(c, 0, 2, 1, 2, [][2]float64{{1, 1}, {2.5, 1}}), ErrCorrupt},
		{"means out of order", encodeTDigest(c, 0, 2, 1, 2, [][2]float64{{2, 1}, {1, 1}}), ErrCorrupt},
		{"fractional min in a digest of integers", encodeTDigest(c, 0, 2, 0.5, 2, [][2]float64{{1, 1}, {2, 1}}), ErrCorrupt},
		{"fractional single value in a digest of integers", encodeTDigest(c, 0, 2, 1, 2, [][2]float64{{1.5, 1}, {2, 1}}), ErrCorrupt},
		{"weight 0", encodeTDigest(c, 0, 2, 1, 2, [][2]float64{{1, 0}, {2, 2}}), ErrCorrupt},
		{"weights short of count", encodeTDigest(c, 0, 3, 1, 2, [][2]float64{{1, 1}, {2, 1}}), ErrCorrupt},
		{"weights over count", encodeTDigest(c, 0, 2, 1, 2, [][2]float64{{1, 1}, {2, 2}}), ErrCorrupt},
		{"varint not shortest", func() []byte {
			b := encodeTDigest(c, 0, 0, 0, 0, nil)
			return append(b[:len(b)-1], 0x80, 0x00) // count 0 in two bytes
		}(), ErrCorrupt},
		{"varint overflow", append(encodeTDigest(c, 0, 0, 0, 0, nil)[:11], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDigest(t, []float64{7, 8, 9})
			before := snap(d)
			err := d.UnmarshalBinary(tt.b)
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.wantErr)
			assert.Equal(t, before, snap(d), "a failed decode leaves the digest unchanged")
		})
	}
	t.Run("every truncation", func(t *testing.T) {
		b := must(newDigest(t, []float64{1.5, 2.5, 3.5, 1e9}).MarshalBinary())
		var d TDigest
		require.NoError(t, d.UnmarshalBinary(b))
		for i := range len(b) {
			assert.ErrorIs(t, d.UnmarshalBinary(b[:i]), ErrCorrupt, "%d of %d bytes", i, len(b))
		}
	})
	t.Run("valid cases are valid", func(t *testing.T) {
		var d TDigest
		require.NoError(t, d.UnmarshalBinary(valid))
		assert.Equal(t, 2.0, d.Quantile(0.5))
		require.NoError(t, d.UnmarshalBinary(encodeTDigest(c, 0, 3, 1, 2, [][2]float64{{1, 1}, {1.5, 2}})), "a mean of integers need not be one")
		require.NoError(t, d.UnmarshalBinary(encodeTDigest(c, flagFractional, 2, 0.5, 2, [][2]float64{{1.5, 1}, {2, 1}})))
	})
}

func TestCountsEncoding(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	totals := NewCounts()
	for _, x := range userTotals(r, 20_000) {
		require.NoError(t, totals.Add(x))
	}
	moved := NewCounts()
	for v := range int64(5000) {
		require.NoError(t, moved.AddInt(v))
	}
	for v := range int64(4000) {
		require.NoError(t, moved.Move(v, v+10_000))
	}
	tests := []struct {
		name string
		c    *Counts
	}{
		{"zero value", &Counts{}},
		{"one value", countsOf(t, -5)},
		{"extremes", countsOf(t, -MaxExactInt, MaxExactInt, 0, 0)},
		{"totals", totals},
		{"after moves", moved},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.c.MarshalBinary()
			require.NoError(t, err)
			var got Counts
			require.NoError(t, got.UnmarshalBinary(b))
			assert.Equal(t, tt.c.Count(), got.Count())
			assert.Equal(t, tt.c.Distinct(), got.Distinct())
			for _, q := range []float64{0, 0.1, 0.5, 0.95, 1} {
				if tt.c.Count() > 0 {
					assert.Equal(t, tt.c.Quantile(q), got.Quantile(q))
				}
			}
			assert.Equal(t, b, must(got.MarshalBinary()), "re-encodes to the same bytes")
			app, err := tt.c.AppendBinary([]byte{9})
			require.NoError(t, err)
			assert.Equal(t, append([]byte{9}, b...), app)
			require.NoError(t, got.AddInt(3))
			require.NoError(t, got.Remove(3))
			assert.Equal(t, b, must(got.MarshalBinary()))
		})
	}
	t.Run("independent of history", func(t *testing.T) {
		a := countsOf(t, 5, 1, 3, 3)
		b := countsOf(t, 3, 9, 3, 1, 5)
		require.NoError(t, b.Remove(9))
		assert.Equal(t, must(a.MarshalBinary()), must(b.MarshalBinary()))
	})
	t.Run("compact", func(t *testing.T) {
		assert.Equal(t, []byte{'C', 1, 3, 2, 1, 1, 2, 0, 1}, must(countsOf(t, 1, 3, 3, 4).MarshalBinary()))
	})
}

func TestCountsDecodeRejects(t *testing.T) {
	valid := encodeCounts(2, 1, 1, 0, 1) // {1: 1, 2: 1}
	withVersion := func(v byte) []byte { b := append([]byte{}, valid...); b[1] = v; return b }
	tests := []struct {
		name    string
		b       []byte
		wantErr error
	}{
		{"nil", nil, ErrCorrupt},
		{"t-digest encoding", must((&TDigest{}).MarshalBinary()), ErrCorrupt},
		{"version 0", withVersion(0), ErrVersion},
		{"version 9", withVersion(9), ErrVersion},
		{"trailing byte", append(append([]byte{}, valid...), 0), ErrCorrupt},
		{"more values than bytes", encodeCounts(1<<40, 1, 1), ErrCorrupt},
		{"count 0", encodeCounts(1, 1, 0), ErrCorrupt},
		{"count over MaxCount", encodeCounts(1, 1, MaxCount+1), ErrCorrupt},
		{"counts sum over MaxCount", encodeCounts(2, 1, MaxCount, 0, 1), ErrCorrupt},
		{"first value over 2^53", encodeCounts(1, MaxExactInt+1, 1), ErrCorrupt},
		{"first value under -2^53", encodeCounts(1, -MaxExactInt-1, 1), ErrCorrupt},
		{"gap past 2^53", encodeCounts(2, MaxExactInt-1, 1, 1, 1), ErrCorrupt},
		{"gap overflows", encodeCounts(2, 0, 1, math.MaxUint64, 1), ErrCorrupt},
		{"varint not shortest", []byte{kindCounts, version1, 0x81, 0x00, 2, 1}, ErrCorrupt},
		{"truncated pair", encodeCounts(2, 1, 1, 0), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := countsOf(t, 7, 8, 8)
			before := must(c.MarshalBinary())
			err := c.UnmarshalBinary(tt.b)
			require.Error(t, err)
			assert.ErrorIs(t, err, tt.wantErr)
			assert.Equal(t, before, must(c.MarshalBinary()), "a failed decode leaves c unchanged")
			assert.Equal(t, uint64(3), c.Count())
		})
	}
	t.Run("every truncation", func(t *testing.T) {
		b := must(countsOf(t, -300, 1, 1, 2, 1<<40).MarshalBinary())
		var c Counts
		require.NoError(t, c.UnmarshalBinary(b))
		for i := range len(b) {
			assert.ErrorIs(t, c.UnmarshalBinary(b[:i]), ErrCorrupt, "%d of %d bytes", i, len(b))
		}
	})
	t.Run("edge values are valid", func(t *testing.T) {
		var c Counts
		require.NoError(t, c.UnmarshalBinary(encodeCounts(2, MaxExactInt-1, 1, 0, 1)))
		assert.Equal(t, float64(MaxExactInt), c.Quantile(1))
		require.NoError(t, c.UnmarshalBinary(encodeCounts(1, 1, MaxCount)))
		assert.Equal(t, uint64(MaxCount), c.Count())
	})
}
