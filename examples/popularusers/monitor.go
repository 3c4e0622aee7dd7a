package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/sink/exchange"
	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/prom"
)

// The live page: plain HTML and script, no build step.
//
//go:embed page.html
var page []byte

// How much the live page shows.
const (
	historyFor = 10 * time.Minute // of batches
	historyMax = 4000             // batches, at most
	topShown   = 20               // users
)

// monitor is what -metrics-addr serves: the Prometheus metrics on
// /metrics, the live page on /, and the page's data on /status. It is the
// pipeline's stream.Hook, and the reporter tells it each batch's result.
// Its methods are safe for concurrent use: the pipeline calls them while
// the server reads.
type monitor struct {
	engine    *prom.Metrics
	bad       *prometheus.CounterVec
	threshold prometheus.Gauge
	users     prometheus.Gauge
	popular   prometheus.Gauge

	mu      sync.Mutex
	history []point // oldest first
	status  status
	prevCut time.Time

	reg    *prometheus.Registry
	srv    *http.Server
	addr   string
	served chan struct{}
}

var (
	_ stream.Hook            = (*monitor)(nil)
	_ stream.RestoreHook     = (*monitor)(nil)
	_ stream.FinalCommitHook = (*monitor)(nil)
)

// point is one batch on the live page's charts.
type point struct {
	Batch        int64   `json:"batch"`
	Time         int64   `json:"t"` // cut, Unix milliseconds
	Records      int     `json:"records"`
	Rate         float64 `json:"rate"` // records per second since the previous cut
	ProcessingMs float64 `json:"processing_ms"`
	DelayMs      float64 `json:"delay_ms"`
}

// status is the page's data.
type status struct {
	Batch     int64     `json:"batch"`
	Time      int64     `json:"t"`
	Threshold *float64  `json:"threshold"` // null until there are users
	Quantile  float64   `json:"quantile"`
	Users     uint64    `json:"users"`
	Popular   int       `json:"popular"`
	Top       []topUser `json:"top"`
	Records   int64     `json:"records"`
	Bad       int64     `json:"bad"`
	Restoring bool      `json:"restoring"`
	Restored  int64     `json:"restored"`
	Batches   []point   `json:"batches"`
}

// topUser is a user and total as the page shows them.
type topUser struct {
	UserID int64 `json:"user_id"`
	Score  int64 `json:"score"`
}

// startMonitor listens on addr and serves until close; limit is the
// pipeline's -limit, the quantile the page names before the first batch.
func startMonitor(addr string, limit float64, log *slog.Logger) (*monitor, error) {
	m := &monitor{engine: prom.New()}
	m.status.Quantile = limit
	const ns = "popularusers"
	m.bad = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "bad_records_total",
		Help: "Records that did not decode, sent to the dead letters, by kind."}, []string{"kind"})
	m.threshold = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "threshold",
		Help: "The last batch's threshold: the -limit quantile of all totals; NaN with no users."})
	m.users = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "users", Help: "Users in the state (in the last batch's sketch)."})
	m.popular = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "popular_users", Help: "Users above the threshold in the last batch."})
	m.threshold.Set(math.NaN())
	for k := 1; k < score.NumKinds; k++ {
		m.bad.WithLabelValues(kindLabel(k)) // present at 0 from the start
	}
	reg := prometheus.NewRegistry()
	m.reg = reg
	for _, c := range []prometheus.Collector{
		m.engine, m.bad, m.threshold, m.users, m.popular,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	mux.HandleFunc("GET /status", m.serveStatus)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-metrics-addr: %w", err)
	}
	m.addr = ln.Addr().String()
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	m.served = make(chan struct{})
	go func() {
		defer close(m.served)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("serving metrics and the live page", "page", "http://"+m.addr+"/", "metrics", "http://"+m.addr+"/metrics")
	return m, nil
}

