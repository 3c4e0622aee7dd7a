package source_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// deleteBefore deletes the records of partition 0 of topic before offset
// before, as retention does.
func deleteBefore(t *testing.T, b *kafkatest.Broker, topic string, before int64) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(b.Addrs(), sarama.NewConfig())
	require.NoError(t, err)
	defer admin.Close()
	require.NoError(t, admin.DeleteRecords(topic, map[int32]int64{0: before}))
}

// keptLog returns a logger whose output logs keeps for the test to read,
// and the test prints if it fails.
func keptLog(t *testing.T) (*slog.Logger, *source.SyncBuffer) {
	t.Helper()
	logs := new(source.SyncBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return slog.New(slog.NewTextHandler(logs, nil)), logs
}

// skippedLine matches the warning that names the records of partition 0
// of topic "in" that group skipped, first to last.
func skippedLine(group string, first, last int64) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`level=WARN msg="kafka records skipped[^"]*" topic=in group=%s partition=0 first_skipped=%d last_skipped=%d\n`,
		group, first, last))
}

// offsetsRead keeps the offsets of the records a pipeline's batches hold,
// in the order they came.
type offsetsRead struct {
	mu  sync.Mutex
	got []int64
}

func (o *offsetsRead) add(_ context.Context, b *stream.Batch[source.Message]) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range b.Partitions {
		for i := range p.Values {
			o.got = append(o.got, p.Origin(i).Offset)
		}
	}
	return nil
}

func (o *offsetsRead) all() []int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]int64(nil), o.got...)
}

// span returns the offsets from..to-1.
func span(from, to int64) []int64 {
	var out []int64
	for o := from; o < to; o++ {
		out = append(out, o)
	}
	return out
}

// A pipeline stopped for longer than its topic's retention: when it starts
// again, its group's committed offset is below the partition's oldest
// record. The claim starts from the oldest record left (or the newest,
// with StartNewest), and the records between the commit and there, which
// it never reads, are logged as skipped, once, with their offsets.
func TestKafkaCommitBelowTheLogStart(t *testing.T) {
	for _, tc := range []struct {
		name        string
		newest      bool
		saramaFetch bool
		// readCommitted: the committed offset is fetched as a read
		// committed consumer fetches it (stable, KIP-447).
		readCommitted bool
	}{
		{"own-fetch", false, false, false},
		{"sarama-fetch", false, true, false},
		{"own-fetch/newest", true, false, false},
		{"sarama-fetch/newest", true, true, false},
		{"own-fetch/read-committed", false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			b := startBroker(t, map[string]int32{"in": 1})
			const n, deleted = 100, 80
			produce(t, b, "in", 1, 0, n)
			edit := func(cfg *source.KafkaConfig) {
				cfg.SaramaFetch = tc.saramaFetch
				if tc.readCommitted {
					cfg.Sarama.Consumer.IsolationLevel = sarama.ReadCommitted
				}
			}

			// The first run reads part of the partition, commits it and stops.
			var first offsetsRead
			src := newSource(t, b, "in", "weekend", edit)
			p := stream.NewPipeline(stream.Interval(20*time.Millisecond), stream.MaxRecords(10))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			stream.ForEachBatch(stream.From(p, src), func(ctx2 context.Context, batch *stream.Batch[source.Message]) error {
				err := first.add(ctx2, batch)
				if len(first.all()) >= 30 {
					cancel() // the engine commits this batch, then stops
				}
				return err
			})
			require.NoError(t, p.Run(ctx))
			committed := b.Committed("weekend", "in")[0]
			require.Equal(t, span(0, committed), first.all(), "the first run committed what it read")
			require.Less(t, committed, int64(deleted))

			deleteBefore(t, b, "in", deleted)

			log, logs := keptLog(t)
			var second offsetsRead
			src = newSource(t, b, "in", "weekend", edit, func(cfg *source.KafkaConfig) {
				cfg.StartNewest = tc.newest
				cfg.Logger = log
			})
			stop := runSource(t, src, second.add)
			start, end := int64(deleted), int64(n)
			if tc.newest {
				// The claim starts at the end: once it has found it (its
				// fetch loop at once, sarama's consumer at its first
				// record), new records come from there.
				require.Eventually(t, func() bool {
					return src.Owns(0) && (tc.saramaFetch || strings.Contains(logs.String(), "records skipped"))
				}, 10*time.Second, 10*time.Millisecond)
				start, end = n, n+10
				produce(t, b, "in", 1, n, n+10)
			}
			waitCommitted(t, b, "weekend", "in")
			stop()

			assert.Equal(t, span(start, end), second.all(), "each record once, in order, from the claim's start")
			assert.Len(t, skippedLine("weekend", committed, start-1).FindAllString(logs.String(), -1), 1,
				"the records skipped logged once")
			assert.Equal(t, 1, strings.Count(logs.String(), "records skipped"))
		})
	}
}

