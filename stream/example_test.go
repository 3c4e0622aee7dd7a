package stream_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/digest"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// Word counts per batch and running totals across batches.
func Example() {
	lines := []string{"a b a", "c a", "b b", "a"}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2))
	in := stream.From(p, source.NewSlice("lines", lines, 2))
	words := stream.FlatMap(in, func(dst []stream.Pair[string, int], line string) []stream.Pair[string, int] {
		for _, w := range strings.Fields(line) {
			dst = append(dst, stream.KV(w, 1))
		}
		return dst
	})
	counts := stream.ReduceByKey(words, func(a, b int) int { return a + b })
	totals := stream.UpdateStateByKey(counts, func(_ string, vs []int, total int, _ bool) (int, bool) {
		for _, v := range vs {
			total += v
		}
		return total, true
	})
	stream.ForEachBatch(totals, func(_ context.Context, b *stream.Batch[stream.Pair[string, int]]) error {
		var out []string
		for kv := range b.All() {
			out = append(out, kv.Key+"="+strconv.Itoa(kv.Value))
		}
		slices.Sort(out)
		fmt.Println(b.Info.ID, out)
		return nil
	})
	if err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// 1 [a=3 b=1 c=1]
	// 2 [a=4 b=3 c=1]
}

// Errors name the record they come from.
func ExampleMapErr() {
	p := stream.NewPipeline()
	nums := stream.MapErr(stream.From(p, source.NewSlice("input.txt", []string{"1", "2", "three"}, 1)), strconv.Atoi)
	stream.ForEachBatch(nums, func(context.Context, *stream.Batch[int]) error { return nil })
	fmt.Println(p.Run(context.Background()))
	// Output:
	// stream: batch 1: mapErr#2: partition 0: record input.txt/0@2: strconv.Atoi: parsing "three": invalid syntax
}

// Bad values go to a dead-letter output while the good ones go on.
func ExampleTryMap() {
	p := stream.NewPipeline()
	nums, bad := stream.TryMap(stream.From(p, source.NewSlice("in", []string{"1", "x", "3"}, 1)), strconv.Atoi)
	stream.ForEachBatch(stream.Reduce(nums, func(a, b int) int { return a + b }), func(_ context.Context, b *stream.Batch[int]) error {
		fmt.Println("sum", slices.Collect(b.All()))
		return nil
	})
	stream.ForEachBatch(bad, func(_ context.Context, b *stream.Batch[stream.Failure[string]]) error {
		for f := range b.All() {
			fmt.Printf("dead letter %q from %s\n", f.Value, f.Origin)
		}
		return nil
	})
	if err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// sum [4]
	// dead letter "x" from in/0@1
}

// A window of 3 batches that slides by 1.
func ExampleWindow() {
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(1))
	w := stream.Window(stream.From(p, source.NewSlice("n", []int{1, 2, 3, 4, 5}, 1)), 3, 1)
	stream.ForEachBatch(w, func(_ context.Context, b *stream.Batch[int]) error {
		fmt.Println(slices.Collect(b.All()))
		return nil
	})
	if err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// [1]
	// [1 2]
	// [1 2 3]
	// [2 3 4]
	// [3 4 5]
}

// histogram counts the keys of one partition by their state. The engine
// calls it from one goroutine at a time, so it needs no lock.
type histogram map[int]int

func (h histogram) Changed(_ string, old int, hadOld bool, cur int, hasCur bool) {
	if hadOld {
		if h[old]--; h[old] == 0 {
			delete(h, old)
		}
	}
	if hasCur {
		h[cur]++
	}
}

// A histogram of the running totals, kept per partition as totals change
// instead of rebuilt from every key each batch; a key whose total reaches
// 3 is dropped.
func ExampleObserve() {
	words := []stream.Pair[string, int]{
		stream.KV("a", 1), stream.KV("b", 1),
		stream.KV("a", 1), stream.KV("c", 1),
		stream.KV("a", 1), stream.KV("b", 1),
	}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(2))
	hists := map[int32]histogram{} // written on the run loop only
	in := stream.Keyed(stream.From(p, source.NewSlice("words", words, 1)))
	totals := stream.UpdateStateByKey(in,
		func(_ string, vs []int, total int, _ bool) (int, bool) {
			for _, v := range vs {
				total += v
			}
			return total, total < 3
		},
		stream.Observe(func(partition int32) stream.StateObserver[string, int] {
			h := histogram{}
			hists[partition] = h
			return h
		}))
	stream.ForEachBatch(totals, func(_ context.Context, b *stream.Batch[stream.Pair[string, int]]) error {
		for _, part := range b.Partitions {
			fmt.Println(b.Info.ID, "keys by total:", hists[part.ID])
		}
		return nil
	})
	if err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// 1 keys by total: map[1:2]
	// 2 keys by total: map[1:2 2:1]
	// 3 keys by total: map[1:1 2:1]
}

// The popular users: a running total per user; every batch, a t-digest of
// the totals of each partition, built in parallel, the digests merged,
// and the 0.95 quantile of all the totals handed to every partition,
// which keeps its users strictly above it: in batch 2, user 1020's 20
// points are the threshold, not above it. examples/popularusers runs the
// same steps on Kafka.
func Example_popularUsers() {
	type total = stream.Pair[int64, int64] // user ID and points
	// Batch 1: users 1001 to 1020 score 1 to 20 points. Batch 2: user 1003
	// scores 30 more.
	var scores []total
	for user := int64(1001); user <= 1020; user++ {
		scores = append(scores, stream.KV(user, user-1000))
	}
	scores = append(scores, stream.KV(int64(1003), int64(30)))
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(20))
	in := stream.From(p, source.NewSlice("scores", scores, 2))
	totals := stream.UpdateStateByKey(in, func(_ int64, points []int64, sum int64, _ bool) (int64, bool) {
		for _, v := range points {
			sum += v
		}
		return sum, true
	})

	sketches := stream.MapPartitions(totals, func(p *stream.Partition[total]) ([]*digest.TDigest, error) {
		d, err := digest.NewTDigest()
		if err != nil {
			return nil, err
		}
		for _, t := range p.Values {
			if err := d.Add(float64(t.Value)); err != nil {
				return nil, err
			}
		}
		return []*digest.TDigest{d}, nil
	})
	merged := stream.Reduce(sketches, func(a, b *digest.TDigest) *digest.TDigest {
		// a is this batch's own digest: merging into it is safe.
		if err := a.Merge(b); err != nil { // past digest.MaxCount values
			panic(err) // Run returns it as a *stream.PanicError
		}
		return a
	})
	threshold := stream.Map(merged, func(d *digest.TDigest) float64 { return d.Quantile(0.95) })
	popular := stream.Broadcast(totals, threshold, func(p *stream.Partition[total], t float64, ok bool) ([]total, error) {
		var keep []total
		for _, u := range p.Values {
			if ok && float64(u.Value) > t {
				keep = append(keep, u)
			}
		}
		return keep, nil
	})

	stream.ForEachBatch(threshold, func(_ context.Context, b *stream.Batch[float64]) error {
		for t := range b.All() {
			fmt.Printf("batch %d: threshold %g\n", b.Info.ID, t)
		}
		return nil
	})
	stream.ForEachBatch(popular, func(_ context.Context, b *stream.Batch[total]) error {
		for u := range b.All() {
			fmt.Printf("  popular: user %d, %d points\n", u.Key, u.Value)
		}
		return nil
	})
	if err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// batch 1: threshold 19
	//   popular: user 1020, 20 points
	// batch 2: threshold 20
	//   popular: user 1003, 33 points
}
