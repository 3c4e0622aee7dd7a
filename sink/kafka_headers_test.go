package sink_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/sink"
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
