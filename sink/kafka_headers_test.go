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

func TestKafkaSinkHeaders(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"out": 1})
	k, err := sink.NewKafkaMessages(sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out"}, func(v int) (sink.Message, error) {
		m := sink.Message{Key: []byte("k" + strconv.Itoa(v)), Value: []byte(strconv.Itoa(v))}
		if v%2 == 0 {
			m.Headers = []sink.Header{{Key: "even", Value: []byte("yes")}, {Key: "half", Value: []byte(strconv.Itoa(v / 2))}}
		}
		return m, nil
	})
	require.NoError(t, err)
	defer func() { assert.NoError(t, k.Close()) }()
	require.NoError(t, k.Write(context.Background(), batch([]int{1, 2}, []int{4})))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := b.Records(ctx, "out")
	require.NoError(t, err)
	require.Len(t, recs, 3)
	got := map[string]map[string]string{}
	for _, r := range recs {
		assert.Equal(t, "k"+string(r.Value), string(r.Key))
		got[string(r.Value)] = r.Headers
	}
	assert.Equal(t, map[string]map[string]string{
		"1": nil,
		"2": {"even": "yes", "half": "1"},
		"4": {"even": "yes", "half": "2"},
	}, got)
}

func TestKafkaMessagesNeedsAnEncoder(t *testing.T) {
	_, err := sink.NewKafkaMessages[int](sink.KafkaConfig{Brokers: []string{"x:1"}, Topic: "out"}, nil)
	assert.EqualError(t, err, "kafka sink out: no encoder")
	_, err = sink.NewKafka[int](sink.KafkaConfig{Brokers: []string{"x:1"}, Topic: "out"}, nil)
	assert.EqualError(t, err, "kafka sink out: no encoder")
}

// A message's Timestamp is the record's; a message without one is stamped
// when it is sent. Every path of the sink: synchronous, Async, and in a
// transaction (through sarama's producer).
func TestKafkaSinkTimestamps(t *testing.T) {
	checkLeaks(t)
	base := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, mode := range []string{"sync", "async", "transaction"} {
		t.Run(mode, func(t *testing.T) {
			b := startBroker(t, map[string]int32{"out": 1})
			cfg := sink.KafkaConfig{Brokers: b.Addrs(), Topic: "out", Async: mode == "async"}
			if mode == "transaction" {
				tx, err := txn.New(txn.Config{Brokers: b.Addrs(), ID: "timestamps"})
				require.NoError(t, err)
				defer func() { assert.NoError(t, tx.Close()) }()
				require.NoError(t, tx.Begin(context.Background()))
				defer func() { assert.NoError(t, tx.Commit(context.Background())) }()
				cfg.Transaction = tx
			}
			k, err := sink.NewKafkaMessages(cfg, func(v int) (sink.Message, error) {
				m := sink.Message{Value: []byte(strconv.Itoa(v))}
				if v > 0 {
					m.Timestamp = base.Add(time.Duration(v) * time.Second)
				}
				return m, nil
			})
			require.NoError(t, err)
			defer func() { assert.NoError(t, k.Close()) }()
			before := time.Now().Truncate(time.Millisecond)
			require.NoError(t, k.Write(context.Background(), batch([]int{3, 1, 0, 2})))
			if mode != "transaction" {
				require.NoError(t, k.Flush(context.Background()))
			}
			after := time.Now()

			cons, err := sarama.NewConsumer(b.Addrs(), nil)
			require.NoError(t, err)
			defer cons.Close()
			pc, err := cons.ConsumePartition("out", 0, sarama.OffsetOldest)
			require.NoError(t, err)
			defer pc.Close()
			got := map[string]time.Time{}
			for m := range pc.Messages() {
				got[string(m.Value)] = m.Timestamp
				if len(got) == 4 {
					break
				}
			}
			for v := 1; v <= 3; v++ {
				assert.True(t, base.Add(time.Duration(v)*time.Second).Equal(got[strconv.Itoa(v)]), "message %d: %v", v, got[strconv.Itoa(v)])
			}
			assert.False(t, got["0"].Before(before) || got["0"].After(after), "stamped when sent: %v, sent in [%v, %v]", got["0"], before, after)
		})
	}
}
