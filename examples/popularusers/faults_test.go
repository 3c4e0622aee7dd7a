package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
)

// Brokers that cannot be reached at start: the source retries with
// backoff, logs each attempt, and gives up after -connect-timeout with
// exit 1 and a message that says so. The batches cut meanwhile are not
// reported, as lines of 0 records would read as an idle topic: a warning
// says why.
func TestUnreachableBrokersGiveUpAfterConnectTimeout(t *testing.T) {
	addr, err := kafkatest.FreeAddr() // nothing listens there
	require.NoError(t, err)

	start := time.Now()
	r := runMain(t, context.Background(), "", "-brokers", addr, "-connect-timeout", "2s", "-interval", "200ms", "-checkpoint=", "-json")
	took := time.Since(start)
	assert.Equal(t, exitFailure, r.code)
	assert.Empty(t, r.stdout, "no batch before the brokers answer")
	assertHeldBack(t, r.stderr, addr)
	assert.GreaterOrEqual(t, took, 2*time.Second, "it tries for -connect-timeout")
	assert.Less(t, took, 20*time.Second, "and then gives up")
	assert.GreaterOrEqual(t, strings.Count(r.stderr, `msg="kafka brokers unreachable; retrying"`), 2, "every attempt is logged")
	assert.Contains(t, r.stderr, "retry_in=", "with its backoff")
	assert.Regexp(t, `popularusers run: .*brokers \[`+addr+`\] unreachable for [0-9.]+s \([0-9]+ attempts\)`, r.stderr)
}

// Brokers that take connections and never answer (a hung broker, another
// service on the port) fail the run within -connect-timeout too, with and
// without -state changelog (which reads the input's partitions first),
// and no batch is reported meanwhile.
func TestSilentBrokersGiveUpAfterConnectTimeout(t *testing.T) {
	addr, _ := kafkatest.SilentBrokers(t)
	for _, mode := range [][]string{{"-checkpoint="}, {"-state", "changelog"}} {
		t.Run(strings.Join(mode, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			r := runMain(t, ctx, "", append([]string{"-brokers", addr, "-connect-timeout", "2s", "-interval", "200ms", "-json"}, mode...)...)
			assert.Equal(t, exitFailure, r.code)
			assert.Less(t, time.Since(start), 15*time.Second, "it gives up after -connect-timeout")
			assert.Regexp(t, `popularusers run: .*brokers \[`+addr+`\] unreachable for [0-9.]+s`, r.stderr)
			assert.Empty(t, r.stdout, "no batch before the brokers answer")
			if mode[0] == "-checkpoint=" { // the changelog's fails before the pipeline starts
				assertHeldBack(t, r.stderr, addr)
			}
		})
	}
}

// assertHeldBack checks that the log says, once, why no batch is
// reported.
func assertHeldBack(t *testing.T, stderr, addr string) {
	t.Helper()
	assert.Equal(t, 1, strings.Count(stderr, `msg="the Kafka brokers have not answered yet: no batch is reported until they do`), "once")
	assert.Contains(t, stderr, `brokers=[`+addr+`] connect_timeout=2s`)
}

// Brokers that take connections and never answer fail produce within
// -connect-timeout too, not after sarama's reads and retries.
func TestSilentBrokersProduceGivesUpAfterConnectTimeout(t *testing.T) {
	addr, _ := kafkatest.SilentBrokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	r := runMain(t, ctx, "", "produce", "-brokers", addr, "-connect-timeout", "2s", "-count", "10")
	assert.Equal(t, exitFailure, r.code)
	assert.Less(t, time.Since(start), 15*time.Second, "it gives up after -connect-timeout")
	assert.Regexp(t, `popularusers produce: .*kafka sink messages: brokers \[`+addr+`\] unreachable for [0-9.]+s`, r.stderr)
}

