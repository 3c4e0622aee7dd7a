package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
)

// startBrokerForTest starts a broker with the topics of a run, closed at
// the end of the test.
func startBrokerForTest(t *testing.T, topics map[string]int32) *kafkatest.Broker {
	t.Helper()
	b, err := kafkatest.Start(kafkatest.Config{Topics: topics})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

// runInBackground runs the program in-process until the returned stop is
// called; stop returns the result.
func runInBackground(t *testing.T, args ...string) (stdout, stderr *buffer, stop func() result) {
	t.Helper()
	stdout, stderr = &buffer{}, &buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, strings.NewReader(""), stdout, stderr) }()
	var r *result
	stop = func() result {
		if r == nil {
			cancel()
			select {
			case code := <-done:
				r = &result{code: code, stdout: stdout.String(), stderr: stderr.String()}
			case <-time.After(60 * time.Second):
				t.Fatalf("popularusers %s did not stop within 60s of its context's cancellation\nstderr:\n%s", strings.Join(args, " "), stderr)
			}
		}
		return *r
	}
	t.Cleanup(func() {
		res := stop()
		if t.Failed() {
			t.Logf("popularusers %s: exit %d\nstdout:\n%.4000s\nstderr:\n%.4000s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
		}
	})
	return stdout, stderr, stop
}

// Events with known totals go to Kafka with the produce command; the
// pipeline reads them as a consumer group and publishes to Kafka; the test
// reads popular_users and the threshold topic back and checks them against
// an exact computation over the events Kafka holds.
func TestKafkaEndToEnd(t *testing.T) {
	const events = 20_000
	for _, tc := range []struct {
		name        string
		args        []string
		compression float64 // 0: exact
	}{
		{"exact", []string{"-sketch", "exact"}, 0},
		{"tdigest", []string{"-compression", "20"}, 20},
		{"sarama-fetch", []string{"-sketch", "exact", "-sarama-fetch"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startBrokerForTest(t, map[string]int32{"messages": 4, "popular_users": 2, "thresholds": 1})
			addr := b.Addrs()[0]
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			r := runMain(t, ctx, "", "produce", "-brokers", addr, "-count", strconv.Itoa(events), "-rate", "0", "-users", "3000", "-seed", "11")
			require.Equal(t, exitOK, r.code)
			recs, err := b.Records(ctx, "messages")
			require.NoError(t, err)
			require.Len(t, recs, events, "produce writes -count events")
			ref := newReference()
			partitionOf := map[int64]int32{}
			for _, rec := range recs {
				var e struct {
					UserID   int64  `json:"user_id"`
					Activity string `json:"activity"`
				}
				require.NoError(t, json.Unmarshal(rec.Value, &e), "record %s", rec.Value)
				require.Equal(t, strconv.FormatInt(e.UserID, 10), string(rec.Key), "keyed by user id")
				if p, ok := partitionOf[e.UserID]; ok {
					require.Equal(t, p, rec.Partition, "all events of user %d in one partition", e.UserID)
				}
				partitionOf[e.UserID] = rec.Partition
				ref.add(e.UserID, e.Activity)
			}

			args := append([]string{"-brokers", addr, "-json", "-interval", "1s", "-threshold-topic", "thresholds", "-checkpoint", t.TempDir()}, tc.args...)
			stdout, _, stop := runInBackground(t, args...)
			// Every record, then a batch with none: the state is final,
			// and an idle stream still prints its batches.
			waitFor(t, time.Minute, "all events and an empty batch after them", func() bool {
				read := 0
				for _, l := range parseLines(t, strings.Join(stdout.lines(), "\n")) {
					if read == events && l.Records == 0 {
						return true
					}
					read += l.Records
				}
				return false
			})
			res := stop()
			require.Equal(t, exitOK, res.code)
			assert.NotContains(t, res.stderr, "level=ERROR")
			assert.NotContains(t, res.stderr, "dead_letter")
			fetch := `fetch="own loops"`
			if slices.Contains(tc.args, "-sarama-fetch") {
				fetch = `fetch="sarama's partition consumers"`
			}
			assert.Regexp(t, `kafka group session started" .*`+regexp.QuoteMeta(fetch), res.stderr)

			lines := parseLines(t, res.stdout)
			for i, l := range lines {
				assert.Equal(t, int64(i+1), l.Batch, "every batch is printed, in order")
				assert.Zero(t, l.Bad)
			}
			last := lines[len(lines)-1]
			assert.Equal(t, len(ref.totals), last.Users)
			require.NotNil(t, last.Threshold)
			if tc.compression == 0 {
				assert.Equal(t, float64(ref.quantile(95, 100)), *last.Threshold)
			} else {
				assert.LessOrEqual(t, ref.rankError(*last.Threshold, 0.95), tdigestBound(0.95, tc.compression, len(ref.totals)),
					"threshold %v, exact %d", *last.Threshold, ref.quantile(95, 100))
			}
			want := ref.above(*last.Threshold)
			require.NotEmpty(t, want)
			assert.Equal(t, want, popularOf(last))

			// popular_users: the last batch's messages are those of the
			// latest key. Batches are a second apart, except the one cut
			// by the cancellation, whose state is the same.
			out, err := b.Records(ctx, "popular_users")
			require.NoError(t, err)
			latest, published := latestBatch(t, out)
			assert.Equal(t, toMap(want), published, "popular_users under %s", latest)
			seconds, err := strconv.ParseInt(strings.TrimPrefix(latest, "popular_"), 10, 64)
			require.NoError(t, err, "key %q", latest)
			assert.InDelta(t, time.Now().Unix(), seconds, 60, "the key holds the batch's unix time in seconds")

			thresholds, err := b.Records(ctx, "thresholds")
			require.NoError(t, err)
			require.Len(t, thresholds, len(lines), "one threshold record per batch")
			lastT := thresholds[len(thresholds)-1]
			assert.Equal(t, latest, string(lastT.Key))
			assert.JSONEq(t, `{"batch":`+strconv.Itoa(len(lines))+`,"quantile":0.95,"threshold":`+
				strconv.FormatFloat(*last.Threshold, 'f', -1, 64)+`,"users":`+strconv.Itoa(len(ref.totals))+`}`, string(lastT.Value))

			hw := b.HighWatermarks("messages")
			committed := b.Committed("popularusers", "messages")
			for p, next := range hw {
				assert.Equal(t, next, committed[int32(p)], "partition %d committed to its end", p)
			}
		})
	}
}

