package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/sink/exchange"
)

// monitorURL waits for the run to log where it serves its metrics and
// page, and returns the page's URL ("http://host:port/").
func monitorURL(t *testing.T, stderr *buffer) string {
	t.Helper()
	re := regexp.MustCompile(`msg="serving metrics and the live page" page=(http://\S+/)`)
	var url string
	waitFor(t, 30*time.Second, "the metrics address in the log", func() bool {
		if m := re.FindStringSubmatch(stderr.String()); m != nil {
			url = m[1]
		}
		return url != ""
	})
	return url
}

// get returns the body of url, failing t on any error.
func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", url, body)
	return body
}

// scrape reads and parses the Prometheus text exposition at url.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fs, err := p.TextToMetricFamilies(strings.NewReader(string(get(t, url))))
	require.NoError(t, err)
	return fs
}

// sumOf adds the values of a counter or gauge family over its label sets
// that have the given labels (name, value, ...).
func sumOf(fs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	total := 0.0
	f := fs[name]
	if f == nil {
		return 0
	}
	for _, m := range f.GetMetric() {
		if !hasLabels(m, labels...) {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

func hasLabels(m *dto.Metric, labels ...string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
		}
		if !found {
			return false
		}
	}
	return true
}

// events returns n good events of users from..from+users-1, keyed and
// partitioned by user id as produce does. Every user has as many events;
// users that are multiples of 37 score 3 a time, of 11 score 2, others 1,
// so that a few users stand out.
func events(n, from, users int, partitions int32) []kafkatest.Record {
	var recs []kafkatest.Record
	for i := range n {
		user := int64(from + i%users)
		activity := "profile.view"
		switch {
		case user%37 == 0:
			activity = "message.private"
		case user%11 == 0:
			activity = "profile.picture.like"
		}
		recs = append(recs, kafkatest.Record{
			Partition: int32(user % int64(partitions)),
			Key:       []byte(fmt.Sprint(user)),
			Value:     []byte(fmt.Sprintf(`{"user_id":%d,"activity":%q}`, user, activity)),
		})
	}
	return recs
}

// The metrics of a run, scraped while it runs, count what was fed: every
// record by partition, the bad ones by kind, the users in state, the
// threshold the run printed; the lag falls to zero once all is read.
func TestMetricsCountTheRecordsFed(t *testing.T) {
	b := startBrokerForTest(t, map[string]int32{"messages": 4, "popular_users": 1, "messages.dlq": 1})
	first := events(2000, 1000, 100, 4)
	require.NoError(t, b.Produce("messages", first...))
	_, stderr, stop := runInBackground(t, "-brokers", b.Addrs()[0], "-json", "-interval", "200ms",
		"-sketch", "exact", "-checkpoint", t.TempDir(), "-metrics-addr", "127.0.0.1:0")
	url := monitorURL(t, stderr)

	// fed waits until the metrics show want records read and nothing left
	// to read, and returns the scrape.
	fed := func(want int) map[string]*dto.MetricFamily {
		t.Helper()
		var fs map[string]*dto.MetricFamily
		waitFor(t, time.Minute, fmt.Sprintf("%d records in the metrics", want), func() bool {
			fs = scrape(t, url+"metrics")
			return sumOf(fs, "sluice_records_total") == float64(want) &&
				len(fs["sluice_consumer_lag"].GetMetric()) == 4 && sumOf(fs, "sluice_consumer_lag") == 0
		})
		return fs
	}
	fs := fed(2000)
	for p := range 4 {
		assert.Equal(t, 500.0, sumOf(fs, "sluice_records_total", "source", "messages", "partition", fmt.Sprint(p)), "partition %d", p)
	}
	assert.Equal(t, 100.0, sumOf(fs, "sluice_state_keys", "state", "totals"))
	assert.Equal(t, 100.0, sumOf(fs, "popularusers_users"))
	assert.Zero(t, sumOf(fs, "popularusers_bad_records_total"))

	// More, with bad records among them, while it runs.
	second := events(1000, 1100, 50, 4)
	second = append(second,
		kafkatest.Record{Partition: 1, Key: []byte("7"), Value: []byte(`{"user_id":7,"activity":"profile.poke"}`)},
		kafkatest.Record{Partition: 1, Key: []byte("7"), Value: []byte(`{"user_id":7,"activity":"profile.poke"}`)},
		kafkatest.Record{Partition: 2, Key: []byte("x"), Value: []byte(`{"user_id":"x"`)},
	)
	require.NoError(t, b.Produce("messages", second...))
	fs = fed(3003)
	assert.Equal(t, 2.0, sumOf(fs, "popularusers_bad_records_total", "kind", "unknown activity"))
	assert.Equal(t, 3.0, sumOf(fs, "popularusers_bad_records_total"))
	assert.Equal(t, 150.0, sumOf(fs, "sluice_state_keys", "state", "totals"))
	assert.Positive(t, sumOf(fs, "sluice_state_bytes", "state", "totals"))
	batches := sumOf(fs, "sluice_batches_total")
	assert.Positive(t, batches)
	for _, h := range []string{"sluice_batch_processing_seconds", "sluice_batch_scheduling_delay_seconds", "sluice_batch_records"} {
		assert.Equal(t, batches, sumOf(fs, h), "%s: one sample per batch", h)
	}
	// Batches of 200 ms commit at most once per -commit-interval (1 s).
	commits := sumOf(fs, "sluice_commit_seconds")
	assert.Positive(t, commits)
	assert.Less(t, commits, batches, "fewer commits than batches")
	for _, h := range []string{"sluice_checkpoint_seconds", "sluice_flush_seconds"} {
		assert.Equal(t, commits, sumOf(fs, h), "%s: one sample per commit", h)
	}
	assert.Equal(t, batches, sumOf(fs, "sluice_output_seconds", "output", "to(popular)"), "produce latency of every batch")
	assert.Equal(t, 1.0, sumOf(fs, "sluice_restore_seconds"), "the state was restored once, at the start")
	assert.Contains(t, fs, "go_goroutines", "the Go runtime's metrics too")

	// The page's data agrees with what the run printed.
	var st status
	require.NoError(t, json.Unmarshal(get(t, url+"status"), &st))
	res := stop()
	require.Equal(t, exitOK, res.code)
	lines := parseLines(t, res.stdout)
	var last batchLine
	for _, l := range lines {
		if l.Batch == st.Batch {
			last = l
		}
	}
	require.Equal(t, st.Batch, last.Batch, "the page's batch was printed")
	require.NotNil(t, st.Threshold)
	assert.Equal(t, *last.Threshold, *st.Threshold)
	assert.Equal(t, last.Users, int(st.Users))
	assert.Equal(t, len(last.Popular), st.Popular)
	require.NotEmpty(t, st.Top)
	assert.Equal(t, last.Popular[0].UserID, st.Top[0].UserID)
	assert.Equal(t, int64(3003), st.Records)
	assert.Equal(t, int64(3), st.Bad)
	assert.NotEmpty(t, st.Batches)

	_, err := http.Get(url + "metrics")
	assert.Error(t, err, "the server stops with the run")
}

// Without -metrics-addr, nothing listens and the log says nothing of it.
func TestMetricsOffByDefault(t *testing.T) {
	res := runMain(t, t.Context(), "1,profile.view\n", "-input", "-")
	require.Equal(t, exitOK, res.code)
	assert.NotContains(t, res.stderr, "metrics")
}

func TestLogFlags(t *testing.T) {
	res := runMain(t, t.Context(), "1,profile.view\n", "-input", "-", "-log-format", "json", "-log-level", "debug")
	require.Equal(t, exitOK, res.code)
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	require.NotEmpty(t, lines)
	debug := false
	for _, l := range lines {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rec), "a JSON object per line: %s", l)
		debug = debug || rec["level"] == "DEBUG"
	}
	assert.True(t, debug, "-log-level debug shows the engine's batch lines")

	res = runMain(t, t.Context(), "1,profile.view\n", "-input", "-", "-log-level", "warn")
	require.Equal(t, exitOK, res.code)
	assert.Empty(t, res.stderr, "nothing below warn")

	res = runMain(t, t.Context(), "", "-log-format", "xml")
	assert.Equal(t, exitUsage, res.code)
	assert.Contains(t, res.stderr, `-log-format "xml": must be text or json`)
}