// A group that never committed starts at the oldest record without a
// word of records skipped.
func TestKafkaNoCommitSkipsNothing(t *testing.T) {
	checkLeaks(t)
	b := startBroker(t, map[string]int32{"in": 1})
	produce(t, b, "in", 1, 0, 100)
	deleteBefore(t, b, "in", 40)

	log, logs := keptLog(t)
	var read offsetsRead
	stop := runSource(t, newSource(t, b, "in", "new", func(cfg *source.KafkaConfig) {
		cfg.Logger = log
	}), read.add)
	waitCommitted(t, b, "new", "in")
	stop()

	assert.Equal(t, span(40, 100), read.all())
	assert.NotContains(t, logs.String(), "skipped")
}

// eager makes a source's group rebalance with sarama's sticky strategy,
// an eager one: a member's join ends the claims of every member, which
// then get back the partitions they had where they can.
func eager(cfg *source.KafkaConfig) {
	cfg.Sarama.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
}

// lostPartitions records the partitions a pipeline was told it lost.
type lostPartitions struct {
	mu   sync.Mutex
	lost []int32
}

func (l *lostPartitions) rebalance(_ context.Context, lost, _ []int32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lost = append(l.lost, lost...)
	return nil
}

func (l *lostPartitions) get() []int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int32(nil), l.lost...)
}

// A member holds a partition and has committed all it read, at 50. During
// a rebalance that gives the partition back to it, retention deletes the
// records before 80, which nobody read: its claim restarts at the oldest
// record left, 80. The pipeline's records and state of the partition end
// at the group's commit, which nobody went past: they are kept (the
// pipeline is not told the partition was lost), and the records 50..79,
// gone for every member, are logged as skipped.
func TestKafkaHeldPartitionKeptPastRecordsDeleted(t *testing.T) {
	for _, tc := range []struct {
		name        string
		saramaFetch bool
	}{{"own-fetch", false}, {"sarama-fetch", true}} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			b := startBroker(t, map[string]int32{"in": 1})
			produce(t, b, "in", 1, 0, 50)
			// Sticky, eager: the second member's join restarts the first
			// member's claim, and gives it the partition back.
			edit := func(cfg *source.KafkaConfig) {
				cfg.SaramaFetch = tc.saramaFetch
				eager(cfg)
			}

			log, logs := keptLog(t)
			var read offsetsRead
			var lost lostPartitions
			first := newSource(t, b, "in", "held", edit, func(cfg *source.KafkaConfig) {
				cfg.Logger = log
			})
			stop := runSource(t, first, read.add, stream.OnRebalance(lost.rebalance))
			waitCommitted(t, b, "held", "in")

			// The next offset fetch is the first member's, as its claim
			// starts again: held until the records are gone.
			held, release := b.Stall(kmsg.OffsetFetch.Int16())
			defer release()
			stopSecond := runSource(t, newSource(t, b, "in", "held", edit), func(context.Context, *stream.Batch[source.Message]) error { return nil })
			waitHeld(t, held, "no offset fetch: the group did not rebalance")
			produce(t, b, "in", 1, 50, 100)
			deleteBefore(t, b, "in", 80)
			release()

			waitCommitted(t, b, "held", "in")
			require.True(t, first.Owns(0), "the first member got the partition back")
			stopSecond()
			stop()

			assert.Equal(t, append(span(0, 50), span(80, 100)...), read.all(), "each record once, in order")
			assert.Empty(t, lost.get(), "the pipeline kept the partition")
			assert.Len(t, skippedLine("held", 50, 79).FindAllString(logs.String(), -1), 1, "the records skipped logged once")
			assert.NotContains(t, logs.String(), "dropping")
		})
	}
}