// watchExchange adds to the metrics the digest exchange's counts of the
// partials it read and left out, by reason; undecodable counts those that
// did not decode as this process's sketch.
func (m *monitor) watchExchange(x *exchange.Kafka, undecodable *atomic.Int64) error {
	for _, r := range []struct {
		reason string
		count  func() int64
	}{
		{"undecodable", func() int64 { return x.Skipped() + undecodable.Load() }},
		{"late", x.Late},
		{"other_kind_or_input", x.Mismatched},
	} {
		c := prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "popularusers", Name: "exchange_partials_left_out_total",
			Help:        "Partials read from the digest topic and left out of the threshold, by reason: a record that does not decode as a partial or as this process's sketch, a partial of an earlier owner sent late, or one of another -sketch or -topic.",
			ConstLabels: prometheus.Labels{"reason": r.reason}}, func() float64 { return float64(r.count()) })
		if err := m.reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

// close stops the server, waiting a little for scrapes in progress.
func (m *monitor) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if m.srv.Shutdown(ctx) != nil {
		m.srv.Close()
	}
	<-m.served
}

// BatchDone implements stream.Hook.
func (m *monitor) BatchDone(s stream.BatchStats) {
	m.engine.BatchDone(s)
	m.mu.Lock()
	defer m.mu.Unlock()
	p := point{
		Batch:        s.Info.ID,
		Time:         s.Info.Time.UnixMilli(),
		Records:      s.Info.Records,
		ProcessingMs: float64(s.Processing) / 1e6,
		DelayMs:      float64(s.SchedulingDelay()) / 1e6,
	}
	if !m.prevCut.IsZero() {
		if d := s.Info.Time.Sub(m.prevCut); d > 0 {
			p.Rate = float64(s.Info.Records) / d.Seconds()
		}
	}
	m.prevCut = s.Info.Time
	m.status.Records += int64(s.Info.Records)
	old := 0
	for old < len(m.history) && (len(m.history)-old >= historyMax || s.Info.Time.Sub(time.UnixMilli(m.history[old].Time)) > historyFor) {
		old++
	}
	m.history = append(m.history[old:], p)
}

// FinalCommit implements stream.FinalCommitHook: the metrics of the
// commit with which the run ends (-commit-interval).
func (m *monitor) FinalCommit(s stream.CommitStats) { m.engine.FinalCommit(s) }

// RestoreProgress implements stream.RestoreHook.
func (m *monitor) RestoreProgress(s stream.RestoreStats) {
	m.engine.RestoreProgress(s)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status.Restoring, m.status.Restored = !s.Done, s.Entries
}

// addBad counts a batch's bad records by kind.
func (m *monitor) addBad(kinds []int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, n := range kinds {
		if n == 0 {
			continue
		}
		m.status.Bad += int64(n)
		m.bad.WithLabelValues(kindLabel(k)).Add(float64(n))
	}
}

// setResult notes a batch's threshold and popular users, sorted by score.
func (m *monitor) setResult(batch int64, c cut, popular []total) {
	m.threshold.Set(c.Threshold)
	m.users.Set(float64(c.Users))
	m.popular.Set(float64(len(popular)))
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &m.status
	s.Batch, s.Time, s.Quantile, s.Users, s.Popular = batch, c.Time.UnixMilli(), c.Quantile, c.Users, len(popular)
	s.Threshold = nil
	if !math.IsNaN(c.Threshold) {
		t := c.Threshold
		s.Threshold = &t
	}
	s.Top = s.Top[:0]
	for _, t := range popular[:min(topShown, len(popular))] {
		s.Top = append(s.Top, topUser{t.Key, t.Value})
	}
}

func (m *monitor) serveStatus(w http.ResponseWriter, _ *http.Request) {
	m.mu.Lock()
	s := m.status
	s.Batches = m.history
	if s.Batches == nil { // before the first batch (a restore): [], not null
		s.Batches = []point{}
	}
	if s.Top == nil {
		s.Top = []topUser{}
	}
	body, err := json.Marshal(s)
	m.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}
