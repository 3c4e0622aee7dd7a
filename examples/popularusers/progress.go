package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/stream"
)

// progressEvery is how often a long input logs its progress.
const progressEvery = 5 * time.Second

// progress logs how far the pipeline is in an input file: records done,
// rate, and, for a regular file, the share done and an ETA. It is a
// stream.Hook: it runs on the run loop, which polls the file, between
// batches.
type progress struct {
	file  interface{ Progress() (read, size int64) }
	log   *slog.Logger
	start time.Time
	last  time.Time
	n     int64 // records
	every time.Duration
}

func newProgress(file interface{ Progress() (read, size int64) }, log *slog.Logger) *progress {
	now := time.Now()
	return &progress{file: file, log: log, start: now, last: now, every: progressEvery}
}

func (p *progress) BatchDone(s stream.BatchStats) {
	p.n += int64(s.Info.Records)
	now := time.Now()
	if now.Sub(p.last) < p.every {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start)
	rate := float64(p.n) / elapsed.Seconds()
	read, size := p.file.Progress()
	if size <= 0 || read > size {
		p.log.Info("progress", "records", p.n, "records/s", int64(rate), "elapsed", elapsed.Round(time.Second))
		return
	}
	done := float64(read) / float64(size)
	var eta time.Duration
	if done > 0 {
		eta = time.Duration(float64(elapsed) * (1 - done) / done)
	}
	p.log.Info("progress", "records", p.n, "records/s", int64(rate), "done", formatPercent(done),
		"elapsed", elapsed.Round(time.Second), "eta", eta.Round(time.Second))
}

// formatPercent formats a share as "42.0%".
func formatPercent(x float64) string { return fmt.Sprintf("%.1f%%", 100*x) }
