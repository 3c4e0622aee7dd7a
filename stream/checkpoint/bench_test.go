package checkpoint_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"

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
