package source_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest/kcat"
	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// TestKafkaKcatInterop has kcat produce the input, with keys and headers
// and its own partitioner, and read the output back.
func TestKafkaKcatInterop(t *testing.T) {
	kc := kcat.Path(t)
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"messages": 3, "popular_users": 2})
	addr := b.Addrs()[0]

	const n = 300
	var in strings.Builder
	for i := range n {
		fmt.Fprintf(&in, "%d:%d\n", 1000+i, i)
	}
	kcat.Run(t, kc, in.String(), "-P", "-b", addr, "-t", "messages", "-K", ":", "-H", "producer=kcat")

	src := newSource(t, b, "messages", "interop")
	out, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "popular_users"},
		func(v [2]int) ([]byte, []byte, error) {
			return []byte("popular_1700000000"), fmt.Appendf(nil, "[%d, %d]", v[0], v[1]), nil
		})
	require.NoError(t, err)
	defer out.Close()

	p := stream.NewPipeline(stream.Interval(50 * time.Millisecond))
	pairs := stream.MapErr(stream.From(p, src), func(m source.Message) ([2]int, error) {
		if len(m.Headers) != 1 || m.Headers[0].Key != "producer" || string(m.Headers[0].Value) != "kcat" {
			return [2]int{}, fmt.Errorf("headers %q", m.Headers)
		}
		user, err := strconv.Atoi(string(m.Key))
		if err != nil {
			return [2]int{}, err
		}
		score, err := strconv.Atoi(string(m.Value))
		return [2]int{user, score}, err
	})
	stream.To(pairs, out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitCommitted(t, b, "interop", "messages")
	cancel()
	require.NoError(t, stopped(t, done))

	got := strings.Split(strings.TrimSpace(kcat.Run(t, kc, "",
		"-C", "-b", addr, "-t", "popular_users", "-o", "beginning", "-e", "-q", "-f", "%k %s\n")), "\n")
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprintf("popular_1700000000 [%d, %d]", 1000+i, i)
	}
	assert.ElementsMatch(t, want, got)
}

// TestKafkaSinkBatchesReadByKcat has kcat read what the Kafka sink writes
// with every compression codec, in record batches split at a small
// MaxMessageBytes, with headers, over several partitions.
func TestKafkaSinkBatchesReadByKcat(t *testing.T) {
	kc := kcat.Path(t)
	checkLeaks(t)
	codecs := []sarama.CompressionCodec{sarama.CompressionNone, sarama.CompressionGZIP, sarama.CompressionSnappy, sarama.CompressionLZ4, sarama.CompressionZSTD}
	topics := make(map[string]int32)
	for _, c := range codecs {
		topics["out-"+c.String()] = 3
	}
	b := startBroker(t, topics)
	const n = 500
	vals := make([]int, n)
	for i := range vals {
		vals[i] = i
	}
	for _, codec := range codecs {
		t.Run(codec.String(), func(t *testing.T) {
			topic := "out-" + codec.String()
			cfg := sarama.NewConfig()
			cfg.Producer.Compression = codec
			cfg.Producer.MaxMessageBytes = 2000
			out, err := sink.NewKafkaMessages(sink.KafkaConfig{Brokers: b.Addrs(), Topic: topic, Sarama: cfg},
				func(v int) (sink.Message, error) {
					return sink.Message{
						Key:     fmt.Appendf(nil, "user-%d", v%7),
						Value:   fmt.Appendf(nil, "[%d, %d]", v, 2*v),
						Headers: []sink.Header{{Key: "n", Value: strconv.AppendInt(nil, int64(v), 10)}},
					}, nil
				})
			require.NoError(t, err)
			defer out.Close()
			before := time.Now().Add(-time.Second).UnixMilli()
			require.NoError(t, out.Write(context.Background(), &stream.Batch[int]{Partitions: []stream.Partition[int]{{Values: vals}}}))
			after := time.Now().Add(time.Second).UnixMilli()

			lines := strings.Split(strings.TrimSpace(kcat.Run(t, kc, "",
				"-C", "-b", b.Addrs()[0], "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %k %s %h %T\n")), "\n")
			require.Len(t, lines, n)
			last := make(map[string]int) // by key: each key's values in order
			parts := make(map[string]string)
			for _, l := range lines {
				var part, key string
				var v, twice, h int
				var ts int64
				_, err := fmt.Sscanf(l, "%s %s [%d, %d] n=%d %d", &part, &key, &v, &twice, &h, &ts)
				require.NoError(t, err, l)
				assert.True(t, ts >= before && ts <= after, "%s: stamped when written, not %d", l, ts)
				assert.Equal(t, fmt.Sprintf("user-%d", v%7), key, l)
				assert.Equal(t, 2*v, twice, l)
				assert.Equal(t, v, h, l)
				if prev, seen := last[key]; seen {
					assert.Greater(t, v, prev, "%s: in the order written", key)
					assert.Equal(t, parts[key], part, "%s: in one partition", key)
				}
				last[key], parts[key] = v, part
			}
			assert.Len(t, last, 7)
		})
	}
}
