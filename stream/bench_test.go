package stream_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/stream"
)

// rounds is a source that yields round after round of the same records,
// each round released by a token, so a benchmark can time a running
// pipeline in its steady state.
type rounds struct {
	recs []stream.Record[int64]
	go_  chan struct{}
	left int
	pos  int
}

func (r *rounds) Poll(ctx context.Context, buf []stream.Record[int64]) (int, error) {
	if r.left == 0 {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-r.go_:
			r.left = len(r.recs)
		}
	}
	n := copy(buf[:min(len(buf), r.left)], r.recs[r.pos:])
	r.pos = (r.pos + n) % len(r.recs)
	r.left -= n
	return n, nil
}

// BenchmarkPipeline measures the engine's cost per record of Map ->
// ReduceByKey -> UpdateStateByKey over 1M records and 100k keys, in
// batches of 100k, with the state warmed up. Keys are either spread evenly
// (every batch touches every key: each lookup misses the CPU caches, the
// worst case) or skewed (Zipf, as user activity is). keyed-observed adds
// an observer (Observe) that keeps a sum per partition; keyed-grouped
// leaves out the ReduceByKey, so that UpdateStateByKey groups the values
// itself (as the popular-users pipeline does).
func BenchmarkPipeline(b *testing.B) {
	const records, keys, batch = 1_000_000, 100_000, 100_000
	for _, v := range []struct {
		name                             string
		keyed, skewed, observed, grouped bool
	}{
		{"keyed", true, false, false, false},
		{"shuffled", false, false, false, false},
		{"keyed-zipf", true, true, false, false},
		{"keyed-observed", true, false, true, false},
		{"keyed-grouped", true, false, false, true},
	} {
		keyed := v.keyed
		b.Run(v.name, func(b *testing.B) {
			src := &rounds{go_: make(chan struct{})}
			parts := runtime.GOMAXPROCS(0)
			zipf := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.1, 10, keys-1)
			for i := range records {
				k := int64(i*7919) % keys
				if v.skewed {
					k = int64(zipf.Uint64())
				}
				src.recs = append(src.recs, stream.Record[int64]{Value: k, Origin: stream.Origin{Source: "b", Partition: int32(k % int64(parts)), Offset: int64(i)}})
			}
			p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(batch))
			pairs := stream.Map(stream.From(p, src), func(k int64) stream.Pair[int64, int64] { return stream.KV(k, int64(1)) })
			if keyed {
				pairs = stream.Keyed(pairs)
			}
			var opts []stream.StateOption
			if v.observed {
				opts = append(opts, stream.Observe(func(int32) stream.StateObserver[int64, int64] { return &sumObserver{} }))
			}
			if !v.grouped {
				pairs = stream.ReduceByKey(pairs, func(a, b int64) int64 { return a + b })
			}
			totals := stream.UpdateStateByKey(pairs,
				func(_ int64, vs []int64, s int64, _ bool) (int64, bool) {
					for _, v := range vs {
						s += v
					}
					return s, true
				}, opts...)
			var done atomic.Int64
			roundDone := make(chan struct{})
			stream.ForEachBatch(totals, func(_ context.Context, bt *stream.Batch[stream.Pair[int64, int64]]) error {
				if done.Add(int64(bt.Info.Records))%records == 0 {
					roundDone <- struct{}{}
				}
				return nil
			})
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error)
			go func() { errc <- p.Run(ctx) }()
			round := func() {
				src.go_ <- struct{}{}
				<-roundDone
			}
			round() // warm up: state and buffers at their steady size
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				round()
				n++
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*records), "ns/record")
			cancel()
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// sumObserver keeps the sum of a partition's states.
type sumObserver struct{ sum int64 }

func (o *sumObserver) Changed(_, old int64, hadOld bool, cur int64, hasCur bool) {
	if hadOld {
		o.sum -= old
	}
	if hasCur {
		o.sum += cur
	}
}