// latestBatch returns the latest key of popular_users records and the
// users published under it, checking that no user has two scores there.
func latestBatch(t *testing.T, recs []kafkatest.Record) (string, map[int64]int64) {
	t.Helper()
	require.NotEmpty(t, recs)
	keys := map[string]bool{}
	for _, r := range recs {
		keys[string(r.Key)] = true
	}
	latest := slices.MaxFunc(slices.Collect(maps.Keys(keys)), func(a, b string) int {
		if len(a) != len(b) { // more digits, later
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	users := map[int64]int64{}
	for _, r := range recs {
		if string(r.Key) != latest {
			continue
		}
		var pair [2]int64
		require.NoError(t, json.Unmarshal(r.Value, &pair), "value %s is [user_id, score]", r.Value)
		if s, ok := users[pair[0]]; ok {
			require.Equal(t, s, pair[1], "user %d published twice under %s with different scores", pair[0], latest)
		}
		users[pair[0]] = pair[1]
	}
	return latest, users
}

func toMap(us []userScore) map[int64]int64 {
	m := make(map[int64]int64, len(us))
	for _, u := range us {
		m[u.user] = u.score
	}
	return m
}

// The first command of the README: no flags but a free port and a shorter
// interval. It must show popular users on its own, and stop cleanly.
func TestEmbeddedBrokerShowsPopularUsers(t *testing.T) {
	stdout, _, stop := runInBackground(t, "-listen", "127.0.0.1:0", "-interval", "500ms", "-rate", "2000", "-json")
	waitFor(t, 30*time.Second, "popular users", func() bool {
		for _, l := range parseLines(t, strings.Join(stdout.lines(), "\n")) {
			if len(l.Popular) > 0 {
				return true
			}
		}
		return false
	})
	res := stop()
	require.Equal(t, exitOK, res.code)
	assert.Contains(t, res.stderr, "embedded Kafka broker started")
	assert.Contains(t, res.stderr, "built-in producer started")
	assert.NotContains(t, res.stderr, "level=ERROR")
	for _, l := range parseLines(t, res.stdout) {
		if l.Threshold == nil {
			assert.Empty(t, l.Popular)
			continue
		}
		for i, p := range l.Popular {
			assert.Greater(t, float64(p.Score), *l.Threshold, "batch %d", l.Batch)
			assert.True(t, p.UserID >= 1000 && p.UserID <= 10000, "user %d from the built-in producer's range", p.UserID)
			if i > 0 {
				prev := l.Popular[i-1]
				assert.True(t, prev.Score > p.Score || prev.Score == p.Score && prev.UserID < p.UserID, "batch %d sorted", l.Batch)
			}
		}
	}
}

func TestBusyPortFallsBackOnlyByDefault(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	busy := l.Addr().String()
	var stderr buffer
	log := testLogger(&stderr)

	b, err := startBroker(busy, true, "", map[string]int32{"messages": 1}, log, &stderr)
	require.NoError(t, err)
	defer b.Close()
	assert.NotEqual(t, busy, b.Addrs()[0])
	assert.Contains(t, stderr.String(), "port in use: the embedded broker listens on a free port instead")

	_, err = startBroker(busy, false, "", map[string]int32{"messages": 1}, log, &stderr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), busy+" is in use: pass -listen 127.0.0.1:0 for a free port, or -brokers "+busy)
}

// A broker that cannot be reached is a runtime failure with a message.
func TestUnreachableBrokerFails(t *testing.T) {
	addr, err := kafkatest.FreeAddr() // nothing listens there
	require.NoError(t, err)
	r := runMain(t, context.Background(), "", "produce", "-brokers", addr, "-connect-timeout", "2s", "-count", "10")
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "popularusers produce: ")
	assert.Contains(t, r.stderr, addr)
}

// A Kafka record that does not decode is counted and dead-lettered to
// messages.dlq, unchanged, with its error, kind, topic, partition and offset
// in headers; the good ones go on.
func TestKafkaBadRecordsAreDeadLettered(t *testing.T) {
	b := startBrokerForTest(t, map[string]int32{"messages": 2, "popular_users": 1, "messages.dlq": 1})
	require.NoError(t, b.Produce("messages",
		kafkatest.Record{Partition: 1, Key: []byte("7"), Value: []byte(`{"user_id":7,"activity":"message.private"}`)},
		kafkatest.Record{Partition: 1, Key: []byte("7"), Value: []byte(`{"user_id":7,"activity":"profile.poke"}`)},
		kafkatest.Record{Partition: 1, Key: []byte("7"), Value: []byte("\xff\xfe")},
		kafkatest.Record{Partition: 0, Key: []byte("8"), Value: []byte(`{"user_id":8,"activity":"profile.view"}`)},
	))
	stdout, _, stop := runInBackground(t, "-brokers", b.Addrs()[0], "-json", "-interval", "300ms", "-sketch", "exact", "-limit", "0.5", "-checkpoint", t.TempDir())
	waitFor(t, time.Minute, "the records", func() bool {
		read := 0
		for _, l := range parseLines(t, strings.Join(stdout.lines(), "\n")) {
			read += l.Records
		}
		return read == 4
	})
	res := stop()
	require.Equal(t, exitOK, res.code)
	bad := 0
	var last batchLine
	for _, l := range parseLines(t, res.stdout) {
		bad += l.Bad
		last = l
	}
	assert.Equal(t, 2, bad)
	assert.Equal(t, 2, last.Users)
	assert.Equal(t, []userScore{{7, 3}}, popularOf(last))
	assert.Contains(t, res.stderr, "origin=messages/1@1", "bad records are logged with their origin")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dead, err := b.Records(ctx, "messages.dlq")
	require.NoError(t, err)
	for i := range dead {
		dead[i].Partition, dead[i].Offset = 0, 0
	}
	assert.ElementsMatch(t, []kafkatest.Record{
		{Key: []byte("7"), Value: []byte(`{"user_id":7,"activity":"profile.poke"}`), Headers: map[string]string{
			"dlq.error": `unknown activity at byte 24: "profile.poke"`, "dlq.kind": "unknown activity",
			"dlq.topic": "messages", "dlq.partition": "1", "dlq.offset": "1",
		}},
		{Key: []byte("7"), Value: []byte("\xff\xfe"), Headers: map[string]string{
			"dlq.error": "invalid UTF-8 at byte 0", "dlq.kind": "invalid UTF-8",
			"dlq.topic": "messages", "dlq.partition": "1", "dlq.offset": "2",
		}},
	}, dead, "the bad records, unchanged, with why and where from")
	assert.NotContains(t, res.stderr, `"dead_letter"`, "with a topic, no dead letter goes to standard error")
}

// With Kafka input, a dead letter in the -dead-letter file keeps the
// record's key beside its value: as a string when it is UTF-8, in
// key_base64 otherwise; a record without a key has neither.
func TestKafkaDeadLetterFileKeepsTheKey(t *testing.T) {
	b := startBrokerForTest(t, map[string]int32{"messages": 1, "popular_users": 1})
	require.NoError(t, b.Produce("messages",
		kafkatest.Record{Key: []byte("7"), Value: []byte(`{"user_id":7,"activity":"profile.poke"}`)},
		kafkatest.Record{Key: []byte("\xff\x00"), Value: []byte("x")},
		kafkatest.Record{Value: []byte("y")},
		kafkatest.Record{Key: []byte("8"), Value: []byte(`{"user_id":8,"activity":"profile.view"}`)},
	))
	dead := filepath.Join(t.TempDir(), "dead.jsonl")
	_, _, stop := runInBackground(t, "-brokers", b.Addrs()[0], "-json", "-interval", "300ms", "-checkpoint=", "-dlq-topic=", "-dead-letter", dead)
	waitFor(t, time.Minute, "the commit", func() bool { return b.Committed("popularusers", "messages")[0] == 4 })
	require.Equal(t, exitOK, stop().code)

	raw, err := os.ReadFile(dead)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	require.Len(t, lines, 3)
	var got []map[string]any
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		got = append(got, map[string]any{"dead_letter": m["dead_letter"], "key": m["key"], "key_base64": m["key_base64"]})
	}
	assert.Equal(t, []map[string]any{
		{"dead_letter": "messages/0@0", "key": "7", "key_base64": nil},
		{"dead_letter": "messages/0@1", "key": nil, "key_base64": base64.StdEncoding.EncodeToString([]byte("\xff\x00"))},
		{"dead_letter": "messages/0@2", "key": nil, "key_base64": nil},
	}, got)
}
