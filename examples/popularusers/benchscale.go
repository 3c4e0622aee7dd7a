package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/sink/exchange"
)

// scaleFigures are what a run of the pipeline as k processes measured.
type scaleFigures struct {
	rate      float64 // records/s, from the first batch with records to the last record
	cpuPerRec float64 // CPU seconds of all the processes, over the records
	partial   float64 // bytes of a partition's partial digest, on average
}

// parseProcesses parses -processes: counts of processes, "1,2,3".
func parseProcesses(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 16 {
			return nil, usagef("-processes %q: need counts of processes from 1 to 16, such as 1,2,3", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// scale reads every event with the pipeline run as k processes of this
// program in one group, sharing the threshold through a digest topic
// (run -state changelog -digest-topic), and measures the records/s from
// the first batch with records to the last record, and the CPU time of
// all the processes per record. The processes start together, so the
// group's first rebalances fall in the measure, as they would in a
// deployment.
func (c *benchConfig) scale(ctx context.Context, brokers []string, k int, group string, log *slog.Logger) (scaleFigures, error) {
	var f scaleFigures
	self, err := os.Executable()
	if err != nil {
		return f, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	args := []string{"run", "-brokers", strings.Join(brokers, ","), "-topic", benchTopic, "-group", group,
		"-state", "changelog", "-digest-topic", group + "-digests", "-json", "-interval", "100ms",
		"-batch-records", strconv.Itoa(c.batchRecords), "-dlq-topic=", "-log-level", "warn"}
	type line struct {
		records int64
		err     error
	}
	lines := make(chan line, 64)
	var procs []*exec.Cmd
	var stderrs []*strings.Builder
	defer func() {
		for _, p := range procs {
			if p.ProcessState == nil {
				p.Process.Kill()
				p.Wait()
			}
		}
	}()
	for range k {
		cmd := exec.Command(self, args...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return f, err
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return f, fmt.Errorf("start %s: %w", self, err)
		}
		procs, stderrs = append(procs, cmd), append(stderrs, &stderr)
		go func() {
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 1<<20), 64<<20)
			for sc.Scan() {
				var l struct {
					Records int64 `json:"records"`
				}
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					lines <- line{err: fmt.Errorf("a process printed %.80q: %w", sc.Text(), err)}
					return
				}
				lines <- line{records: l.Records}
			}
			io.Copy(io.Discard, out)
		}()
	}
	var (
		total, base int64
		start       time.Time
	)
	for total < c.events {
		select {
		case l := <-lines:
			if l.err != nil {
				return f, l.err
			}
			total += l.records
			if start.IsZero() && l.records > 0 {
				start, base = time.Now(), total
			}
		case <-ctx.Done():
			var why []string
			for i, s := range stderrs {
				why = append(why, fmt.Sprintf("process %d: %.2000s", i, s.String()))
			}
			return f, fmt.Errorf("%d processes read %d of %d events: %w\n%s", k, total, c.events, ctx.Err(), strings.Join(why, "\n"))
		}
	}
	took := time.Since(start)
	if total > base && took > 0 {
		f.rate = float64(total-base) / took.Seconds()
	}
	var cpu time.Duration
	for i, p := range procs {
		p.Process.Signal(syscall.SIGTERM)
		if err := p.Wait(); err != nil {
			return f, fmt.Errorf("process %d: %w: %.2000s", i, err, stderrs[i].String())
		}
		cpu += p.ProcessState.UserTime() + p.ProcessState.SystemTime()
	}
	f.cpuPerRec = cpu.Seconds() / float64(c.events)
	f.partial, err = partialSize(ctx, brokers, group+"-digests")
	if err != nil {
		log.Warn("size of the partial digests unknown", "err", err)
	}
	return f, nil
}

// partialSize reads the digest topic and returns the mean size of the
// latest partial of each partition.
func partialSize(ctx context.Context, brokers []string, topic string) (float64, error) {
	x, err := exchange.New(exchange.Config{Brokers: brokers, Topic: topic})
	if err != nil {
		return 0, err
	}
	defer x.Close()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- x.Run(rctx) }()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = x.Sync(sctx)
	stop()
	if rerr := <-done; err == nil {
		err = rerr
	}
	if err != nil {
		return 0, err
	}
	ps := x.Latest()
	if len(ps) == 0 {
		return 0, fmt.Errorf("no partial in %s", topic)
	}
	size := 0
	for _, p := range ps {
		size += len(p.Value)
	}
	return float64(size) / float64(len(ps)), nil
}

// scaleOut runs the scale measure for each count of -processes, -rounds
// times, and prints the medians.
func (c *benchConfig) scaleOut(ctx context.Context, brokers []string, nextGroup func() string, stdout io.Writer, log *slog.Logger) error {
	var one float64
	for _, k := range c.processes {
		var rate, cpu, partial []float64
		for round := 1; round <= c.rounds; round++ {
			f, err := c.scale(ctx, brokers, k, nextGroup(), log)
			if err != nil {
				return fmt.Errorf("pipeline as %d processes: %w", k, err)
			}
			log.Info("bench", "round", round, "read", fmt.Sprintf("kafka, %d processes", k), "records/s", int64(f.rate))
			rate, cpu, partial = append(rate, f.rate), append(cpu, f.cpuPerRec), append(partial, f.partial)
		}
		r := median(rate)
		if one == 0 {
			one = r
		}
		fmt.Fprintf(stdout, "kafka pipeline, %2d processes, shared %10.0f records/s  %.3f× %d, %.2f µs CPU per record, partial digests of %.0f bytes\n",
			k, r, r/one, c.processes[0], 1e6*median(cpu), median(partial))
	}
	return nil
}