// Brokers that refuse connections are retried by produce until
// -connect-timeout, as the Kafka input retries them: a producer started
// before its brokers delivers once they are up, and gives up only after
// -connect-timeout, not after sarama's first few attempts.
func TestProduceRetriesRefusingBrokersUntilConnectTimeout(t *testing.T) {
	t.Run("gives up", func(t *testing.T) {
		addr, err := kafkatest.FreeAddr() // nothing listens there
		require.NoError(t, err)
		start := time.Now()
		r := runMain(t, context.Background(), "", "produce", "-brokers", addr, "-connect-timeout", "3s", "-count", "10")
		took := time.Since(start)
		assert.Equal(t, exitFailure, r.code)
		assert.GreaterOrEqual(t, took, 3*time.Second, "it tries for -connect-timeout")
		assert.Less(t, took, 20*time.Second, "and then gives up")
		assert.GreaterOrEqual(t, strings.Count(r.stderr, `msg="kafka brokers unreachable; retrying"`), 2, "every attempt is logged")
		assert.Regexp(t, `popularusers produce: .*kafka sink messages: brokers \[`+addr+`\] unreachable for [0-9.]+s \([0-9]+ attempts\): .*connection refused`, r.stderr)
	})
	t.Run("brokers start late", func(t *testing.T) {
		addr, err := kafkatest.FreeAddr() // nothing listens there yet
		require.NoError(t, err)
		done := make(chan result, 1)
		go func() {
			done <- runMain(t, context.Background(), "", "produce", "-brokers", addr, "-connect-timeout", "30s", "-count", "10", "-rate", "0")
		}()
		time.Sleep(2 * time.Second) // long enough for several refused attempts
		b, err := kafkatest.Start(kafkatest.Config{Addr: addr, Topics: map[string]int32{"messages": 1}})
		require.NoError(t, err)
		defer b.Close()
		r := <-done
		assert.Equal(t, exitOK, r.code)
		assert.Contains(t, r.stderr, `msg="kafka brokers unreachable; retrying"`)
		assert.Equal(t, []int64{10}, b.HighWatermarks("messages"))
	})
}

// With -input and -brokers, the popular users go to Kafka: -connect-timeout
// bounds the outputs' wait for brokers that never answer, as the README's
// flag table says, instead of being refused as a flag of the Kafka input.
func TestInputToSilentBrokersGivesUpAfterConnectTimeout(t *testing.T) {
	addr, _ := kafkatest.SilentBrokers(t)
	in := filepath.Join(t.TempDir(), "in.csv")
	require.NoError(t, os.WriteFile(in, []byte("1,profile.view\n2,message.private\n"), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	r := runMain(t, ctx, "", "-input", in, "-brokers", addr, "-connect-timeout", "2s", "-output-retry", "0", "-limit", "0.5")
	assert.Equal(t, exitFailure, r.code)
	assert.Less(t, time.Since(start), 15*time.Second, "it gives up after -connect-timeout")
	assert.Regexp(t, `popularusers run: .*brokers \[`+addr+`\] unreachable for [0-9.]+s`, r.stderr)
}

// An output topic that refuses writes (here: it does not exist) past
// -output-retry fails the run before the batches written to it are
// committed: a run after the topic is there reads the same records again
// and delivers them. The Kafka outputs are delivered after their Write,
// so the failure shows when the pipeline flushes them to commit.
func TestOutputRefusedCommitsNothing(t *testing.T) {
	b := startBrokerForTest(t, map[string]int32{"messages": 1, "messages.dlq": 1})
	require.NoError(t, b.Produce("messages",
		kafkatest.Record{Key: []byte("1"), Value: []byte(`{"user_id":1,"activity":"message.private"}`)},
		kafkatest.Record{Key: []byte("2"), Value: []byte(`{"user_id":2,"activity":"profile.view"}`)},
		kafkatest.Record{Key: []byte("2"), Value: []byte(`{"user_id":2,"activity":"nope"}`)},
	))
	args := []string{"-brokers", b.Addrs()[0], "-json", "-interval", "300ms", "-sketch", "exact", "-limit", "0.5", "-checkpoint="}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := runMain(t, ctx, "", append(args, "-output-retry", "3s")...)
	require.NoError(t, ctx.Err(), "the run stops on its own")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, `msg="output failed; retrying" output="output topic" of=flush attempt=1`)
	assert.Regexp(t, `popularusers run: stream: to\(popular\): batch 1: flush: output topic: flush not delivered in [0-9]+ attempts over [0-9.]+s \(-output-retry 3s\): kafka sink popular_users: 1 messages not delivered`, r.stderr)
	assert.Empty(t, b.Committed("popularusers", "messages"), "nothing committed")

	require.NoError(t, b.CreateTopic("popular_users", 1))
	stdout, _, stop := runInBackground(t, args...)
	waitFor(t, time.Minute, "the records again", func() bool {
		read := 0
		for _, l := range parseLines(t, strings.Join(stdout.lines(), "\n")) {
			read += l.Records
		}
		return read == 3
	})
	waitFor(t, time.Minute, "the commit", func() bool { return b.Committed("popularusers", "messages")[0] == 3 })
	res := stop()
	require.Equal(t, exitOK, res.code)
	out, err := b.Records(ctx, "popular_users")
	require.NoError(t, err)
	require.NotEmpty(t, out)
	for _, m := range out { // every batch publishes the popular users
		assert.Equal(t, "[1,3]", string(m.Value))
	}
	dead, err := b.Records(ctx, "messages.dlq")
	require.NoError(t, err)
	assert.Len(t, dead, 2, "the bad record, dead-lettered by both runs (at least once)")
}

// A dead-letter topic that is missing fails the batch that has bad records,
// with a message that says what to do, and commits nothing.
func TestMissingDLQTopicFails(t *testing.T) {
	b := startBrokerForTest(t, map[string]int32{"messages": 1, "popular_users": 1})
	require.NoError(t, b.Produce("messages",
		kafkatest.Record{Key: []byte("1"), Value: []byte(`{"user_id":1,"activity":"message.private"}`)},
		kafkatest.Record{Key: []byte("2"), Value: []byte(`{"user_id":2,"activity":"nope"}`)},
	))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := runMain(t, ctx, "", "-brokers", b.Addrs()[0], "-json", "-interval", "300ms", "-checkpoint=", "-output-retry", "0")
	require.NoError(t, ctx.Err(), "the run stops on its own")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "dead letters (create the topic, or pass -dlq-topic= to send none to Kafka): kafka sink messages.dlq: 1 messages not delivered")
	assert.Empty(t, b.Committed("popularusers", "messages"), "nothing committed")
}

