package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBench(t *testing.T) {
	var stdout, stderr buffer
	code := run(context.Background(), []string{"bench",
		"-events", "20000", "-users", "2000", "-rounds", "1", "-batch-records", "5000", "-state-users", "200000",
	}, nil, &stdout, &stderr)
	require.Equal(t, exitOK, code, "stderr:\n%s", stderr.String())
	// The events are keyed by user id: the pipeline, which checks it,
	// finds no user in two partitions.
	assert.NotContains(t, stderr.String(), "level=ERROR")
	out := stdout.String()
	assert.Regexp(t, `(?m)^machine: \d+ cores, GOMAXPROCS \d+, go\S* `, out)
	assert.Regexp(t, `(?m)^events 20000 over 2000 users, 4 partitions, batches of 5000 records, median of 1 rounds$`, out)
	// What bounds the figures: the cores each read used, and where a
	// pipeline's batch spends its time.
	assert.Regexp(t, `(?m)^kafka bare sarama consumer group +\d+ records/s  \([\d.]+ cores\)$`, out)
	assert.Regexp(t, `(?m)^kafka source alone, no pipeline +\d+ records/s  [\d.]+× bare  \([\d.]+ cores\)$`, out)
	for _, pl := range []string{"tdigest", "exact", "exactly-once"} {
		assert.Regexp(t, `(?m)^kafka pipeline, `+pl+` +\d+ records/s  [\d.]+× bare  \([\d.]+ cores\); [\d.]+× the source alone$`, out)
	}
	// Where an exactly-once batch's time goes beyond the pipeline's work.
	assert.Regexp(t, `(?m)^  in the transaction: median checkpoint of the totals \S+, commit of the offsets and the transaction \S+$`, out)
	for _, sk := range []string{"tdigest", "exact"} {
		// Enough users that the heap's noise (other goroutines' garbage)
		// is small beside the state.
		assert.Regexp(t, `(?m)^state of 200000 users, `+sk+` +\d+ bytes per user \(the state's slabs and index: [1-9]\d*\); threshold step \S+, whole batch \S+$`, out)
	}
	assert.Len(t, regexp.MustCompile(`(?m)^  threshold step per batch: median \S+, max \S+ over \d+ batches, \d+ users in state$`).FindAllString(out, -1), 3,
		"the threshold step of each Kafka pipeline")
	assert.Regexp(t, `(?m)^file bare line count +\d+ records/s$`, out)
	assert.Regexp(t, `(?m)^  per batch after the first: median wait for records \S+, processing \S+, of which publishing popular users \S+$`, out)
	assert.Regexp(t, `(?m)^file hand-written loop, 1 core +\d+ records/s  [\d.]+× line count$`, out)
	assert.Regexp(t, `(?m)^  the same, totals only +\d+ records/s  [\d.]+× line count$`, out)
	assert.Regexp(t, `(?m)^file pipeline, -input +\d+ records/s  [\d.]+× line count  \([\d.]+ cores\); [\d.]+× the hand-written loop$`, out)
	for _, name := range []string{"kafka-tdigest/bare", "kafka-exact/bare", "file/linecount"} {
		m := regexp.MustCompile(`(?m)^RATIO ` + regexp.QuoteMeta(name) + `=(\S+)$`).FindStringSubmatch(out)
		if assert.NotNil(t, m, "RATIO %s in:\n%s", name, out) {
			v, err := strconv.ParseFloat(m[1], 64)
			require.NoError(t, err)
			assert.Positive(t, v, name)
		}
	}
	// The ratios end the output, for scripts that read its tail.
	assert.Regexp(t, `(RATIO \S+=\S+\n){3}$`, out)
}

// The cores of a read are its CPU time over the time its records/s is
// measured on: to the last record, not to the end of the group's leave
// after it (a wait of up to sarama's MaxWaitTime for the fetch in flight).
func TestBenchReadCores(t *testing.T) {
	c, err := parseBench([]string{"-events", "20000", "-users", "2000", "-batch-records", "5000"}, &buffer{})
	require.NoError(t, err)
	log := slog.New(slog.DiscardHandler)
	b, err := startBroker("127.0.0.1:0", false, "", map[string]int32{benchTopic: int32(c.partitions)}, log, &buffer{})
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, c.load(b))

	rate, cs, err := c.bare(context.Background(), b.Addrs(), "bare")
	require.NoError(t, err)
	assert.Positive(t, rate)
	assert.Positive(t, cs)

	cpu0, t0 := processCPU(), time.Now()
	rate, cs, err = c.sourceAlone(context.Background(), b.Addrs(), "alone", log)
	require.NoError(t, err)
	whole := cores(cpu0, t0)
	assert.Positive(t, rate)
	// The source reads 20,000 records on about a core; the leave after
	// them is a wait.
	assert.Greater(t, cs, whole, "cores over the read against over the whole call")
}