// A read committed source asks for the group's committed offset as a
// stable one (KIP-447), which a broker before 2.5 cannot be asked: sarama's
// configured version (2.8 by default) is above the broker's, and the
// request, once its version is brought down to the broker's, does not
// encode. The source then asks for it as such a broker can, as sarama's
// consumer and the Java one do, and still logs the records skipped past a
// commit out of range.
func TestKafkaCommitBelowTheLogStartOnABrokerBeforeStableOffsets(t *testing.T) {
	checkLeaks(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"), kfake.GroupMinSessionTimeout(100*time.Millisecond),
		kfake.MaxVersions(kversion.V2_4_0()))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	addrs := c.ListenAddrs()
	produceEach(t, addrs, "in", 1, 0, 100, false)

	commitOutOfRange(t, addrs, "old", 1, 50, 80)

	log, logs := keptLog(t)
	src := sourceOn(t, addrs, "in", "old", log, func(cfg *source.KafkaConfig) {
		cfg.Sarama.Consumer.IsolationLevel = sarama.ReadCommitted
	})
	var read offsetsRead
	stop := runSource(t, src, read.add)
	require.Eventually(t, func() bool { return len(read.all()) >= 20 }, 10*time.Second, 10*time.Millisecond)
	stop()

	assert.Equal(t, span(80, 100), read.all())
	assert.Len(t, skippedLine("old", 50, 79).FindAllString(logs.String(), -1), 1, "the records skipped logged once")
	assert.NotContains(t, logs.String(), "committed offset not fetched")
}

// A claim that starts past a commit out of range asks the coordinator for
// the group's committed offset. A coordinator that holds the request
// (busy, or a broker half down) holds it up to sarama's Net.ReadTimeout,
// 30s by default, and sarama's request cannot be cancelled: the claim
// must not wait for it once a rebalance ends its generation, or the
// rebalance waits for this member, up to the rebalance timeout, and then
// goes on without it.
func TestKafkaClaimStartDoesNotHoldUpARebalance(t *testing.T) {
	checkLeaks(t)
	c, addrs := startCluster(t, 1, "in", 1)
	produceEach(t, addrs, "in", 1, 0, 100, false)
	commitOutOfRange(t, addrs, "busy", 1, 50, 80)

	// The first offset fetch is sarama's, as the member joins; the
	// second, the claim's, is held.
	held, release := holdOffsetFetch(t, c, 1)

	log, logs := keptLog(t)
	// Sticky, eager: the second member's join ends the first member's
	// generation, and with it the claim that waits.
	first := sourceOn(t, addrs, "in", "busy", log, eager)
	stop := runSource(t, first, func(context.Context, *stream.Batch[source.Message]) error { return nil })
	waitHeld(t, held, "the claim did not fetch the group's committed offset")
	stopSecond := runSource(t, sourceOn(t, addrs, "in", "busy", testLog(t), eager),
		func(context.Context, *stream.Batch[source.Message]) error { return nil })
	assert.Eventually(t, func() bool {
		return strings.Contains(logs.String(), `ended" topic=in group=busy generation=1`)
	}, 5*time.Second, 10*time.Millisecond, "the first member left its generation at once")

	release()
	stopSecond()
	stop()
}

// commitOutOfRange commits offset at for each partition of topic "in" for
// group, with no member in it, and deletes the records before past, as
// retention does, so that the commit is out of range.
func commitOutOfRange(t *testing.T, addrs []string, group string, partitions int32, at, past int64) {
	t.Helper()
	client, err := sarama.NewClient(addrs, sarama.NewConfig())
	require.NoError(t, err)
	defer client.Close()
	committed, deleted := map[int32]int64{}, map[int32]int64{}
	for p := range partitions {
		committed[p], deleted[p] = at, past
	}
	commitOffsets(t, client, group, committed)
	admin, err := sarama.NewClusterAdminFromClient(client)
	require.NoError(t, err)
	require.NoError(t, admin.DeleteRecords("in", deleted))
}

