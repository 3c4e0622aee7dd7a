// Package prom exports what a stream.Pipeline's hooks see as Prometheus
// metrics, with github.com/prometheus/client_golang. It is the only package
// of the module that imports a metrics library: a pipeline that does not
// use it does not link Prometheus, and other systems plug in the same way,
// with their own stream.Hook.
//
// Use it as a hook, and register it where it is scraped:
//
//	m := prom.New()
//	prometheus.MustRegister(m)
//	p := stream.NewPipeline(stream.WithHook(m))
//
// # Metrics
//
// With the default namespace "sluice":
//
//	sluice_batches_total                          batches processed (committed then or, with CommitInterval, by a later batch)
//	sluice_records_total{source,partition}        records read into batches, by source partition
//	sluice_records_skipped_total{source,partition} records read and dropped, as a restored state had counted them
//	sluice_batch_records                          histogram of records per batch
//	sluice_batch_processing_seconds               histogram of cut-to-commit time
//	sluice_batch_scheduling_delay_seconds         histogram of how late batches were cut
//	sluice_last_batch_timestamp_seconds           when the last batch was cut
//	sluice_output_seconds{output}                 histogram of each output's time (a synchronous Kafka sink's produce latency)
//	sluice_checkpoint_seconds                     histogram of the Store's checkpoint time
//	sluice_commit_seconds                         histogram of the source's commit time
//	sluice_flush_seconds                          histogram of the Flusher sinks' time before a commit
//	sluice_consumer_lag{source,partition}         records left to read, for sources that tell (stream.Lagger)
//	sluice_state_keys{state}                      keys in each UpdateStateByKey state, values in each window
//	sluice_state_bytes{state}                     estimated memory of each state and window
//	sluice_restore_in_progress                    1 while durable state is being restored
//	sluice_restore_entries_total                  state entries restored
//	sluice_restore_seconds                        histogram of restore durations
//
// The lag and state gauges hold the partitions and states of the last
// batch only: a partition that moved to another process leaves them.
// Metrics is also a stream.FinalCommitHook: the commit with which Run ends,
// of the batches CommitInterval held back, is timed in the checkpoint,
// commit and flush histograms, and sets the lag and state gauges as a
// batch does, without counting as one.
package prom

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/stream"
)

// Metrics is a stream.Hook, stream.RestoreHook and stream.FinalCommitHook
// that keeps what it is told as Prometheus metrics, and a
// prometheus.Collector that exports them. It is safe for concurrent use:
// the pipeline calls the hooks while Prometheus collects. Give each pipeline a Metrics of its own (told apart
// by ConstLabels): a batch deletes the lag and state gauges its pipeline
// did not set, as stale, and those of another pipeline would look so.
type Metrics struct {
	batches         prometheus.Counter
	records         *prometheus.CounterVec
	skipped         *prometheus.CounterVec
	batchRecords    prometheus.Histogram
	processing      prometheus.Histogram
	delay           prometheus.Histogram
	lastBatch       prometheus.Gauge
	output          *prometheus.HistogramVec
	checkpoint      prometheus.Histogram
	commit          prometheus.Histogram
	flush           prometheus.Histogram
	lag             *prometheus.GaugeVec
	stateKeys       *prometheus.GaugeVec
	stateBytes      *prometheus.GaugeVec
	restoring       prometheus.Gauge
	restoreEntries  prometheus.Counter
	restoreDuration prometheus.Histogram

	mu       sync.Mutex // over the hooks' bookkeeping below
	restored int64      // entries of the restore in progress already counted
	// label values of the lag and state gauges, so that those a batch
	// does not set are deleted, not left stale
	lagLabels, stateLabels liveLabels

	all []prometheus.Collector
}

var (
	_ stream.Hook            = (*Metrics)(nil)
	_ stream.RestoreHook     = (*Metrics)(nil)
	_ stream.FinalCommitHook = (*Metrics)(nil)
	_ prometheus.Collector   = (*Metrics)(nil)
)

