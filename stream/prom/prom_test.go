package prom_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/checkpoint"
	"github.com/sluicehq/sluice/stream/prom"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func sum(_ int, values []int, total int, _ bool) (int, bool) {
	for _, v := range values {
		total += v
	}
	return total, true
}

// lagging is a slice source that tells the lag: the records after the
// last commit.
type lagging struct {
	*source.Slice[int]
	perPartition int64
}

func (l *lagging) Lag(partition int32) (int64, bool) {
	for _, o := range l.Committed() {
		if o.Partition == partition {
			return l.perPartition - o.Next, true
		}
	}
	return l.perPartition, true
}

// families gathers reg into a map by metric name.
func families(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	got, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]*dto.MetricFamily{}
	for _, f := range got {
		out[f.GetName()] = f
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestMetricsOfARun(t *testing.T) {
	values := make([]int, 1000)
	for i := range values {
		values[i] = i
	}
	m := prom.New(prom.ConstLabels(prometheus.Labels{"pipeline": "test"}))
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(m))

	src := &lagging{Slice: source.NewSlice("nums", values, 4), perPartition: 250}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(300), stream.WithHook(m))
	pairs := stream.Map(stream.From(p, src), func(v int) stream.Pair[int, int] { return stream.KV(v%100, 1) })
	totals := stream.UpdateStateByKey(pairs, sum).Named("totals")
	stream.To(totals, sink.NewMemory[stream.Pair[int, int]]())
	require.NoError(t, p.Run(context.Background()))

	fs := families(t, reg)
	assert.Equal(t, 4.0, fs["sluice_batches_total"].GetMetric()[0].GetCounter().GetValue(), "1000 records in batches of 300")

	var records float64
	for _, r := range fs["sluice_records_total"].GetMetric() {
		assert.Equal(t, "nums", label(r, "source"))
		assert.Equal(t, "test", label(r, "pipeline"))
		assert.Equal(t, 250.0, r.GetCounter().GetValue(), "partition %s", label(r, "partition"))
		records += r.GetCounter().GetValue()
	}
	assert.Equal(t, 1000.0, records)
	assert.Len(t, fs["sluice_records_total"].GetMetric(), 4)

	h := fs["sluice_batch_records"].GetMetric()[0].GetHistogram()
	assert.Equal(t, uint64(4), h.GetSampleCount())
	assert.Equal(t, 1000.0, h.GetSampleSum())
	for _, name := range []string{"sluice_batch_processing_seconds", "sluice_batch_scheduling_delay_seconds", "sluice_commit_seconds"} {
		assert.Equal(t, uint64(4), fs[name].GetMetric()[0].GetHistogram().GetSampleCount(), name)
	}
	out := fs["sluice_output_seconds"].GetMetric()
	require.Len(t, out, 1)
	assert.Equal(t, "to(totals)", label(out[0], "output"))
	assert.Equal(t, uint64(4), out[0].GetHistogram().GetSampleCount())

	for _, l := range fs["sluice_consumer_lag"].GetMetric() {
		assert.Zero(t, l.GetGauge().GetValue(), "all read: partition %s", label(l, "partition"))
	}
	assert.Len(t, fs["sluice_consumer_lag"].GetMetric(), 4)
	keys := fs["sluice_state_keys"].GetMetric()
	require.Len(t, keys, 1)
	assert.Equal(t, "totals", label(keys[0], "state"))
	assert.Equal(t, 100.0, keys[0].GetGauge().GetValue())
	assert.Greater(t, fs["sluice_state_bytes"].GetMetric()[0].GetGauge().GetValue(), 100.0*16)
	assert.Greater(t, fs["sluice_last_batch_timestamp_seconds"].GetMetric()[0].GetGauge().GetValue(), float64(time.Now().Add(-time.Minute).Unix()))

	// The text exposition is what Prometheus scrapes.
	n, err := testutil.GatherAndCount(reg, "sluice_records_total")
	require.NoError(t, err)
	assert.Equal(t, 4, n)
}

// A run restored from a checkpoint reads again the records after the
// source's last commit, and drops those the state had counted: they are
// in records_skipped_total, not in records_total.
func TestMetricsOfSkippedRecords(t *testing.T) {
	dir := t.TempDir()
	values := make([]int, 1200)
	for i := range values {
		values[i] = i
	}
	run := func(n int) map[string]*dto.MetricFamily {
		t.Helper()
		store, err := checkpoint.Open(dir)
		require.NoError(t, err)
		defer store.Close()
		m := prom.New()
		reg := prometheus.NewPedanticRegistry()
		require.NoError(t, reg.Register(m))
		p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(300), stream.WithStore(store), stream.WithHook(m))
		pairs := stream.Map(stream.From(p, source.NewSlice("nums", values[:n], 2)), func(v int) stream.Pair[int, int] { return stream.KV(v%100, 1) })
		stream.To(stream.UpdateStateByKey(pairs, sum).Named("totals"), sink.NewMemory[stream.Pair[int, int]]())
		require.NoError(t, p.Run(context.Background()))
		return families(t, reg)
	}
	counts := func(f *dto.MetricFamily) map[string]float64 {
		got := map[string]float64{}
		for _, r := range f.GetMetric() {
			got[label(r, "source")+"/"+label(r, "partition")] = r.GetCounter().GetValue()
		}
		return got
	}
	fs := run(1000)
	assert.Nil(t, fs["sluice_records_skipped_total"], "nothing restored")
	// A slice source's commits are not kept: the second run reads it
	// from its start, and the state skips the first 1000 records.
	fs = run(1200)
	assert.Equal(t, map[string]float64{"nums/0": 500, "nums/1": 500}, counts(fs["sluice_records_skipped_total"]))
	assert.Equal(t, map[string]float64{"nums/0": 100, "nums/1": 100}, counts(fs["sluice_records_total"]))
}

