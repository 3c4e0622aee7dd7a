package digest

import (
	"errors"
	"math"
	"testing"
)

// checkDecodeErr fails unless err is one of the documented decode errors.
func checkDecodeErr(t *testing.T, err error) {
	if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
		t.Fatalf("decode error wraps neither ErrCorrupt nor ErrVersion: %v", err)
	}
}

// checkQuantiles fails unless s answers every q with a number in [lo, hi]
// that does not decrease with q.
func checkQuantiles(t *testing.T, s interface{ Quantile(float64) float64 }, lo, hi float64) {
	prev := math.Inf(-1)
	for _, q := range []float64{0, 1e-9, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1 - 1e-9, 1} {
		v := s.Quantile(q)
		if math.IsNaN(v) || v < lo || v > hi || v < prev {
			t.Fatalf("Quantile(%v) = %v after %v, want a non-decreasing value in [%v, %v]", q, v, prev, lo, hi)
		}
		prev = v
	}
}

func FuzzTDigestUnmarshal(f *testing.F) {
	for _, xs := range [][]float64{
		nil,
		{1},
		{1, 2, 3, 3, 3},
		{-1.5, 0, 2.25, 1e10, -1e-10},
		seqFloats(5000),
	} {
		d, _ := NewTDigest(WithCompression(20))
		for _, x := range xs {
			_ = d.Add(x)
		}
		b, _ := d.MarshalBinary()
		f.Add(b)
	}
	f.Add(encodeTDigest(50, 0, 3, 1, 5, [][2]float64{{1, 1}, {2, 1}, {5, 1}}))
	f.Add([]byte{})
	f.Add([]byte("T\x01garbage"))
	f.Add([]byte{kindTDigest, 2, 0, 0})
	f.Add(encodeTDigest(100, 1, 1<<40, -1, 1, [][2]float64{{0, 1 << 40}}))

	f.Fuzz(func(t *testing.T, b []byte) {
		var d TDigest
		if err := d.UnmarshalBinary(b); err != nil {
			checkDecodeErr(t, err)
			return
		}
		// Encodings are canonical: what decodes re-encodes to itself.
		again, err := d.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(b) {
			t.Fatalf("re-encoded differently:\n in  %x\n out %x", b, again)
		}
		if d.Count() == 0 {
			return
		}
		checkQuantiles(t, &d, d.Min(), d.Max())
		// The decoded digest keeps working: merge and add.
		m, _ := NewTDigest(WithCompression(20))
		if err := m.Merge(&d); err != nil {
			t.Fatal(err)
		}
		if m.Count() != d.Count() || m.Min() != d.Min() || m.Max() != d.Max() {
			t.Fatalf("merged %d [%v, %v], want %d [%v, %v]", m.Count(), m.Min(), m.Max(), d.Count(), d.Min(), d.Max())
		}
		checkQuantiles(t, m, d.Min(), d.Max())
		if d.Count() < MaxCount {
			if err := d.Add(d.Min()); err != nil {
				t.Fatal(err)
			}
			checkQuantiles(t, &d, d.Min(), d.Max())
		}
	})
}

func FuzzCountsUnmarshal(f *testing.F) {
	for _, vs := range [][]int64{
		nil,
		{0},
		{1, 2, 2, 3},
		{-MaxExactInt, -1, 0, 40, 43, MaxExactInt},
		seq(1000, 3000),
	} {
		c := NewCounts()
		for _, v := range vs {
			_ = c.AddInt(v)
		}
		b, _ := c.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte("C\x01garbage"))
	f.Add([]byte{kindCounts, 3, 0})
	f.Add(encodeCounts(2, MaxExactInt-1, 1, 0, 1))
	f.Add(encodeCounts(1<<40, 1, 1))

	f.Fuzz(func(t *testing.T, b []byte) {
		var c Counts
		if err := c.UnmarshalBinary(b); err != nil {
			checkDecodeErr(t, err)
			return
		}
		again, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != string(b) {
			t.Fatalf("re-encoded differently:\n in  %x\n out %x", b, again)
		}
		if c.Count() == 0 {
			return
		}
		lo, hi := c.Quantile(0), c.Quantile(1)
		checkQuantiles(t, &c, lo, hi)
		m := NewCounts()
		if err := m.Merge(&c); err != nil {
			t.Fatal(err)
		}
		if merged, _ := m.MarshalBinary(); string(merged) != string(b) {
			t.Fatalf("merged into empty encodes differently:\n in  %x\n out %x", b, merged)
		}
		// Moving a value away and back restores the encoding.
		if err := c.Move(int64(lo), int64(hi)); err != nil {
			t.Fatal(err)
		}
		if err := c.Move(int64(hi), int64(lo)); err != nil {
			t.Fatal(err)
		}
		if again, _ := c.MarshalBinary(); string(again) != string(b) {
			t.Fatalf("move and back encodes differently:\n in  %x\n out %x", b, again)
		}
	})
}

func seqFloats(n int) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = float64(i) * 1.5
	}
	return xs
}
