package digest

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func benchValues(name string, n int) []float64 {
	for _, ds := range datasets {
		if ds.name == name {
			return ds.gen(rand.New(rand.NewPCG(1, 1)), n)
		}
	}
	panic("no dataset " + name)
}

func BenchmarkAdd(b *testing.B) {
	for _, v := range []struct {
		data        string
		compression float64
	}{
		{"uniform", 100},
		{"uniform", 500},
		{"uniform", DefaultCompression},
		{"uniform", 2000},
		{"totals", DefaultCompression},
	} {
		xs := benchValues(v.data, 1<<20)
		b.Run(fmt.Sprintf("TDigest/%s/c=%v", v.data, v.compression), func(b *testing.B) {
			d, _ := NewTDigest(WithCompression(v.compression))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = d.Add(xs[i&(1<<20-1)])
				i++
			}
		})
	}
	totals := benchValues("totals", 1<<20)
	b.Run("Counts/totals", func(b *testing.B) {
		c := NewCounts()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			_ = c.Add(totals[i&(1<<20-1)])
			i++
		}
	})
	b.Run("Counts/Move", func(b *testing.B) {
		// A running total moves up by a score; the sketch follows it.
		c := NewCounts()
		users := make([]int64, 1<<20)
		for i, x := range totals {
			users[i] = int64(x)
			_ = c.AddInt(users[i])
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			u := &users[i&(1<<20-1)]
			_ = c.Move(*u, *u+int64(1+i%3))
			*u += int64(1 + i%3)
			i++
		}
	})
}

func BenchmarkMerge8(b *testing.B) {
	xs := benchValues("totals", 800_000)
	for _, decoded := range []bool{false, true} {
		name := "TDigest/built"
		if decoded {
			// As received from other processes: no pending values.
			name = "TDigest/decoded"
		}
		b.Run(name, func(b *testing.B) {
			parts := make([]*TDigest, 8)
			for p := range parts {
				parts[p] = newDigest(b, xs[p*100_000:(p+1)*100_000])
				if decoded {
					buf, _ := parts[p].MarshalBinary()
					parts[p] = &TDigest{}
					_ = parts[p].UnmarshalBinary(buf)
				}
			}
			m, _ := NewTDigest()
			b.ReportAllocs()
			for b.Loop() {
				m.Reset()
				for _, p := range parts {
					_ = m.Merge(p)
				}
			}
		})
	}
	b.Run("Counts", func(b *testing.B) {
		parts := make([]*Counts, 8)
		for p := range parts {
			parts[p] = NewCounts()
			for _, x := range xs[p*100_000 : (p+1)*100_000] {
				_ = parts[p].Add(x)
			}
		}
		m := NewCounts()
		b.ReportAllocs()
		for b.Loop() {
			m.Reset()
			for _, p := range parts {
				_ = m.Merge(p)
			}
		}
	})
}

// million returns a Counts of a million users' totals, and the totals.
// It reports the number of distinct totals when the benchmark ends.
func million(b *testing.B) (*Counts, []int64) {
	c := NewCounts()
	xs := benchValues("totals", 1_000_000)
	users := make([]int64, len(xs))
	for i, x := range xs {
		users[i] = int64(x)
		_ = c.AddInt(users[i])
	}
	c.Quantile(0.5)
	b.Cleanup(func() { b.ReportMetric(float64(c.Distinct()), "distinct") })
	return c, users
}

func BenchmarkQuantile(b *testing.B) {
	b.Run("TDigest", func(b *testing.B) {
		d := newDigest(b, benchValues("uniform", 1_000_000))
		d.Quantile(0.5)
		b.ReportAllocs()
		for b.Loop() {
			d.Quantile(0.95)
		}
	})
	b.Run("TDigest/after-Add", func(b *testing.B) {
		// One new value since the last query: a compaction each time.
		d := newDigest(b, benchValues("uniform", 1_000_000))
		b.ReportAllocs()
		for b.Loop() {
			_ = d.Add(0.5)
			d.Quantile(0.95)
		}
	})
	b.Run("Counts/1M-users", func(b *testing.B) {
		c, _ := million(b)
		b.ReportAllocs()
		for b.Loop() {
			c.Quantile(0.95)
		}
	})
	b.Run("Counts/1M-users/after-1000-moves", func(b *testing.B) {
		// What a batch does: some totals rise, then one query. Includes
		// the 1000 moves (see BenchmarkAdd/Counts/Move for their share).
		c, users := million(b)
		r := rand.New(rand.NewPCG(2, 2))
		b.ReportAllocs()
		for b.Loop() {
			for range 1000 {
				u := &users[r.IntN(len(users))]
				to := *u + int64(1+r.IntN(3))
				_ = c.Move(*u, to)
				*u = to
			}
			c.Quantile(0.95)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	b.Run("TDigest", func(b *testing.B) {
		d := newDigest(b, benchValues("uniform", 100_000))
		buf, _ := d.MarshalBinary()
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = d.AppendBinary(buf[:0])
		}
		b.ReportMetric(float64(len(buf)), "bytes")
	})
	b.Run("Counts/1M-users", func(b *testing.B) {
		c, _ := million(b)
		buf, _ := c.MarshalBinary()
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = c.AppendBinary(buf[:0])
		}
		b.ReportMetric(float64(len(buf)), "bytes")
	})
}

func BenchmarkDecode(b *testing.B) {
	b.Run("TDigest", func(b *testing.B) {
		buf, _ := newDigest(b, benchValues("uniform", 100_000)).MarshalBinary()
		var d TDigest
		b.ReportAllocs()
		for b.Loop() {
			if err := d.UnmarshalBinary(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Counts/1M-users", func(b *testing.B) {
		c, _ := million(b)
		buf, _ := c.MarshalBinary()
		var d Counts
		b.ReportAllocs()
		for b.Loop() {
			if err := d.UnmarshalBinary(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
