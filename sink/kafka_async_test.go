package sink_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/sink/txn"
)

// With Async, Write hands messages on without waiting; Flush returns once
// all of them are on the broker.
func TestKafkaSinkAsyncFlushWaitsForEveryMessage(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 2})
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Async: true}, pairEncoder)
	require.NoError(t, err)
	defer func() { assert.NoError(t, k.Close()) }()

	ctx := context.Background()
	want := map[string]string{}
	for i := range 20 {
		vals := make([]int, 500)
		for j := range vals {
			vals[j] = 1 + i*500 + j
		}
		require.NoError(t, k.Write(ctx, batch(vals)))
		for _, v := range vals {
			key, value, _ := pairEncoder(v)
			want[string(value)] = string(key)
		}
	}
	require.NoError(t, k.Flush(ctx))
	hw := b.HighWatermarks("out")
	assert.Equal(t, int64(len(want)), hw[0]+hw[1], "every message stored when Flush returns")
	assert.Equal(t, want, readAll(t, b, "out"))
	require.NoError(t, k.Flush(ctx), "nothing left to flush")
}

// Messages not delivered fail the next Flush; the next Write or Flush
// sends them again.
func TestKafkaSinkAsyncDeliveryFailure(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, nil)
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "late", Sarama: quickToFail(), Async: true}, pairEncoder)
	require.NoError(t, err)
	defer k.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, k.Write(ctx, batch([]int{1, 2})), "handed on, not yet known to fail")
	err = k.Flush(ctx)
	require.Error(t, err)
	assert.ErrorContains(t, err, "kafka sink late: 2 messages not delivered")
	assert.ErrorIs(t, err, sarama.ErrUnknownTopicOrPartition)
	cancelled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	require.ErrorIs(t, k.Write(cancelled, batch([]int{4})), context.Canceled, "sends nothing")
	require.NoError(t, k.Write(ctx, batch([]int{3})), "sends the failed messages again, and its own")
	assert.ErrorContains(t, k.Flush(ctx), "kafka sink late: 3 messages not delivered", "all three fail again")

	require.NoError(t, b.CreateTopic("late", 1))
	require.Eventually(t, func() bool { return k.Flush(ctx) == nil }, 15*time.Second, 50*time.Millisecond,
		"Flush sends the failed messages again until they are delivered")
	assert.Equal(t, map[string]string{"[1,2]": "popular_1", "[2,4]": "popular_2", "[3,6]": "popular_0"}, readAll(t, b, "late"))
}

func TestKafkaSinkAsyncClose(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 1})
	k, err := sink.NewKafka(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Async: true}, pairEncoder)
	require.NoError(t, err)
	require.NoError(t, k.Write(context.Background(), batch([]int{1, 2, 3})))
	require.NoError(t, k.Close(), "Close delivers what was not flushed")
	assert.Len(t, readAll(t, b, "out"), 3)
	assert.ErrorIs(t, k.Flush(context.Background()), sink.ErrClosed)
	assert.ErrorIs(t, k.Write(context.Background(), batch([]int{4})), sink.ErrClosed)
}

func TestKafkaSinkAsyncNotInTransaction(t *testing.T) {
	_, err := sink.NewKafka(sink.KafkaConfig{Brokers: []string{"localhost:1"}, Topic: "out", Async: true, Transaction: new(txn.Producer)}, pairEncoder)
	assert.ErrorContains(t, err, "Async with a Transaction")
}

// An encoder may reuse its slices at its next call: the sink copies them,
// so that a message in flight after Write returned (Async), or kept to be
// sent again after a failure, carries its own bytes. Keys, values and
// header values alike.
func TestKafkaSinkAsyncCopiesTheEncodersBytes(t *testing.T) {
	t.Run("in flight", func(t *testing.T) {
		b := startBroker(t, map[string]int32{"out": 1})
		buf := make([]byte, 3)
		k, err := sink.NewKafkaMessages(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Async: true},
			func(v int) (sink.Message, error) {
				return sink.Message{Value: strconv.AppendInt(buf[:0], int64(v), 10)}, nil
			})
		require.NoError(t, err)
		defer k.Close()
		ctx := context.Background()
		require.NoError(t, k.Write(ctx, batch([]int{111})))
		copy(buf, "999") // the encoder's buffer, written again
		require.NoError(t, k.Flush(ctx))
		assert.Equal(t, map[int32][]string{0: {"111"}}, valuesInOrder(t, b, "out"))
	})
	t.Run("sent again", func(t *testing.T) {
		b := startBroker(t, nil) // "late" does not exist yet
		var scratch, key, hdr []byte
		k, err := sink.NewKafkaMessages(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "late", Sarama: quickToFail(), Async: true},
			func(v int) (sink.Message, error) {
				scratch = strconv.AppendInt(scratch[:0], int64(v), 10)
				key = append(append(key[:0], 'k'), scratch...)
				hdr = append(append(hdr[:0], 'h'), scratch...)
				return sink.Message{Key: key, Value: scratch, Headers: []sink.Header{{Key: "h", Value: hdr}}}, nil
			})
		require.NoError(t, err)
		defer k.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, k.Write(ctx, batch([]int{111})))
		require.Error(t, k.Flush(ctx), "the topic is missing: 111 not delivered")
		require.NoError(t, b.CreateTopic("late", 1))
		require.NoError(t, k.Write(ctx, batch([]int{222})), "sends 111 again, and 222")
		require.Eventually(t, func() bool { return k.Flush(ctx) == nil }, 15*time.Second, 50*time.Millisecond)

		recs, err := b.Records(ctx, "late")
		require.NoError(t, err)
		var got []string
		for _, r := range recs {
			got = append(got, string(r.Key)+"/"+string(r.Value)+"/"+r.Headers["h"])
		}
		assert.Equal(t, []string{"k111/111/h111", "k222/222/h222"}, got)
	})
}
