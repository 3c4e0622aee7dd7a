package changelog

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicehq/sluice/stream"
)

// Another process creates the topic between the store's metadata lookup,
// which found none, and its CreateTopics, which then fails with
// TopicAlreadyExists: the store checks that topic as any topic it finds,
// its cleanup policy and its partitions.
func TestTopicCreatedByAnotherProcessIsChecked(t *testing.T) {
	for _, tc := range []struct {
		name    string
		configs map[string]string
		part    int32 // of the checkpoint
		want    string
	}{
		{"not compacted", nil, 0, "topic racy has cleanup.policy=delete"},
		{"too few partitions", map[string]string{"cleanup.policy": "compact"}, 2, "topic racy has 1 partitions; partition 2 is needed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1))
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.CreateTopic("racy", 1, tc.configs))
			var mu sync.Mutex
			hidden := 0
			c.ControlKey(kmsg.Metadata.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				req := r.(*kmsg.MetadataRequest)
				mu.Lock()
				defer mu.Unlock()
				if len(req.Topics) != 1 || req.Topics[0].Topic == nil || *req.Topics[0].Topic != "racy" || hidden >= 2 {
					return nil, nil, false
				}
				hidden++ // the store's lookups in Restore and Checkpoint: "no such topic yet"
				resp := req.ResponseKind().(*kmsg.MetadataResponse)
				b := kmsg.NewMetadataResponseBroker()
				b.NodeID, b.Host, b.Port = 0, "127.0.0.1", 0
				resp.Brokers = append(resp.Brokers, b)
				rt := kmsg.NewMetadataResponseTopic()
				name := "racy"
				rt.Topic, rt.ErrorCode = &name, kerr.UnknownTopicOrPartition.Code
				resp.Topics = append(resp.Topics, rt)
				return resp, nil, true
			})
			k, err := NewKafka(Config{Brokers: c.ListenAddrs(), Topic: "racy", Partitions: 4, RestoreTimeout: 5 * time.Second})
			require.NoError(t, err)
			defer k.Close()
			restoreAll(t, k, nil)
			err = k.Checkpoint(context.Background(), &stream.Changes{Batch: stream.Info{ID: 1}, Entries: []stream.Entry{entry(tc.part, "a", "1")}})
			assert.ErrorContains(t, err, tc.want)
			assert.Equal(t, 2, hidden, "the topic was hidden from the store's lookups before it tried to create it")
		})
	}
}