// The broker stops mid-run and starts again with the same data: the
// pipeline waits, reconnects and resumes, and with a checkpoint the final
// totals are exact (no record lost or counted twice), and the output after
// the restart is delivered.
func TestBrokerRestartMidRun(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the consumer to notice the broker is gone and back")
	}
	dataDir := t.TempDir()
	topics := map[string]int32{"messages": 2, "popular_users": 1, "messages.dlq": 1}
	b, err := kafkatest.Start(kafkatest.Config{Topics: topics, DataDir: dataDir, MinSessionTimeout: time.Second})
	require.NoError(t, err)
	addr := b.Addrs()[0]
	defer func() { b.Close() }()

	ref := newReference()
	activities := []string{"profile.picture.like", "profile.view", "message.private"}
	produce := func(from, n int) {
		t.Helper()
		var recs []kafkatest.Record
		for i := from; i < from+n; i++ {
			user, activity := int64(1+i*7%23), activities[i%3]
			ref.add(user, activity)
			recs = append(recs, kafkatest.Record{Partition: int32(user % 2), Key: []byte(strconv.FormatInt(user, 10)),
				Value: []byte(`{"user_id":` + strconv.FormatInt(user, 10) + `,"activity":"` + activity + `"}`)})
		}
		require.NoError(t, b.Produce("messages", recs...))
	}
	produce(0, 200)

	stdout, stderr, stop := runInBackground(t, "-brokers", addr, "-json", "-interval", "300ms", "-sketch", "exact", "-limit", "0.5",
		"-checkpoint", t.TempDir(), "-connect-timeout", "2m")
	exact := func() bool {
		lines := parseLines(t, strings.Join(stdout.lines(), "\n"))
		if len(lines) == 0 || len(ref.totals) == 0 {
			return false
		}
		last := lines[len(lines)-1]
		want := ref.quantile(1, 2)
		return last.Users == len(ref.totals) && last.Threshold != nil && *last.Threshold == float64(want) &&
			assert.ObjectsAreEqual(ref.above(float64(want)), popularOf(last))
	}
	waitFor(t, time.Minute, "the totals of the first records", exact)

	b.Close()
	time.Sleep(time.Second) // the pipeline finds the broker gone
	b, err = kafkatest.Start(kafkatest.Config{Addr: addr, Topics: topics, DataDir: dataDir, MinSessionTimeout: time.Second})
	require.NoError(t, err)
	produce(200, 200)
	waitFor(t, 2*time.Minute, "the exact totals of all records after the restart", exact)
	res := stop()
	assert.Equal(t, exitOK, res.code, "stderr:\n%s", stderr)
	assert.Contains(t, res.stderr, "kafka fetch failed; retrying", "the pipeline saw the broker go")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := b.Records(ctx, "popular_users")
	require.NoError(t, err)
	published := map[string]bool{}
	for _, r := range out {
		published[string(r.Value)] = true
	}
	for _, u := range ref.above(float64(ref.quantile(1, 2))) {
		assert.True(t, published["["+strconv.FormatInt(u.user, 10)+","+strconv.FormatInt(u.score, 10)+"]"], "user %d's final total is published", u.user)
	}
}

