package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/source"
)

// run writes random events to Kafka until -count events are acknowledged
// or ctx is cancelled.
func (c *produceConfig) run(ctx context.Context, log *slog.Logger, _ io.Reader, _, _ io.Writer) error {
	seed := c.seed
	if seed == 0 {
		seed = newSeed()
	}
	gen := source.GeneratorConfig{Name: "producer", Seed: seed, Start: c.start, Users: c.users, Count: c.count, Rate: c.rate}
	p, out, err := newProducer(ctx, gen, c.brokers, c.topic, c.connectTimeout, log)
	if err != nil {
		return err
	}
	log.Info("producing events", "brokers", fmt.Sprint(c.brokers), "topic", c.topic, "rate", c.rate, "count", c.count,
		"users", fmt.Sprintf("%d..%d", c.start, c.start+c.users), "seed", seed)
	start := time.Now()
	err = p.Run(ctx)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	log.Info("produced", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// newSeed returns a random seed, never 0.
func newSeed() uint64 { return rand.Uint64() | 1 }

// run writes the static data set. The file appears whole or not at all: it
// is written under a temporary name and renamed when complete.
func (c *generateConfig) run(ctx context.Context, log *slog.Logger, _ io.Reader, stdout, _ io.Writer) (err error) {
	gen, err := source.NewGenerator(source.GeneratorConfig{Seed: c.seed, Start: c.start, Users: c.users})
	if err != nil {
		return err
	}
	w, commit, abort, err := createOutput(c.out, stdout)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			abort()
		}
	}()
	start := time.Now()
	bw := bufio.NewWriterSize(w, 1<<20)
	line := make([]byte, 0, 64)
	for i := range c.rows {
		if i%(1<<16) == 0 && ctx.Err() != nil {
			return fmt.Errorf("interrupted after %d of %d rows; %s not written", i, c.rows, c.out)
		}
		line = score.AppendCSV(line[:0], gen.Next())
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return fmt.Errorf("write %s: %w", c.out, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", c.out, err)
	}
	if err := commit(); err != nil {
		return err
	}
	log.Info("generated", "file", c.out, "rows", c.rows, "users", fmt.Sprintf("%d..%d", c.start, c.start+c.users),
		"seed", c.seed, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// createOutput opens path for writing ("-": stdout). commit makes the
// written file appear at path; abort removes it.
func createOutput(path string, stdout io.Writer) (w io.Writer, commit func() error, abort func(), err error) {
	if path == "-" {
		return stdout, func() error { return nil }, func() {}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create %s: %w", path, err)
	}
	commit = func() error {
		// CreateTemp makes the file private; the data set is not.
		if err := f.Chmod(0o644); err != nil {
			f.Close()
			return fmt.Errorf("create %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := os.Rename(f.Name(), path); err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
		return nil
	}
	abort = func() {
		f.Close()
		os.Remove(f.Name())
	}
	return f, commit, abort, nil
}

// run runs an embedded broker until ctx is cancelled.
func (c *brokerConfig) run(ctx context.Context, log *slog.Logger, _ io.Reader, stdout, stderr io.Writer) error {
	topics := map[string]int32{defaultTopic: int32(c.partitions), defaultOutTopic: 1, defaultTopic + dlqSuffix: 1}
	b, err := startBroker(c.listen, false, c.dataDir, topics, log, stderr)
	if err != nil {
		return err
	}
	defer b.Close()
	log.Info("Kafka broker running; stop it with Ctrl-C", "addr", b.Addrs()[0], "topics", fmt.Sprint(topics), "data dir", c.dataDir)
	// The address alone on stdout, for whoever started it on port 0.
	fmt.Fprintln(stdout, b.Addrs()[0])
	<-ctx.Done()
	log.Info("Kafka broker stopping")
	return nil
}
