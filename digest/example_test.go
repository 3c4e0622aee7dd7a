package digest_test

import (
	"errors"
	"fmt"
	"sync"

	"github.com/sluicehq/sluice/digest"
)

// Each partition fills its own digest in its own goroutine; the digests
// are merged, and the merged one gives the threshold.
func Example() {
	partitions := [][]float64{
		{3, 12, 5, 1, 40},
		{7, 2, 9, 11, 6},
		{4, 8, 10, 30, 13},
		{14, 15, 16, 17, 18},
	}
	parts := make([]*digest.TDigest, len(partitions))
	var wg sync.WaitGroup
	for i, totals := range partitions {
		wg.Go(func() {
			d, err := digest.NewTDigest()
			if err != nil {
				panic(err)
			}
			for _, x := range totals {
				if err := d.Add(x); err != nil {
					panic(err)
				}
			}
			parts[i] = d
		})
	}
	wg.Wait()

	total, err := digest.NewTDigest()
	if err != nil {
		panic(err)
	}
	for _, p := range parts {
		if err := total.Merge(p); err != nil { // p is left as it was
			panic(err)
		}
	}
	threshold := total.Quantile(0.9)
	fmt.Println("values:", total.Count(), "0.9-quantile:", threshold)
	for _, totals := range partitions {
		for _, x := range totals {
			if x > threshold {
				fmt.Println("popular:", x)
			}
		}
	}
	// Output:
	// values: 20 0.9-quantile: 18
	// popular: 40
	// popular: 30
}

// A running total that changes moves in the sketch; nothing is rebuilt.
func ExampleCounts_Move() {
	users := map[string]int64{"ann": 40, "bob": 12, "cid": 12, "dan": 7}
	c := digest.NewCounts()
	for _, total := range users {
		if err := c.AddInt(total); err != nil {
			panic(err)
		}
	}
	fmt.Println("median:", c.Quantile(0.5))

	// A batch raises bob's total from 12 to 45.
	if err := c.Move(users["bob"], 45); err != nil {
		panic(err)
	}
	users["bob"] = 45
	fmt.Println("median:", c.Quantile(0.5), "max:", c.Quantile(1))
	// Output:
	// median: 12
	// median: 12 max: 45
}

// Partial sketches travel between processes as bytes.
func ExampleTDigest_MarshalBinary() {
	d, err := digest.NewTDigest()
	if err != nil {
		panic(err)
	}
	for i := 1; i <= 1000; i++ {
		if err := d.Add(float64(i)); err != nil {
			panic(err)
		}
	}
	b, err := d.MarshalBinary()
	if err != nil {
		panic(err)
	}

	var received digest.TDigest
	if err := received.UnmarshalBinary(b); err != nil {
		panic(err)
	}
	fmt.Println(received.Count(), received.Quantile(0), received.Quantile(0.95), received.Quantile(1))
	// Output: 1000 1 950 1000
}

// Ties: nobody is strictly above a threshold that the top users share.
func ExampleCounts_Quantile() {
	c := digest.NewCounts()
	for i := range 100 {
		score := int64(10)
		if i >= 90 {
			score = 20 // the top 10% share one score
		}
		if err := c.AddInt(score); err != nil {
			panic(err)
		}
	}
	fmt.Println(c.Quantile(0.5), c.Quantile(0.9), c.Quantile(0.95))
	// Output: 10 10 20
}

// threshold fills one sketch per partition, merges them into a new one and
// returns its q-quantile: the same code for either kind of sketch.
func threshold[S digest.Sketch[S]](newSketch func() S, partitions [][]float64, q float64) (float64, error) {
	total := newSketch()
	for _, values := range partitions {
		part := newSketch()
		for _, x := range values {
			if err := part.Add(x); err != nil {
				return 0, err
			}
		}
		if err := total.Merge(part); err != nil {
			return 0, err
		}
	}
	return total.Quantile(q), nil
}

func ExampleSketch() {
	partitions := [][]float64{{1, 2, 3, 40}, {5, 6, 7, 8}, {9, 10, 11, 12}}
	exact, err := threshold(digest.NewCounts, partitions, 0.75)
	if err != nil {
		panic(err)
	}
	estimate, err := threshold(func() *digest.TDigest {
		d, _ := digest.NewTDigest() // the default options are valid
		return d
	}, partitions, 0.75)
	if err != nil {
		panic(err)
	}
	fmt.Println(exact, estimate)

	// Counts takes integers only.
	_, err = threshold(digest.NewCounts, [][]float64{{1.5}}, 0.75)
	fmt.Println(errors.Is(err, digest.ErrInvalidValue))
	// Output:
	// 10 10
	// true
}