// An output topic that refuses writes for a while: the batch is retried,
// nothing is committed meanwhile, and once the topic takes writes the batch
// is delivered and committed, and the run goes on.
func TestOutputRetriedUntilItSucceeds(t *testing.T) {
	b := startBrokerForTest(t, map[string]int32{"messages": 1, "messages.dlq": 1})
	require.NoError(t, b.Produce("messages",
		kafkatest.Record{Key: []byte("1"), Value: []byte(`{"user_id":1,"activity":"message.private"}`)},
		kafkatest.Record{Key: []byte("2"), Value: []byte(`{"user_id":2,"activity":"profile.view"}`)},
	))
	_, stderr, stop := runInBackground(t, "-brokers", b.Addrs()[0], "-json", "-interval", "300ms", "-sketch", "exact", "-limit", "0.5", "-checkpoint=")
	waitFor(t, time.Minute, "a retry", func() bool {
		return strings.Contains(stderr.String(), `msg="output failed; retrying" output="output topic" of=flush`)
	})
	assert.Empty(t, b.Committed("popularusers", "messages"), "nothing committed while the output fails")

	require.NoError(t, b.CreateTopic("popular_users", 1))
	waitFor(t, time.Minute, "the commit", func() bool { return b.Committed("popularusers", "messages")[0] == 2 })
	res := stop()
	require.Equal(t, exitOK, res.code)
	assert.Contains(t, res.stderr, `msg="output delivered after retries" output="output topic" of=flush`)
	lines := parseLines(t, res.stdout)
	require.NotEmpty(t, lines)
	assert.Equal(t, 2, lines[0].Records)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := b.Records(ctx, "popular_users")
	require.NoError(t, err)
	require.NotEmpty(t, out)
	assert.Equal(t, "[1,3]", string(out[0].Value))
}

// With -state changelog (and so -exactly-once), the input topic's
// partitions are read before the pipeline starts. Brokers that cannot be
// reached then are retried, logged and given up on as the Kafka input's
// are, and a signal meanwhile stops the program as it stops a run: exit 0.
func TestUnreachableBrokersBeforeTheChangelog(t *testing.T) {
	addr, err := kafkatest.FreeAddr() // nothing listens there
	require.NoError(t, err)
	for _, mode := range [][]string{{"-state", "changelog"}, {"-exactly-once"}} {
		t.Run(strings.Join(mode, " ")+" gives up", func(t *testing.T) {
			r := runMain(t, context.Background(), "", append([]string{"-brokers", addr, "-connect-timeout", "2s", "-json"}, mode...)...)
			assert.Equal(t, exitFailure, r.code)
			assert.GreaterOrEqual(t, strings.Count(r.stderr, `msg="kafka brokers unreachable; retrying"`), 2, "every attempt is logged")
			assert.Contains(t, r.stderr, "retry_in=", "with its backoff")
			assert.Regexp(t, `popularusers run: .*brokers \[`+addr+`\] unreachable for [0-9.]+s \([0-9]+ attempts\)`, r.stderr)
		})
		t.Run(strings.Join(mode, " ")+" stopped", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			start := time.Now()
			r := runMain(t, ctx, "", append([]string{"-brokers", addr, "-json"}, mode...)...)
			assert.Less(t, time.Since(start), 10*time.Second, "it stops when told to")
			assert.Equal(t, exitOK, r.code, "a signal before the first batch is a clean stop")
			assert.NotContains(t, r.stderr, "popularusers run:")
		})
	}
}

