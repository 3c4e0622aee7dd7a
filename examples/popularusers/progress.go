package main

import (
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/internal/progress"
	"github.com/sluicehq/sluice/stream"
)

// progressEvery is how often a long input logs its progress.
const progressEvery = 5 * time.Second

// fileProgress logs how far the pipeline is in an input file: records done,
// rate, and, for a regular file, the share done and an ETA. It is a
// stream.Hook: it runs on the run loop, which polls the file, between
// batches.
type fileProgress struct {
	file  interface{ Progress() (read, size int64) }
	log   *slog.Logger
	start time.Time
	last  time.Time
	n     int64 // records
	every time.Duration
}

func newFileProgress(file interface{ Progress() (read, size int64) }, log *slog.Logger) *fileProgress {
	now := time.Now()
	return &fileProgress{file: file, log: log, start: now, last: now, every: progressEvery}
}

func (p *fileProgress) BatchDone(s stream.BatchStats) {
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
	attrs := []any{"records", p.n, "records/s", int64(rate), "elapsed", elapsed.Round(time.Second)}
	p.log.Info("progress", append(attrs, progress.Attrs(float64(read)/float64(size), elapsed)...)...)
}