// commitOffsets commits offsets, by partition of topic "in", for group,
// with no member in it, through client.
func commitOffsets(t *testing.T, client sarama.Client, group string, offsets map[int32]int64) {
	t.Helper()
	coordinator, err := client.Coordinator(group)
	require.NoError(t, err)
	commit := sarama.NewOffsetCommitRequest(sarama.NewConfig(), group)
	commit.ConsumerGroupGeneration = -1 // a group with no members
	for p, at := range offsets {
		commit.AddBlock("in", p, at, 0, "")
	}
	resp, err := coordinator.CommitOffset(commit)
	require.NoError(t, err)
	for p := range offsets {
		require.ErrorIs(t, resp.Errors["in"][p], sarama.ErrNoError)
	}
}

// With a cooperative strategy (the default), a rebalance does not end
// the member's claims: it revokes one by closing its messages. A claim
// that waits for the group's committed offset, which the coordinator
// holds, or for the coordinator's lookup, which the brokers hold, and is
// revoked, must let the partition go at once, or the rebalance waits for
// it up to the rebalance timeout, the partition with no owner meanwhile,
// and then ends every claim of the member.
func TestKafkaCooperativeRevokeDuringAClaimStart(t *testing.T) {
	for _, hold := range claimStartHolds {
		t.Run(hold.name, func(t *testing.T) {
			// sarama fetches the offsets of both partitions as the member
			// joins; the claims' fetches come next, on one connection:
			// the first held holds the other behind it.
			addrs, held, release := startHeldClaim(t, hold.hold, "coop", 2)

			first := sourceOn(t, addrs, "in", "coop", testLog(t))
			stop := runSource(t, first, func(context.Context, *stream.Batch[source.Message]) error { return nil })
			waitHeld(t, held, hold.why)
			second := sourceOn(t, addrs, "in", "coop", testLog(t))
			stopSecond := runSource(t, second, func(context.Context, *stream.Batch[source.Message]) error { return nil })
			assert.Eventually(t, func() bool { return second.Owns(0) || second.Owns(1) },
				5*time.Second, 10*time.Millisecond, "the partition revoked went to the second member at once")

			release()
			stopSecond()
			stop()
		})
	}
}

// A run stopped while its claim waits for the group's committed offset,
// which the coordinator holds, or for the coordinator's lookup, which the
// brokers hold, returns at once: sarama's requests, which cannot be
// cancelled, would hold it up to Net.ReadTimeout, and its lookup retries.
func TestKafkaStopDuringAClaimStart(t *testing.T) {
	for _, hold := range claimStartHolds {
		t.Run(hold.name, func(t *testing.T) {
			// The first offset fetch is sarama's, as the member joins;
			// the claim's is held, or the lookup after it.
			addrs, held, release := startHeldClaim(t, hold.hold, "stop", 1)

			src := sourceOn(t, addrs, "in", "stop", testLog(t))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- src.Run(ctx) }()
			waitHeld(t, held, hold.why)
			cancel()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(5 * time.Second):
				t.Error("Run did not return within 5s of its context being cancelled")
				release()
				<-done
			}
		})
	}
}

// A claim that waits for the group's committed offset, which the
// coordinator holds, holds up no commit of the other partitions: they go
// on a connection of their own, as they did before claims fetched the
// group's offset.
func TestKafkaClaimStartDoesNotHoldUpCommits(t *testing.T) {
	checkLeaks(t)
	c, addrs := startCluster(t, 1, "in", 2)
	produceEach(t, addrs, "in", 2, 0, 200, false)
	// Partition 1's commit is out of range, partition 0's not.
	commitOutOfRange(t, addrs, "shared", 2, 50, 80)
	client, err := sarama.NewClient(addrs, sarama.NewConfig())
	require.NoError(t, err)
	defer client.Close()
	commitOffsets(t, client, "shared", map[int32]int64{0: 90})
	coordinator, err := client.Coordinator("shared")
	require.NoError(t, err)

	// sarama fetches the offsets of both partitions as the member joins;
	// the third, partition 1's claim's, is held.
	held, release := holdOffsetFetch(t, c, 2)

	src := sourceOn(t, addrs, "in", "shared", testLog(t))
	stop := runSource(t, src, func(context.Context, *stream.Batch[source.Message]) error { return nil })
	waitHeld(t, held, "the claim did not fetch the group's committed offset")
	produceEach(t, addrs, "in", 2, 200, 220, false)
	assert.Eventually(t, func() bool {
		var committed int64
		offsets, err := client.GetOffset("in", 0, sarama.OffsetNewest)
		require.NoError(t, err)
		fetch := sarama.NewOffsetFetchRequest(sarama.V2_8_0_0, "shared", map[string][]int32{"in": {0}})
		resp, err := coordinator.FetchOffset(fetch)
		if err != nil {
			return false
		}
		if b := resp.GetBlock("in", 0); b != nil {
			committed = b.Offset
		}
		return committed == offsets
	}, 5*time.Second, 20*time.Millisecond, "partition 0 committed")

	release()
	stop()
}