// The per-batch figures are medians, of an even count too, and those
// "after the first" leave out every round's first batch, publishing
// included.
func TestPrintPipeline(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var ds []time.Duration
		for _, n := range ns {
			ds = append(ds, time.Duration(n)*time.Millisecond)
		}
		return ds
	}
	rounds := []benchFigures{
		{steps: ms(1, 2), waits: ms(90, 4), procs: ms(90, 6), publish: ms(90, 2), cores: 1, users: 10},
		{steps: ms(3, 4), waits: ms(90, 6), procs: ms(90, 8), publish: ms(90, 4), cores: 1, users: 10},
	}
	var out buffer
	printPipeline(&out, "kafka pipeline, tdigest", 2, 1, 2, rounds)
	assert.Contains(t, out.String(), "threshold step per batch: median 2.5ms, max 4ms over 4 batches, 10 users in state\n")
	assert.Contains(t, out.String(), "per batch after the first: median wait for records 5ms, processing 7ms, of which publishing popular users 3ms\n")
}

// The file figure counts every line of the file: a run that stopped
// before its end, and returned nil as a cancelled run does, is no figure.
func TestBenchFileCancelled(t *testing.T) {
	c, err := parseBench([]string{"-events", "20000", "-users", "2000", "-batch-records", "5000"}, &buffer{})
	require.NoError(t, err)
	csv := filepath.Join(t.TempDir(), "events.csv")
	gen := &generateConfig{out: csv, users: c.users, rows: c.events, start: defaultStart, seed: 1}
	require.NoError(t, gen.run(context.Background(), slog.New(slog.DiscardHandler), nil, &buffer{}, &buffer{}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rate, err := c.file(ctx, csv, slog.New(slog.DiscardHandler), &buffer{})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, rate)

	rate, err = c.file(context.Background(), csv, slog.New(slog.DiscardHandler), &buffer{})
	require.NoError(t, err)
	assert.Positive(t, rate)
}

func TestParseBench(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"defaults", nil, true},
		{"no events", []string{"-events", "0"}, false},
		{"no rounds", []string{"-rounds", "0"}, false},
		{"no partitions", []string{"-partitions", "0"}, false},
		{"no batch", []string{"-batch-records", "0"}, false},
		{"events not a multiple of the batch", []string{"-events", "250000"}, false},
		{"events fewer than a batch", []string{"-events", "50000"}, false},
		{"events a multiple of the batch", []string{"-events", "300000", "-batch-records", "150000"}, true},
		{"negative state users", []string{"-state-users", "-1"}, false},
		{"no state measure", []string{"-state-users", "0"}, true},
		{"processes", []string{"-processes", "1,2,3"}, true},
		{"no processes", []string{"-processes", "0"}, false},
		{"processes not a list", []string{"-processes", "two"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseBench(tt.args, &buffer{})
			if tt.ok {
				require.NoError(t, err)
				require.NotNil(t, c)
				if tt.name == "defaults" { // the defaults: 2,000,000 events over 100,000 users, 4 partitions
					assert.Equal(t, [3]int64{2_000_000, 100_000, 4}, [3]int64{c.events, c.users, int64(c.partitions)})
					assert.Greater(t, c.rounds, 1, "a median of several rounds")
				}
			} else {
				assert.Error(t, err)
			}
		})
	}
}

// bench -processes runs the pipeline as processes of this program: here,
// the test binary, which TestMain turns into the program.
func TestBenchScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs processes")
	}
	t.Setenv(mainEnv, "1")
	var stdout, stderr buffer
	code := run(context.Background(), []string{"bench",
		"-events", "20000", "-users", "2000", "-rounds", "1", "-batch-records", "5000", "-state-users", "0", "-processes", "1,2",
	}, nil, &stdout, &stderr)
	require.Equal(t, exitOK, code, "stderr:\n%s", stderr.String())
	out := stdout.String()
	for _, k := range []string{"1", "2"} {
		m := regexp.MustCompile(`(?m)^kafka pipeline, +` + k + ` processes, shared +(\d+) records/s .* ([\d.]+) µs CPU per record, partial digests of (\d+) bytes$`).FindStringSubmatch(out)
		if assert.NotNil(t, m, "%s processes in:\n%s", k, out) {
			for _, v := range m[1:] {
				f, err := strconv.ParseFloat(v, 64)
				require.NoError(t, err)
				assert.Positive(t, f, "%s processes: %s", k, m[0])
			}
		}
	}
	assert.Regexp(t, `(RATIO \S+=\S+\n){3}$`, out)
}
