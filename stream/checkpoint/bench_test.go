package checkpoint_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/checkpoint"
)

// BenchmarkRestore restores a state of 1,000,000 keys over 4 partitions,
// checkpointed in batches of 100,000 changed keys (a snapshot and the
// deltas after it, as the directory keeps them): what a restart reads.
func BenchmarkRestore(b *testing.B) {
	const keys, batch = 1_000_000, 100_000
	dir := b.TempDir()
	d, err := checkpoint.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := d.Restore(context.Background(), nil, func(stream.Entry) error { return nil }); err != nil {
		b.Fatal(err)
	}
	for start, id := 0, int64(1); start < keys; start, id = start+batch, id+1 {
		c := &stream.Changes{Batch: stream.Info{ID: id}, Offsets: []stream.Offset{{Source: "in", Partition: 0, Next: id}}}
		for k := start; k < start+batch; k++ {
			c.Entries = append(c.Entries, stream.Entry{Op: "totals", Partition: int32(k % 4),
				Key: binary.AppendVarint(nil, int64(k)), Value: binary.AppendVarint(nil, int64(k%1000))})
		}
		if err := d.Checkpoint(context.Background(), c); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		d, err := checkpoint.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		if _, err := d.Restore(context.Background(), nil, func(stream.Entry) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != keys {
			b.Fatal(fmt.Errorf("restored %d keys of %d", n, keys))
		}
		d.Close()
	}
	b.ReportMetric(float64(keys)*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkCheckpointSmall writes 5000 checkpoints of a state of 10 keys
// (deltas of about 190 bytes) to a new directory, as a pipeline with a
// small state checkpointing every second writes them in an hour and a
// half. A checkpoint should cost the same at the end as at the start:
// first and last are the milliseconds of the first and the last 1000.
func BenchmarkCheckpointSmall(b *testing.B) {
	const checkpoints, keys, span = 5000, 10, 1000
	b.ReportAllocs()
	var first, last time.Duration
	for b.Loop() {
		d, err := checkpoint.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for id := int64(1); id <= checkpoints; id++ {
			switch id {
			case span + 1:
				first = time.Since(start)
			case checkpoints - span + 1:
				start = time.Now()
			}
			c := &stream.Changes{Batch: stream.Info{ID: id}, Offsets: []stream.Offset{{Source: "messages", Partition: 0, Next: id * 100}}}
			for k := range int64(keys) {
				c.Entries = append(c.Entries, stream.Entry{Op: "totals", Partition: int32(k % 4),
					Key: binary.AppendVarint(nil, 1000+k), Value: binary.AppendVarint(nil, id*k)})
			}
			if err := d.Checkpoint(context.Background(), c); err != nil {
				b.Fatal(err)
			}
		}
		last = time.Since(start)
		if err := d.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*checkpoints), "ns/checkpoint")
	b.ReportMetric(float64(first.Milliseconds()), "first-ms")
	b.ReportMetric(float64(last.Milliseconds()), "last-ms")
	b.ReportMetric(float64(last)/float64(first), "last/first")
}
