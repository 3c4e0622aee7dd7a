package source_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

func TestExpStall(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	addrs := c.ListenAddrs()
	produceEach(t, addrs, "in", 1, 0, 100, false)
	cfg := sarama.NewConfig()
	client, err := sarama.NewClient(addrs, cfg)
	require.NoError(t, err)
	coord, err := client.Coordinator("g")
	require.NoError(t, err)
	req := sarama.NewOffsetCommitRequest(cfg, "g")
	req.ConsumerGroupGeneration = -1
	req.AddBlock("in", 0, 50, 0, "")
	_, err = coord.CommitOffset(req)
	require.NoError(t, err)
	admin, err := sarama.NewClusterAdminFromClient(client)
	require.NoError(t, err)
	require.NoError(t, admin.DeleteRecords("in", map[int32]int64{0: 80}))
	admin.Close()
	client.Close()

	held, wake := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	n := 0
	c.ControlKey(kmsg.OffsetFetch.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		n++
		m := n
		mu.Unlock()
		if m < 2 {
			c.KeepControl()
			return nil, nil, false
		}
		if m == 2 {
			close(held)
			c.SleepControl(func() { <-wake })
		}
		return nil, nil, false
	})
	defer close(wake)
	src := sourceOn(t, addrs, "in", "g", testLog(t))
	p := stream.NewPipeline(stream.Interval(20 * time.Millisecond))
	stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[source.Message]) error { return nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-held
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	cancel()
	<-done
	t.Logf("Run returned %v after cancel", time.Since(start))
	t.Fail()
}