// Option configures Metrics.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	namespace string
	labels    prometheus.Labels
	buckets   []float64
}

// Namespace sets the prefix of the metric names (default "sluice").
func Namespace(ns string) Option { return optionFunc(func(c *config) { c.namespace = ns }) }

// ConstLabels adds labels to every metric, to tell pipelines of one
// process apart (pipeline="clicks").
func ConstLabels(l prometheus.Labels) Option {
	return optionFunc(func(c *config) { c.labels = l })
}

// Buckets sets the buckets, in seconds, of the duration histograms
// (default: 1 ms to about 33 s, doubling).
func Buckets(b []float64) Option { return optionFunc(func(c *config) { c.buckets = b }) }

// New returns Metrics configured by opts.
func New(opts ...Option) *Metrics {
	c := config{namespace: "sluice", buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}
	for _, o := range opts {
		o.apply(&c)
	}
	m := &Metrics{}
	counter := func(name, help string) prometheus.Counter {
		x := prometheus.NewCounter(prometheus.CounterOpts{Namespace: c.namespace, Name: name, Help: help, ConstLabels: c.labels})
		m.all = append(m.all, x)
		return x
	}
	gauge := func(name, help string) prometheus.Gauge {
		x := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: c.namespace, Name: name, Help: help, ConstLabels: c.labels})
		m.all = append(m.all, x)
		return x
	}
	gaugeVec := func(name, help string, labels ...string) *prometheus.GaugeVec {
		x := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: c.namespace, Name: name, Help: help, ConstLabels: c.labels}, labels)
		m.all = append(m.all, x)
		return x
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		x := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: c.namespace, Name: name, Help: help, ConstLabels: c.labels, Buckets: buckets})
		m.all = append(m.all, x)
		return x
	}
	m.batches = counter("batches_total", "Batches processed: their outputs ran (with CommitInterval, a later batch may commit them).")
	m.records = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: c.namespace, Name: "records_total",
		Help: "Records read into batches, by source partition (records_skipped_total counts those a restored state had counted).", ConstLabels: c.labels}, []string{"source", "partition"})
	m.all = append(m.all, m.records)
	m.skipped = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: c.namespace, Name: "records_skipped_total",
		Help: "Records read and dropped, as a restored state had counted them, by source partition.", ConstLabels: c.labels}, []string{"source", "partition"})
	m.all = append(m.all, m.skipped)
	m.batchRecords = histogram("batch_records", "Records per batch.", prometheus.ExponentialBuckets(1, 4, 12))
	m.processing = histogram("batch_processing_seconds", "Time from a batch's cut to the end of its commit.", c.buckets)
	m.delay = histogram("batch_scheduling_delay_seconds", "How late batches were cut after their scheduled time.", c.buckets)
	m.lastBatch = gauge("last_batch_timestamp_seconds", "When the last batch was cut, in Unix seconds.")
	m.output = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: c.namespace, Name: "output_seconds",
		Help: "Time each output took per batch (for a synchronous Kafka sink, the produce latency; an asynchronous one's acknowledgements are in flush_seconds).", ConstLabels: c.labels, Buckets: c.buckets}, []string{"output"})
	m.all = append(m.all, m.output)
	m.checkpoint = histogram("checkpoint_seconds", "Time the state store took to checkpoint a batch.", c.buckets)
	m.commit = histogram("commit_seconds", "Time the source took to commit a batch.", c.buckets)
	m.flush = histogram("flush_seconds", "Time the sinks that store asynchronously took to store what was written before a commit.", c.buckets)
	m.lag = gaugeVec("consumer_lag", "Records of the partition left to read after the last commit.", "source", "partition")
	m.stateKeys = gaugeVec("state_keys", "Keys in the state of an UpdateStateByKey, or values held by a window.", "state")
	m.stateBytes = gaugeVec("state_bytes", "Estimated memory of the state of an UpdateStateByKey or of a window.", "state")
	m.restoring = gauge("restore_in_progress", "1 while durable state is being restored.")
	m.restoreEntries = counter("restore_entries_total", "State entries restored from the store.")
	m.restoreDuration = histogram("restore_seconds", "Time restores of durable state took.", prometheus.ExponentialBuckets(0.01, 2, 16))
	return m
}

