package stream_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream"
)

// busy is a source that always has a record ready: each Poll returns one
// at once (after a short pause), whether ctx is done or not, as the Poll
// contract allows; io.EOF after limit records.
type busy struct {
	next, limit int64
	onPoll      func(next int64) // called before each Poll's record, if set
}

func (b *busy) Poll(_ context.Context, buf []stream.Record[int]) (int, error) {
	time.Sleep(time.Millisecond)
	if b.onPoll != nil {
		b.onPoll(b.next)
	}
	buf[0] = rec(int(b.next), 0, b.next)
	b.next++
	if b.next == b.limit {
		return 1, io.EOF
	}
	return 1, nil
}

// With no record limit, a batch is still cut when its interval is over,
// even when the source always has records ready.
func TestIntervalCutsBatchesOfABusySource(t *testing.T) {
	p := stream.NewPipeline(stream.Interval(20*time.Millisecond), stream.MaxRecords(0))
	c := collect(stream.From(p, &busy{limit: 400}))
	run(t, p)
	assert.Greater(t, len(c.all()), 3, "400 records at 1 ms or more each, cut every 20 ms")
}

// Cancelling Run cuts the batch being collected at once, even when the
// source always has records ready.
func TestCancelCutsTheBatchOfABusySource(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := stream.NewPipeline(stream.Interval(time.Hour), stream.MaxRecords(0))
	src := &busy{limit: 2000, onPoll: func(next int64) {
		if next == 20 {
			cancel()
		}
	}}
	c := collect(stream.From(p, src))
	require.NoError(t, p.Run(ctx))
	assert.Less(t, src.next, int64(2000), "the source was not read to its end")
	assert.Len(t, c.all(), 1)
}