// With -digest-topic, the metrics count the partials read and left out
// of the threshold, by reason: here one of the other sketch, left on the
// topic by an earlier run.
func TestMetricsCountTheExchangePartialsLeftOut(t *testing.T) {
	b := startBrokerForTest(t, map[string]int32{"messages": 2, "popular_users": 1, "messages.dlq": 1})
	x, err := exchange.New(exchange.Config{Brokers: b.Addrs(), Topic: "digests", Member: "before", Kind: "tdigest", Input: "messages"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	require.NoError(t, x.Publish(ctx, []exchange.Partial{{Partition: 1, Value: []byte("a t-digest"), Batch: 9}}))
	cancel()
	require.NoError(t, <-done)
	require.NoError(t, x.Close())

	require.NoError(t, b.Produce("messages", events(200, 1000, 20, 2)...))
	_, stderr, stop := runInBackground(t, "-brokers", b.Addrs()[0], "-json", "-interval", "200ms", "-sketch", "exact",
		"-state", "changelog", "-digest-topic", "digests", "-metrics-addr", "127.0.0.1:0")
	url := monitorURL(t, stderr)
	const name = "popularusers_exchange_partials_left_out_total"
	var fs map[string]*dto.MetricFamily
	waitFor(t, time.Minute, "the partial left out in the metrics", func() bool {
		fs = scrape(t, url+"metrics")
		return sumOf(fs, name, "reason", "other_kind_or_input") == 1
	})
	assert.Len(t, fs[name].GetMetric(), 3, "every reason, from the start")
	assert.Zero(t, sumOf(fs, name, "reason", "late"))
	assert.Zero(t, sumOf(fs, name, "reason", "undecodable"))
	assert.Equal(t, exitOK, stop().code)
}