// A claim that stops waiting for the group's committed offset, which the
// coordinator holds, or for the coordinator's lookup, which the brokers
// hold, as a rebalance ends its generation, does not leave the request in
// the way of the next claims' fetches: the next generation's claim of the
// partition fetches the commit, and starts, at once.
func TestKafkaClaimStartAfterAFetchGivenUp(t *testing.T) {
	for _, hold := range claimStartHolds {
		t.Run(hold.name, func(t *testing.T) {
			// The first offset fetch is sarama's, as the member joins;
			// the claim's is held, or the lookup after it.
			addrs, held, release := startHeldClaim(t, hold.hold, "again", 1)

			// Sticky, eager: the second member's join ends the first
			// member's generation, and gives the partition back to it.
			log, logs := keptLog(t)
			first := sourceOn(t, addrs, "in", "again", log, eager)
			var read offsetsRead
			stop := runSource(t, first, read.add)
			waitHeld(t, held, hold.why)
			stopSecond := runSource(t, sourceOn(t, addrs, "in", "again", testLog(t), eager),
				func(context.Context, *stream.Batch[source.Message]) error { return nil })
			assert.Eventually(t, func() bool { return len(read.all()) == 20 }, 5*time.Second, 10*time.Millisecond,
				"the next claim read the partition")

			release()
			stopSecond()
			stop()
			assert.Equal(t, span(80, 100), read.all())
			assert.Len(t, skippedLine("again", 50, 79).FindAllString(logs.String(), -1), 1, "the records skipped logged once")
		})
	}
}

// claimStartHolds are the ways a claim that starts at a sentinel is held
// as it fetches the group's committed offset: by a coordinator that holds
// the fetch, or by brokers that hold the lookup of the coordinator after
// the fetch failed.
var claimStartHolds = []struct {
	name string
	// hold holds the claim's fetch after pass others, as holdOffsetFetch.
	hold func(t *testing.T, c *kfake.Cluster, pass int) (held <-chan struct{}, release func())
	why  string // the claim was not held
}{
	{"offset fetch", holdOffsetFetch, "the claim did not fetch the group's committed offset"},
	{"coordinator lookup", holdCoordinatorLookup, "the claim did not look the coordinator up"},
}

// startHeldClaim starts a cluster with a topic "in" of partitions
// partitions, of 100 records each, which group has committed out of range
// (50, the records before 80 gone), with hold holding the claims'
// fetches after the partitions' first (sarama's, as the member joins). It
// checks for leaks, and returns the cluster's addresses.
func startHeldClaim(t *testing.T, hold func(*testing.T, *kfake.Cluster, int) (<-chan struct{}, func()), group string, partitions int32) (addrs []string, held <-chan struct{}, release func()) {
	t.Helper()
	checkLeaks(t)
	c, addrs := startCluster(t, 1, "in", partitions)
	produceEach(t, addrs, "in", partitions, 0, 100*int(partitions), false)
	commitOutOfRange(t, addrs, group, partitions, 50, 80)
	held, release = hold(t, c, int(partitions))
	return addrs, held, release
}

// waitHeld waits for a request held, and fails t, saying why, if none
// comes within 10s.
func waitHeld(t *testing.T, held <-chan struct{}, why string) {
	t.Helper()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal(why)
	}
}