// BatchDone implements stream.Hook.
func (m *Metrics) BatchDone(s stream.BatchStats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches.Inc()
	m.batchRecords.Observe(float64(s.Info.Records))
	m.processing.Observe(s.Processing.Seconds())
	m.delay.Observe(s.SchedulingDelay().Seconds())
	m.lastBatch.Set(float64(s.Info.Time.UnixNano()) / 1e9)
	for _, o := range s.Outputs {
		m.output.WithLabelValues(o.Name).Observe(o.Duration.Seconds())
	}
	m.commitDone(s.Checkpoint, s.Commit, s.Flush, s.Inputs, s.State)
}

// FinalCommit implements stream.FinalCommitHook: the commit with which
// Run ends is timed, and sets the lag and state gauges, but is not a
// batch.
func (m *Metrics) FinalCommit(s stream.CommitStats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.commitDone(s.Checkpoint, s.Commit, s.Flush, s.Inputs, s.State)
}

// commitDone keeps the times of a commit (0: none), the records read of
// inputs and their lag, and the size of the state after it. m.mu is held.
func (m *Metrics) commitDone(checkpoint, commit, flush time.Duration, inputs []stream.PartitionStats, state []stream.StateStats) {
	if checkpoint > 0 {
		m.checkpoint.Observe(checkpoint.Seconds())
	}
	if commit > 0 {
		m.commit.Observe(commit.Seconds())
	}
	if flush > 0 {
		m.flush.Observe(flush.Seconds())
	}
	for _, in := range inputs {
		p := strconv.Itoa(int(in.Partition))
		m.records.WithLabelValues(in.Source, p).Add(float64(in.Records))
		if in.Skipped > 0 {
			m.skipped.WithLabelValues(in.Source, p).Add(float64(in.Skipped))
		}
		if in.Lag >= 0 {
			m.lag.WithLabelValues(in.Source, p).Set(float64(in.Lag))
			m.lagLabels.set(in.Source, p)
		}
	}
	m.lagLabels.forgetUnset(m.lag)
	for _, st := range state {
		m.stateKeys.WithLabelValues(st.Name).Set(float64(st.Keys))
		m.stateBytes.WithLabelValues(st.Name).Set(float64(st.Bytes))
		m.stateLabels.set(st.Name)
	}
	m.stateLabels.forgetUnset(m.stateKeys, m.stateBytes)
}

// liveLabels are the label values of gauges set in a batch and in the one
// before it.
type liveLabels struct{ before, now map[string][]string }

// set notes the label values of a gauge set in this batch.
func (l *liveLabels) set(values ...string) {
	if l.now == nil {
		l.before, l.now = map[string][]string{}, map[string][]string{}
	}
	l.now[strings.Join(values, "\x00")] = values
}

// forgetUnset deletes from vecs the label values set in the batch before
// and not in this one, and starts the next batch.
func (l *liveLabels) forgetUnset(vecs ...*prometheus.GaugeVec) {
	for k, values := range l.before {
		if _, ok := l.now[k]; !ok {
			for _, v := range vecs {
				v.DeleteLabelValues(values...)
			}
		}
	}
	l.before, l.now = l.now, l.before
	clear(l.now)
}

// RestoreProgress implements stream.RestoreHook.
func (m *Metrics) RestoreProgress(s stream.RestoreStats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.restoreEntries.Add(float64(s.Entries - m.restored))
	m.restored = s.Entries
	if !s.Done {
		m.restoring.Set(1)
		return
	}
	m.restoring.Set(0)
	m.restored = 0
	m.restoreDuration.Observe(s.Elapsed.Seconds())
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.all {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.all {
		c.Collect(ch)
	}
}