// cancelAfter cancels a run once its batch id is done.
type cancelAfter struct {
	id     int64
	cancel context.CancelFunc
}

func (c cancelAfter) BatchDone(s stream.BatchStats) {
	if s.Info.ID == c.id {
		c.cancel()
	}
}

// The commit with which a run ends, of the batches CommitInterval held
// back, comes after the last batch: the lag gauges and the commit time
// show it.
func TestMetricsOfTheCommitThatEndsARun(t *testing.T) {
	values := make([]int, 1000)
	m := prom.New()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(m))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &lagging{Slice: source.NewSlice("nums", values, 4), perPartition: 250}
	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(300), stream.CommitInterval(time.Hour),
		stream.WithHook(m), stream.WithHook(cancelAfter{2, cancel}))
	stream.ForEachBatch(stream.From(p, src), func(context.Context, *stream.Batch[int]) error { return nil })
	require.NoError(t, p.Run(ctx))

	fs := families(t, reg)
	assert.Equal(t, 2.0, fs["sluice_batches_total"].GetMetric()[0].GetCounter().GetValue(), "the final commit is not a batch")
	assert.Equal(t, uint64(2), fs["sluice_commit_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(), "the first batch's commit and the final one")
	assert.Equal(t, uint64(2), fs["sluice_batch_processing_seconds"].GetMetric()[0].GetHistogram().GetSampleCount())
	lags := fs["sluice_consumer_lag"].GetMetric()
	assert.Len(t, lags, 4)
	for _, l := range lags {
		assert.Equal(t, 100.0, l.GetGauge().GetValue(), "600 records, 150 a partition, committed as the run ended: partition %s", label(l, "partition"))
	}
}

func TestGaugesForgetWhatTheLastBatchHadNot(t *testing.T) {
	m := prom.New(prom.Namespace("x"))
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(m))
	m.BatchDone(stream.BatchStats{Inputs: []stream.PartitionStats{{Source: "in", Partition: 0, Lag: 5}, {Source: "in", Partition: 1, Lag: 7}}})
	m.BatchDone(stream.BatchStats{Inputs: []stream.PartitionStats{{Source: "in", Partition: 1, Lag: 3}}})
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP x_consumer_lag Records of the partition left to read after the last commit.
# TYPE x_consumer_lag gauge
x_consumer_lag{partition="1",source="in"} 3
`), "x_consumer_lag")
	assert.NoError(t, err, "partition 0 moved away: its lag is gone, not stale")
}

func TestRestoreMetrics(t *testing.T) {
	m := prom.New()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(m))
	m.RestoreProgress(stream.RestoreStats{Entries: 4096, Elapsed: time.Second})
	assert.Equal(t, 1.0, families(t, reg)["sluice_restore_in_progress"].GetMetric()[0].GetGauge().GetValue())
	m.RestoreProgress(stream.RestoreStats{Entries: 10000, Elapsed: 2 * time.Second, Done: true})
	fs := families(t, reg)
	assert.Equal(t, 0.0, fs["sluice_restore_in_progress"].GetMetric()[0].GetGauge().GetValue())
	assert.Equal(t, 10000.0, fs["sluice_restore_entries_total"].GetMetric()[0].GetCounter().GetValue(), "each entry counted once")
	assert.Equal(t, uint64(1), fs["sluice_restore_seconds"].GetMetric()[0].GetHistogram().GetSampleCount())
	m.RestoreProgress(stream.RestoreStats{Entries: 5, Done: true})
	assert.Equal(t, 10005.0, families(t, reg)["sluice_restore_entries_total"].GetMetric()[0].GetCounter().GetValue())
}

// The hooks of one Metrics may run on several goroutines at once, as its
// doc says (run with -race).
func TestHooksAreSafeForConcurrentUse(t *testing.T) {
	m := prom.New()
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(m))
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := range 500 {
				m.BatchDone(stream.BatchStats{
					Inputs: []stream.PartitionStats{{Source: "in", Partition: int32(g*1000 + i%7), Lag: 1}},
					State:  []stream.StateStats{{Name: "s"}}})
			}
		})
	}
	wg.Go(func() {
		for i := range 500 {
			m.RestoreProgress(stream.RestoreStats{Entries: int64(i), Done: i == 499})
		}
	})
	wg.Go(func() {
		for range 50 {
			_, err := reg.Gather()
			assert.NoError(t, err)
		}
	})
	wg.Wait()
}