// A signal while the input topic's partitions are read, before the
// changelog, from brokers that take connections and never answer, stops
// the program at once, not after sarama's reads of up to -connect-timeout
// each.
func TestSilentBrokersBeforeTheChangelogStopped(t *testing.T) {
	addr, hangUp := kafkatest.SilentBrokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	done := make(chan result, 1)
	go func() {
		done <- runMain(t, ctx, "", "-brokers", addr, "-state", "changelog", "-connect-timeout", "1m", "-json")
	}()
	select {
	case r := <-done:
		assert.Equal(t, exitOK, r.code, "a signal before the first batch is a clean stop")
		assert.NotContains(t, r.stderr, "popularusers run:")
	case <-time.After(10 * time.Second):
		t.Errorf("still running %v after the signal", time.Since(start))
		hangUp() // the reads fail, and sarama gives up
		<-done
	}
}

// deadLetterOf runs the program on bad, a record that does not decode,
// then a good one, and returns bad's dead letter once the run committed
// both and went on.
func deadLetterOf(t *testing.T, bad kafkatest.Record) kafkatest.Record {
	t.Helper()
	b := startBrokerForTest(t, map[string]int32{"messages": 1, "popular_users": 1, "messages.dlq": 1})
	require.NoError(t, b.Produce("messages", bad,
		kafkatest.Record{Key: []byte("2"), Value: []byte(`{"user_id":2,"activity":"profile.view"}`)},
	))
	stdout, _, stop := runInBackground(t, "-brokers", b.Addrs()[0], "-json", "-interval", "300ms", "-checkpoint=", "-output-retry", "2s")
	waitFor(t, time.Minute, "the commit", func() bool { return b.Committed("popularusers", "messages")[0] == 2 })
	res := stop()
	require.Equal(t, exitOK, res.code)
	n := 0
	for _, l := range parseLines(t, stdout.String()) {
		n += l.Bad
	}
	assert.Equal(t, 1, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dead, err := b.Records(ctx, "messages.dlq")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	return dead[0]
}

// A record as large as the input topic takes does not fit in a dead letter
// once its headers are added: it is still dead-lettered, its value cut to
// fit and its full size in a header, and the run goes on; its origin names
// where to find it whole.
func TestHugeBadRecordIsDeadLettered(t *testing.T) {
	huge := strings.Repeat("a", 1_048_400) // about the largest a producer sends by default
	d := deadLetterOf(t, kafkatest.Record{Key: []byte("1"), Value: []byte(huge)})
	assert.Equal(t, "1", string(d.Key))
	assert.True(t, strings.HasPrefix(huge, string(d.Value)), "a prefix of the record")
	assert.Less(t, len(d.Value), len(huge))
	assert.Equal(t, map[string]string{
		"dlq.error": "record too long: 1048400 bytes, over the limit of 65536", "dlq.kind": "record too long",
		"dlq.topic": "messages", "dlq.partition": "0", "dlq.offset": "0", "dlq.truncated": "1048400",
	}, d.Headers)
}

// A bad record whose key alone is about as large as a message may be is
// still dead-lettered: with the value gone, the key is cut to fit too,
// and a header holds its whole length.
func TestHugeKeyOfABadRecordIsDeadLettered(t *testing.T) {
	key := strings.Repeat("k", 1_048_480)
	d := deadLetterOf(t, kafkatest.Record{Key: []byte(key), Value: []byte("not json")})
	assert.Empty(t, d.Value, "the value cut first")
	assert.True(t, strings.HasPrefix(key, string(d.Key)), "a prefix of the key")
	assert.Less(t, len(d.Key), len(key))
	assert.Equal(t, "8", d.Headers["dlq.truncated"], "the value's whole length")
	assert.Equal(t, strconv.Itoa(len(key)), d.Headers["dlq.key.truncated"], "the key's whole length")
	assert.Equal(t, "0", d.Headers["dlq.offset"])
}
