package main

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/score"
)

// BenchmarkEncode times the encoders of the Kafka sinks, per record: a
// popular user's value and its batch's key, a batch's threshold, and a
// produced event. sink's BenchmarkKafkaWrite times the sending.
func BenchmarkEncode(b *testing.B) {
	t := total{Key: 123456, Value: 4321}
	c := cut{Batch: 42, Time: time.Unix(1_700_000_000, 0), Quantile: 0.95, Threshold: 4200, Users: 100_000}
	buf := make([]byte, 0, 64)
	var n int

	b.Run("popular/value", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = appendPair(buf[:0], t)
		}
	})
	b.Run("popular/key", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			n += len(batchKey(c.Time))
		}
	})
	b.Run("threshold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = appendThreshold(buf[:0], c)
		}
	})
	b.Run("event", func(b *testing.B) {
		e := score.Event{UserID: 123456, Activity: "profile.picture.like"}
		b.ReportAllocs()
		for b.Loop() {
			k, v, _ := encodeEvent(e)
			n += len(k) + len(v)
		}
	})
	_ = n
}
