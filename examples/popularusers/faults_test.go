package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
)

// Brokers that cannot be reached at start: the source retries with
// backoff, logs each attempt, and gives up after -connect-timeout with
// exit 1 and a message that says so.
func TestUnreachableBrokersGiveUpAfterConnectTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	start := time.Now()
	r := runMain(t, context.Background(), "", "-brokers", addr, "-connect-timeout", "2s", "-checkpoint=", "-json")
	took := time.Since(start)
	assert.Equal(t, exitFailure, r.code)
	assert.GreaterOrEqual(t, took, 2*time.Second, "it tries for -connect-timeout")
	assert.Less(t, took, 20*time.Second, "and then gives up")
	assert.GreaterOrEqual(t, strings.Count(r.stderr, `msg="kafka brokers unreachable; retrying"`), 2, "every attempt is logged")
	assert.Contains(t, r.stderr, "retry_in=", "with its backoff")
	assert.Regexp(t, `popularusers run: .*brokers \[`+addr+`\] unreachable for [0-9.]+s \([0-9]+ attempts\)`, r.stderr)
}

// An output topic that refuses writes (here: it does not exist) fails the
// batch and the run, and the batch's offsets are not committed: a run
// after the topic is there reads the same records again and delivers them.
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
	r := runMain(t, ctx, "", args...)
	require.NoError(t, ctx.Err(), "the run stops on its own")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "kafka sink popular_users: 1 of 1 messages not delivered")
	assert.Empty(t, r.stdout, "the failed batch is not reported")
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
	require.Len(t, out, 1)
	assert.Equal(t, "[1,3]", string(out[0].Value))
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
	r := runMain(t, ctx, "", "-brokers", b.Addrs()[0], "-json", "-interval", "300ms", "-checkpoint=")
	require.NoError(t, ctx.Err(), "the run stops on its own")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "dead letters (create the topic, or pass -dlq-topic= to send none to Kafka): kafka sink messages.dlq: 1 of 1 messages not delivered")
	assert.Empty(t, b.Committed("popularusers", "messages"), "nothing committed")
}
