package changelog_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink/changelog"
	"github.com/sluicehq/sluice/stream"
)

// BenchmarkRestore restores a state of many keys, written in checkpoints
// of 100,000 keys, from an in-process broker: the figure includes the
// broker's work, as a real broker's would be on another machine.
func BenchmarkRestore(b *testing.B) {
	for _, bc := range []struct {
		keys       int
		partitions int32
	}{
		{keys: 1_000_000, partitions: 4},
		{keys: 1_000_000, partitions: 1},
	} {
		b.Run(fmt.Sprintf("%dk keys/%d partitions", bc.keys/1000, bc.partitions), func(b *testing.B) {
			broker, err := kafkatest.Start(kafkatest.Config{})
			require.NoError(b, err)
			defer broker.Close()
			fill(b, broker, bc.keys, bc.partitions)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				k, err := changelog.NewKafka(changelog.Config{Brokers: broker.Addrs(), Topic: "bench"})
				require.NoError(b, err)
				n := 0
				_, err = k.Restore(context.Background(), nil, func(stream.Entry) error {
					n++
					return nil
				})
				require.NoError(b, err)
				require.Equal(b, bc.keys, n)
				require.NoError(b, k.Close())
			}
			b.ReportMetric(float64(bc.keys)*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
		})
	}
}

// fill writes keys keys (8 bytes, with a varint value) over partitions.
func fill(b *testing.B, broker *kafkatest.Broker, keys int, partitions int32) {
	b.Helper()
	k, err := changelog.NewKafka(changelog.Config{Brokers: broker.Addrs(), Topic: "bench", Partitions: partitions})
	require.NoError(b, err)
	defer k.Close()
	ctx := context.Background()
	_, err = k.Restore(ctx, nil, func(stream.Entry) error { return nil })
	require.NoError(b, err)
	const chunk = 100_000
	for start := 0; start < keys; start += chunk {
		c := &stream.Changes{Batch: stream.Info{ID: int64(start/chunk + 1)}}
		for i := start; i < min(start+chunk, keys); i++ {
			c.Entries = append(c.Entries, stream.Entry{
				Op: "totals", Partition: int32(i) % partitions,
				Key:   binary.BigEndian.AppendUint64(nil, uint64(i)),
				Value: binary.AppendVarint(nil, int64(i%1000)),
			})
		}
		c.Offsets = []stream.Offset{{Source: "messages", Partition: 0, Next: int64(start + chunk)}}
		require.NoError(b, k.Checkpoint(ctx, c))
	}
}