// holdOffsetFetch lets the first pass OffsetFetch requests to c through,
// and holds the next one until release, which the end of the test calls
// too; held is closed once that request has come.
func holdOffsetFetch(t *testing.T, c *kfake.Cluster, pass int) (held <-chan struct{}, release func()) {
	t.Helper()
	came, wake := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(wake) }) }
	t.Cleanup(release)
	var mu sync.Mutex
	fetches := 0
	c.ControlKey(kmsg.OffsetFetch.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		fetches++
		n := fetches
		mu.Unlock()
		switch {
		case n <= pass:
			c.KeepControl()
		case n == pass+1:
			close(came)
			c.SleepControl(func() { <-wake })
		}
		return nil, nil, false
	})
	return came, release
}

// holdCoordinatorLookup lets the first pass OffsetFetch requests to c
// through and fails the next one, closing its connection, as a
// coordinator that goes away does: the claim that sent it looks the
// coordinator up again. The broker takes the first FindCoordinator after
// that and never answers it, as brokers that hang do; held is closed once
// it has come. The requests after it are answered. release does nothing:
// it is there to be called as holdOffsetFetch's is.
func holdCoordinatorLookup(t *testing.T, c *kfake.Cluster, pass int) (held <-chan struct{}, release func()) {
	t.Helper()
	came := make(chan struct{})
	var (
		mu      sync.Mutex
		fetches int
		failed  bool
	)
	c.ControlKey(kmsg.OffsetFetch.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		defer mu.Unlock()
		if fetches++; fetches <= pass {
			c.KeepControl()
			return nil, nil, false
		}
		failed = true
		c.DropControl() // KeepControl, once called, lasts
		return nil, errors.New("coordinator gone"), true
	})
	c.ControlKey(kmsg.FindCoordinator.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		defer mu.Unlock()
		if !failed {
			c.KeepControl()
			return nil, nil, false
		}
		// Neither an answer nor an error: none is sent.
		close(came)
		c.DropControl()
		return nil, nil, true
	})
	return came, func() {}
}

// A claim that starts past a commit out of range while the group's
// coordinator is still loading the group's offsets (after a failover),
// and answers the fetch of the committed offset with
// COORDINATOR_LOAD_IN_PROGRESS for longer than a few quick tries, waits
// for it: it gets the commit, and the pipeline keeps the partition's
// records and state, as it does when the coordinator is ready.
func TestKafkaClaimStartWaitsForTheCoordinatorToLoad(t *testing.T) {
	checkLeaks(t)
	c, addrs := startCluster(t, 1, "in", 1)
	produceEach(t, addrs, "in", 1, 0, 50, false)

	log, logs := keptLog(t)
	var read offsetsRead
	var lost lostPartitions
	first := sourceOn(t, addrs, "in", "loading", log, eager)
	stop := runSource(t, first, read.add, stream.OnRebalance(lost.rebalance))
	waitCommittedAt(t, addrs, "loading", 50)

	// The next offset fetch, sarama's as the first member's session
	// starts again, is held until the records are gone; the claim's after
	// it are answered as by a coordinator that loads the group's offsets.
	const refusals = 12
	held, release, refused := loadingOffsets(t, c, refusals)
	stopSecond := runSource(t, sourceOn(t, addrs, "in", "loading", testLog(t), eager),
		func(context.Context, *stream.Batch[source.Message]) error { return nil })
	waitHeld(t, held, "no offset fetch: the group did not rebalance")
	produceEach(t, addrs, "in", 1, 50, 100, false)
	admin, err := sarama.NewClusterAdmin(addrs, sarama.NewConfig())
	require.NoError(t, err)
	require.NoError(t, admin.DeleteRecords("in", map[int32]int64{0: 80}))
	require.NoError(t, admin.Close())
	release()

	require.Eventually(t, func() bool { return len(read.all()) >= 70 }, 30*time.Second, 10*time.Millisecond,
		"the claim read the partition")
	require.True(t, first.Owns(0), "the first member got the partition back")
	stopSecond()
	stop()

	assert.Equal(t, refusals, refused(), "offset fetches refused")
	assert.Equal(t, append(span(0, 50), span(80, 100)...), read.all(), "each record once, in order")
	assert.Empty(t, lost.get(), "the pipeline kept the partition")
	assert.Len(t, skippedLine("loading", 50, 79).FindAllString(logs.String(), -1), 1, "the records skipped logged once")
	assert.NotContains(t, logs.String(), "dropping")
	assert.NotContains(t, logs.String(), "committed offset not fetched")
}

// waitCommittedAt waits for group's committed offset of partition 0 of
// topic "in" to be at.
func waitCommittedAt(t *testing.T, addrs []string, group string, at int64) {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(addrs, sarama.NewConfig())
	require.NoError(t, err)
	defer admin.Close()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{"in": {0}})
		if !assert.NoError(c, err) {
			return
		}
		b := resp.GetBlock("in", 0)
		if assert.NotNil(c, b) {
			assert.Equal(c, at, b.Offset)
		}
	}, 20*time.Second, 20*time.Millisecond)
}

// loadingOffsets holds the next OffsetFetch request to c until release,
// which the end of the test calls too (held is closed once it has come),
// and answers the n after it with COORDINATOR_LOAD_IN_PROGRESS, as a
// coordinator that loads the group's offsets does. refused tells how many
// it answered so.
func loadingOffsets(t *testing.T, c *kfake.Cluster, n int) (held <-chan struct{}, release func(), refused func() int) {
	t.Helper()
	came, wake := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(wake) }) }
	t.Cleanup(release)
	var (
		mu      sync.Mutex
		fetches int
		refuse  int
	)
	c.ControlKey(kmsg.OffsetFetch.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		fetches++
		nth := fetches
		mu.Unlock()
		c.KeepControl()
		switch {
		case nth == 1:
			close(came)
			c.SleepControl(func() { <-wake })
			return nil, nil, false
		case nth > n+1:
			c.DropControl()
			return nil, nil, false
		}
		mu.Lock()
		refuse++
		mu.Unlock()
		return kafkatest.OffsetFetchError(r.(*kmsg.OffsetFetchRequest), kerr.CoordinatorLoadInProgress.Code), nil, true
	})
	return came, release, func() int {
		mu.Lock()
		defer mu.Unlock()
		return refuse
	}
}

// With SaramaFetch, a claim whose messages fill the Buffer while it waits
// for a coordinator that loads the group's offsets pauses sarama's
// partition consumer, and resumes it as it starts: every record comes
// once, in order. Each fetch brings one record, so that the pause stops
// the partition's fetches partway and the resume goes on from there.
func TestKafkaClaimStartPausedByItsEarlyMessagesResumes(t *testing.T) {
	checkLeaks(t)
	c, addrs := startCluster(t, 1, "in", 1)
	produceEach(t, addrs, "in", 1, 0, 200, true)
	var mu sync.Mutex
	fetches := 0
	c.ControlKey(kmsg.Fetch.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		fetches++
		mu.Unlock()
		return nil, nil, false
	})

	// The first offset fetch is sarama's, as the member joins; the
	// claim's after it are refused a while.
	const refusals = 8
	_, release, refused := loadingOffsets(t, c, refusals)
	release()
	var read offsetsRead
	stop := runSource(t, sourceOn(t, addrs, "in", "paused", testLog(t), saramaFetch, func(cfg *source.KafkaConfig) {
		cfg.Buffer = 10
		// One record batch per fetch, and few held in sarama's channels.
		cfg.Sarama.Consumer.Fetch.Default = 1
		cfg.Sarama.ChannelBufferSize = 1
	}), read.add)
	require.Eventually(t, func() bool { return len(read.all()) >= 200 }, 30*time.Second, 10*time.Millisecond,
		"the claim read the partition")
	produceEach(t, addrs, "in", 1, 200, 220, false)
	require.Eventually(t, func() bool { return len(read.all()) >= 220 }, 30*time.Second, 10*time.Millisecond,
		"the claim reads on")
	stop()

	assert.Equal(t, refusals, refused(), "offset fetches refused")
	mu.Lock()
	assert.GreaterOrEqual(t, fetches, 200, "a record per fetch")
	mu.Unlock()
	assert.Equal(t, span(0, 220), read.all(), "each record once, in order")
}
