package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/digest"
	"github.com/sluicehq/sluice/internal/kafkatest"
	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/sink/changelog"
	"github.com/sluicehq/sluice/sink/txn"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// benchConfig is the configuration of the bench command.
type benchConfig struct {
	logConfig
	events       int64
	users        int64
	partitions   int
	rounds       int
	batchRecords int
	stateUsers   int64
	cpuProfile   string
	processes    []int // -processes: the scale-out measures
}

const benchTopic = "bench"

func parseBench(args []string, stderr io.Writer) (*benchConfig, error) {
	c := &benchConfig{}
	fs := newFlagSet("bench", `Measures the pipeline against the limits of its inputs, in this process:
loads -events events into an embedded Kafka broker, then reads them with a
bare sarama consumer group that only counts, with the pipeline's Kafka
source alone into a pipeline that only counts, with the pipeline (tdigest),
with the pipeline and -sketch exact, and with the pipeline as -exactly-once
builds it (each batch one Kafka transaction); then writes generate's CSV to a
temporary file and reads it with a bare line counter, with a hand-written
loop in one goroutine (computing what the pipeline computes, then keeping
the totals alone) and with the pipeline (-input); then measures the state
of -state-users users (memory per user, the threshold step), and with
-processes, the pipeline as several processes. Every figure is the median
of -rounds rounds. The output ends with one line per ratio,
RATIO <name>=<value>, for scripts.`, stderr)
	fs.Int64Var(&c.events, "events", 2_000_000, "events to load and read; a multiple of -batch-records, so that the last batch is cut on its count and not on the interval")
	fs.Int64Var(&c.users, "users", 100_000, "user ids are uniform over 1000..1000+users")
	fs.IntVar(&c.partitions, "partitions", defaultPartitions, "partitions of the Kafka topic")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds of every measure; the figures are their medians")
	fs.IntVar(&c.batchRecords, "batch-records", 100_000, "the pipeline's -batch-records")
	fs.Int64Var(&c.stateUsers, "state-users", 1_000_000, "users of the state measure: the pipeline on events made in memory, 2 per user; 0: skip it")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the measures (not of the load) to `file`")
	processes := fs.String("processes", "", "also run the pipeline as this many `processes` of one group sharing the threshold (-state changelog -digest-topic), for each count of a list such as 1,2,3, and measure records/s and CPU per record; empty: skip")
	if err := parseFlags(fs, args, &c.logConfig); err != nil {
		return nil, err
	}
	var err error
	if c.processes, err = parseProcesses(*processes); err != nil {
		return nil, err
	}
	switch {
	case c.events < 1:
		return nil, usagef("-events %d: must be 1 or more", c.events)
	case c.partitions < 1 || c.partitions > 1000:
		return nil, usagef("-partitions %d: must be between 1 and 1000", c.partitions)
	case c.rounds < 1:
		return nil, usagef("-rounds %d: must be 1 or more", c.rounds)
	case c.batchRecords < 1:
		return nil, usagef("-batch-records %d: must be 1 or more", c.batchRecords)
	case c.events%int64(c.batchRecords) != 0:
		// Otherwise the Kafka pipelines' last batch waits for its interval
		// (3 s), and their figures with it.
		return nil, usagef("-events %d: must be a multiple of -batch-records %d, so that the last batch is cut on its count", c.events, c.batchRecords)
	case c.stateUsers < 0 || c.stateUsers > math.MaxInt64/2-defaultStart:
		return nil, usagef("-state-users %d: must be 0 (skip) or more", c.stateUsers)
	}
	if err := checkUsers(defaultStart, c.users); err != nil {
		return nil, err
	}
	return c, nil
}

// benchFigures are what one pipeline read measured.
type benchFigures struct {
	rate      float64         // records/s
	cores     float64         // CPU time over wall time, of the whole process (broker included)
	waits     []time.Duration // of every batch, the wait for its records (Kafka)
	procs     []time.Duration // of every batch, its processing (Kafka)
	publish   []time.Duration // of every batch, publishing its popular users (Kafka)
	ckpts     []time.Duration // of every batch, checkpointing the state (exactly once)
	commits   []time.Duration // of every batch, committing the offsets and the transaction (exactly once)
	steps     []time.Duration // the threshold step of every batch
	batches   []time.Duration // the processing of every batch (state measure)
	stateUser float64         // heap bytes per user in state
	stateOwn  float64         // bytes per user of the state's own slabs and index (stream.StateStats)
	users     uint64
}

// run runs the bench and prints its figures on stdout; progress goes to
// the log.
func (c *benchConfig) run(ctx context.Context, log *slog.Logger, _ io.Reader, stdout, stderr io.Writer) error {
	fmt.Fprintln(stdout, machine())
	fmt.Fprintf(stdout, "events %d over %d users, %d partitions, batches of %d records, median of %d rounds\n",
		c.events, c.users, c.partitions, c.batchRecords, c.rounds)
	// The pipeline's and the clients' own logs only when something is
	// wrong: progress is the bench's.
	quiet := quieter(log, slog.LevelWarn)

	b, err := startBroker("127.0.0.1:0", false, "", map[string]int32{benchTopic: int32(c.partitions), defaultOutTopic: 1}, quiet, stderr)
	if err != nil {
		return err
	}
	defer b.Close()
	start := time.Now()
	if err := c.load(b); err != nil {
		return err
	}
	log.Info("loaded", "events", c.events, "took", time.Since(start).Round(time.Millisecond))

	dir, err := os.MkdirTemp("", "popularusers-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	csv := filepath.Join(dir, "events.csv")
	gen := &generateConfig{out: csv, users: c.users, rows: c.events, start: defaultStart, seed: 1}
	if err := gen.run(ctx, quiet, nil, io.Discard, io.Discard); err != nil {
		return err
	}

	if c.cpuProfile != "" {
		stop, err := startCPUProfile(c.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	var (
		bare, alone, tdig, exact, eos, lines, hand, sums, file []float64
		bareCores, aloneCores, fileCores                       []float64
		tdigF, exactF, eosF                                    []benchFigures
		group                                                  int
	)
	nextGroup := func() string { group++; return "bench-" + strconv.Itoa(group) }
	for round := 1; round <= c.rounds; round++ {
		// The measures of a round run one after the other, so that the
		// machine's noise falls on all of them alike.
		// Each measure starts from a collected heap, as a testing.B
		// does, so that the garbage of the one before does not fall on
		// it.
		runtime.GC()
		r, rcores, err := c.bare(ctx, b.Addrs(), nextGroup())
		if err != nil {
			return fmt.Errorf("bare consumer: %w", err)
		}
		bare, bareCores = append(bare, r), append(bareCores, rcores)
		log.Info("bench", "round", round, "read", "kafka bare", "records/s", int64(r), "cores", round2(bareCores[len(bareCores)-1]))
		runtime.GC()
		if r, rcores, err = c.sourceAlone(ctx, b.Addrs(), nextGroup(), quiet); err != nil {
			return fmt.Errorf("source alone: %w", err)
		}
		alone, aloneCores = append(alone, r), append(aloneCores, rcores)
		log.Info("bench", "round", round, "read", "kafka source alone", "records/s", int64(r), "cores", round2(aloneCores[len(aloneCores)-1]))
		pipelines := []string{"tdigest", "exact", pipelineEOS}
		if round%2 == 0 { // none always runs right after the bare consumer
			slices.Reverse(pipelines)
		}
		for _, pl := range pipelines {
			runtime.GC()
			f, err := c.pipeline(ctx, b.Addrs(), nextGroup(), pl, quiet)
			if err != nil {
				return fmt.Errorf("pipeline, %s: %w", pl, err)
			}
			log.Info("bench", "round", round, "read", "kafka "+pl, "records/s", int64(f.rate), "cores", round2(f.cores))
			switch pl {
			case "tdigest":
				tdig, tdigF = append(tdig, f.rate), append(tdigF, f)
			case "exact":
				exact, exactF = append(exact, f.rate), append(exactF, f)
			default:
				eos, eosF = append(eos, f.rate), append(eosF, f)
			}
		}
		runtime.GC()
		r, err = countLines(csv)
		if err != nil {
			return err
		}
		lines = append(lines, r)
		log.Info("bench", "round", round, "read", "file linecount", "records/s", int64(r))
		runtime.GC()
		if r, err = handLoop(csv, c.batchRecords, digest.DefaultCompression, defaultLimit, false); err != nil {
			return fmt.Errorf("hand-written loop: %w", err)
		}
		hand = append(hand, r)
		log.Info("bench", "round", round, "read", "file hand-written loop", "records/s", int64(r))
		runtime.GC()
		if r, err = handLoop(csv, c.batchRecords, digest.DefaultCompression, defaultLimit, true); err != nil {
			return fmt.Errorf("hand-written loop, totals only: %w", err)
		}
		sums = append(sums, r)
		log.Info("bench", "round", round, "read", "file hand-written loop, totals only", "records/s", int64(r))
		runtime.GC()
		cpu0, t0 := processCPU(), time.Now()
		if r, err = c.file(ctx, csv, quiet, stderr); err != nil {
			return fmt.Errorf("pipeline, -input: %w", err)
		}
		file, fileCores = append(file, r), append(fileCores, cores(cpu0, t0))
		log.Info("bench", "round", round, "read", "file pipeline", "records/s", int64(r), "cores", round2(fileCores[len(fileCores)-1]))
	}

	mb, ma, mt, me, ml, mh, mf := median(bare), median(alone), median(tdig), median(exact), median(lines), median(hand), median(file)
	fmt.Fprintf(stdout, "kafka bare sarama consumer group  %12.0f records/s  (%.2f cores)\n", mb, median(bareCores))
	fmt.Fprintf(stdout, "kafka source alone, no pipeline   %12.0f records/s  %.3f× bare  (%.2f cores)\n", ma, ma/mb, median(aloneCores))
	printPipeline(stdout, "kafka pipeline, tdigest", mt, mb, ma, tdigF)
	printPipeline(stdout, "kafka pipeline, exact  ", me, mb, ma, exactF)
	printPipeline(stdout, "kafka pipeline, exactly-once", median(eos), mb, ma, eosF)
	fmt.Fprintf(stdout, "file bare line count              %12.0f records/s\n", ml)
	fmt.Fprintf(stdout, "file hand-written loop, 1 core    %12.0f records/s  %.3f× line count\n", mh, mh/ml)
	fmt.Fprintf(stdout, "  the same, totals only           %12.0f records/s  %.3f× line count\n", median(sums), median(sums)/ml)
	fmt.Fprintf(stdout, "file pipeline, -input             %12.0f records/s  %.3f× line count  (%.2f cores); %.3f× the hand-written loop\n", mf, mf/ml, median(fileCores), mf/mh)
	if c.stateUsers > 0 {
		for _, sk := range []string{"tdigest", "exact"} {
			var state, own, step, batch []float64
			var users uint64
			for range c.rounds {
				f, err := c.state(ctx, sk, quiet)
				if err != nil {
					return fmt.Errorf("state, %s: %w", sk, err)
				}
				state, own, users = append(state, f.stateUser), append(own, f.stateOwn), f.users
				step = append(step, float64(f.steps[len(f.steps)-1]))
				batch = append(batch, float64(f.batches[len(f.batches)-1]))
			}
			fmt.Fprintf(stdout, "state of %d users, %-7s   %5.0f bytes per user (the state's slabs and index: %.0f); threshold step %v, whole batch %v\n",
				users, sk, median(state), median(own), time.Duration(median(step)).Round(time.Microsecond), time.Duration(median(batch)).Round(time.Microsecond))
		}
	}
	if len(c.processes) > 0 {
		if err := c.scaleOut(ctx, b.Addrs(), nextGroup, stdout, log); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "RATIO kafka-tdigest/bare=%.3f\n", mt/mb)
	fmt.Fprintf(stdout, "RATIO kafka-exact/bare=%.3f\n", me/mb)
	fmt.Fprintf(stdout, "RATIO file/linecount=%.3f\n", mf/ml)
	return nil
}

func printPipeline(w io.Writer, name string, rate, bare, alone float64, rounds []benchFigures) {
	var steps, waits, procs, publish, ckpts, commits []time.Duration
	var cs []float64
	users := uint64(0)
	for _, f := range rounds {
		steps = append(steps, f.steps...)
		// The first batch waits for the group to be joined: not a
		// batch like the others.
		if len(f.waits) > 1 {
			waits, procs = append(waits, f.waits[1:]...), append(procs, f.procs[1:]...)
		}
		if len(f.publish) > 1 {
			publish = append(publish, f.publish[1:]...)
		}
		if len(f.ckpts) > 1 {
			ckpts, commits = append(ckpts, f.ckpts[1:]...), append(commits, f.commits[1:]...)
		}
		cs = append(cs, f.cores)
		users = max(users, f.users)
	}
	p50 := func(ds []time.Duration) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		xs := make([]float64, len(ds))
		for i, d := range ds {
			xs[i] = float64(d)
		}
		return time.Duration(median(xs)).Round(time.Microsecond)
	}
	worst := time.Duration(0)
	if len(steps) > 0 {
		worst = slices.Max(steps)
	}
	fmt.Fprintf(w, "%-34s%12.0f records/s  %.3f× bare  (%.2f cores); %.3f× the source alone\n", name, rate, rate/bare, median(cs), rate/alone)
	fmt.Fprintf(w, "  threshold step per batch: median %v, max %v over %d batches, %d users in state\n",
		p50(steps), worst.Round(time.Microsecond), len(steps), users)
	if len(waits) > 0 {
		fmt.Fprintf(w, "  per batch after the first: median wait for records %v, processing %v, of which publishing popular users %v\n",
			p50(waits), p50(procs), p50(publish))
	}
	if len(ckpts) > 0 {
		fmt.Fprintf(w, "  in the transaction: median checkpoint of the totals %v, commit of the offsets and the transaction %v\n",
			p50(ckpts), p50(commits))
	}
}

// round2 rounds x to 2 decimals, for logs.
func round2(x float64) float64 { return math.Round(x*100) / 100 }

// machine describes what the bench runs on.
func machine() string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimLeft(name, " \t:"))
				break
			}
		}
	}
	return fmt.Sprintf("machine: %d cores, GOMAXPROCS %d, %s %s/%s, CPU %q",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, cpu)
}

// load writes the bench's events to the broker: JSON events keyed by user
// id, user mod partitions, as produce would key them.
func (c *benchConfig) load(b *kafkatest.Broker) error {
	g, err := source.NewGenerator(source.GeneratorConfig{Seed: 1, Start: defaultStart, Users: c.users})
	if err != nil {
		return err
	}
	const chunk = 50_000
	recs := make([]kafkatest.Record, 0, chunk)
	for i := int64(0); i < c.events; i++ {
		e := g.Next()
		key, value, _ := encodeEvent(e)
		recs = append(recs, kafkatest.Record{Partition: int32(e.UserID % int64(c.partitions)), Key: key, Value: value})
		if len(recs) == chunk || i == c.events-1 {
			if err := b.Produce(benchTopic, recs...); err != nil {
				return fmt.Errorf("load: %w", err)
			}
			recs = recs[:0]
		}
	}
	return nil
}

// bare reads every event with a sarama consumer group that only counts,
// and returns the records/s and the cores used from the start to the last
// record counted.
func (c *benchConfig) bare(ctx context.Context, brokers []string, group string) (rate, cores float64, err error) {
	cfg := sarama.NewConfig()
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	clock := startRead()
	if _, err := kafkatest.CountGroupFunc(ctx, brokers, benchTopic, group, cfg, c.events, clock.stop); err != nil {
		return 0, 0, err
	}
	return float64(c.events) / clock.took.Seconds(), clock.cores(), nil
}

// readClock times a read, and the process's CPU time over it, from
// startRead to its first stop: the moment its last record is counted.
// Leaving the group after it (mostly a wait for the fetch in flight, up to
// sarama's MaxWaitTime of 500 ms) is in neither.
type readClock struct {
	cpu0, cpu time.Duration
	t0        time.Time
	took      time.Duration
}

func startRead() *readClock { return &readClock{cpu0: processCPU(), t0: time.Now()} }

func (r *readClock) stop() {
	if r.took == 0 {
		r.took, r.cpu = time.Since(r.t0), processCPU()-r.cpu0
	}
}

// cores returns the cores the process used on average over the read.
func (r *readClock) cores() float64 { return float64(r.cpu) / float64(r.took) }

// pipelineEOS names the pipeline read as run -exactly-once builds it.
const pipelineEOS = "exactly-once"

// pipeline reads every event with the popular-users pipeline, as run
// builds it on Kafka (kafkaPipeline) with the sketch pl, and the
// popular users published to the embedded broker; with pl pipelineEOS,
// as run -exactly-once builds it: the default sketch, the totals in a
// changelog topic, and each batch's popular users, totals and offsets in
// one transaction, read back read_committed.
func (c *benchConfig) pipeline(ctx context.Context, brokers []string, group, pl string, log *slog.Logger) (benchFigures, error) {
	var f benchFigures
	args := []string{"-sketch", pl, "-group", group, "-batch-records", strconv.Itoa(c.batchRecords)}
	if pl == pipelineEOS {
		args = []string{"-exactly-once", "-brokers", strings.Join(brokers, ","), "-topic", benchTopic,
			"-changelog-topic", group + "-totals", "-group", group, "-batch-records", strconv.Itoa(c.batchRecords)}
	}
	rc, err := parseRun(args, io.Discard)
	if err != nil {
		return f, err
	}
	var (
		timer   stepTimer
		users   func() uint64
		popular *popularSink
		dead    *sink.JSONLines[deadLetter]
		eos     *eosParts
	)
	defer func() {
		if popular != nil {
			popular.Close()
		}
		if dead != nil {
			dead.Close()
		}
		if eos != nil {
			eos.close()
		}
	}()
	if rc.exactlyOnce {
		if eos, err = openEOS(ctx, rc, brokers, log); err != nil {
			return f, err
		}
	}
	wire := func(raw *stream.Stream[source.Message]) error {
		dec, err := score.NewDecoder(score.FormatJSON)
		if err != nil {
			return err
		}
		if popular, err = newPopularSink(brokers, rc.outTopic, rc.faults.connectTimeout, eos.producer(), log); err != nil {
			return err
		}
		dead = sink.NewJSONLines[deadLetter]("dead letters", io.Discard)
		out := &outputs{report: newReporter(io.Discard, false, true, log), deadLetters: dead, popular: popular}
		event := func(m source.Message) []byte { return m.Value }
		users = timedWire(rc, rc.sketch, raw, event, dec, out, &timer)
		return nil
	}
	batch := func(s stream.BatchStats, last bool) {
		f.waits = append(f.waits, s.Info.Time.Sub(s.Info.Start))
		f.procs = append(f.procs, s.Processing)
		for _, o := range s.Outputs {
			if o.Name == "to(popular)" {
				f.publish = append(f.publish, o.Duration)
			}
		}
		if eos != nil {
			f.ckpts, f.commits = append(f.ckpts, s.Checkpoint), append(f.commits, s.Commit)
		}
		if last {
			f.users = users()
		}
	}
	if f.rate, f.cores, err = c.readKafka(ctx, brokers, group, rc, log, eos, wire, batch); err != nil {
		return f, err
	}
	f.steps = timer.steps
	return f, nil
}

// eosParts are what run -exactly-once adds to the pipeline: the
// transactional producer and the changelog store that writes through it.
type eosParts struct {
	tx    *txn.Producer
	store *changelog.Kafka
}

func openEOS(ctx context.Context, rc *runConfig, brokers []string, log *slog.Logger) (*eosParts, error) {
	tx, err := rc.newTransaction(brokers, log)
	if err != nil {
		return nil, err
	}
	store, err := rc.openChangelog(ctx, brokers, tx, log)
	if err == nil && store == nil {
		err = context.Cause(ctx)
	}
	if err != nil {
		tx.Close()
		return nil, err
	}
	return &eosParts{tx: tx, store: store}, nil
}

// producer returns the transactional producer, nil without one.
func (e *eosParts) producer() *txn.Producer {
	if e == nil {
		return nil
	}
	return e.tx
}

func (e *eosParts) close() {
	e.store.Close()
	e.tx.Close()
}

// sourceAlone reads every event with the Kafka source of the pipeline
// into a pipeline that only counts them, with run's batches: the most
// the pipeline could read. It returns what readKafka does.
func (c *benchConfig) sourceAlone(ctx context.Context, brokers []string, group string, log *slog.Logger) (rate, cores float64, err error) {
	rc, err := parseRun([]string{"-group", group, "-batch-records", strconv.Itoa(c.batchRecords)}, io.Discard)
	if err != nil {
		return 0, 0, err
	}
	return c.readKafka(ctx, brokers, group, rc, log, nil, nil, nil)
}

// readKafka reads every event of the bench's topic as group, with the
// Kafka source and the options of run (rc), in a pipeline that wire, if
// not nil, adds to, and returns the records/s and the cores used from the
// start to the last record counted. The batch that holds the last record cancels the run
// from an output, so that the engine commits it (and flushes its outputs)
// before its hook stops the clock; the committed offsets must then cover
// exactly the records counted. batch, if not nil, sees every batch's
// stats, the last one's with last set. With eos, every batch is a
// transaction, the offsets committed in it, and the state checkpointed in
// it.
func (c *benchConfig) readKafka(ctx context.Context, brokers []string, group string, rc *runConfig, log *slog.Logger, eos *eosParts,
	wire func(*stream.Stream[source.Message]) error, batch func(s stream.BatchStats, last bool)) (rate, cores float64, err error) {
	clock := startRead()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cfg := source.KafkaConfig{Brokers: brokers, Topic: benchTopic, Group: group, Logger: log}
	opts := append(rc.options(log), stream.Interval(rc.interval))
	if eos != nil {
		cfg.Transaction = eos.tx
		opts = append(opts, stream.WithStore(eos.store), stream.WithTransaction(eos.tx))
	}
	src, err := source.NewKafka(cfg)
	if err != nil {
		return 0, 0, err
	}
	var records, read int64
	done := hookFunc(func(s stream.BatchStats) {
		records += int64(s.Info.Records)
		last := records >= c.events && rate == 0
		if last {
			clock.stop()
			rate = float64(records) / clock.took.Seconds()
		}
		if batch != nil {
			batch(s, last)
		}
	})
	p := stream.NewPipeline(append(opts, stream.WithHook(done))...)
	raw := stream.From(p, src)
	stream.ForEachBatch(raw, func(_ context.Context, b *stream.Batch[source.Message]) error {
		if read += int64(b.Len()); read >= c.events {
			cancel()
		}
		return nil
	})
	if wire != nil {
		if err := wire(raw); err != nil {
			return 0, 0, err
		}
	}
	if err := p.Run(ctx); err != nil {
		return 0, 0, err
	}
	if rate == 0 {
		return 0, 0, fmt.Errorf("stopped after %d of %d records", records, c.events)
	}
	return rate, clock.cores(), c.checkCommitted(brokers, group, records)
}

// checkCommitted checks that the offsets group committed cover exactly
// the records its pipeline counted: a record counted twice would make
// the pipeline look faster than it is.
func (c *benchConfig) checkCommitted(brokers []string, group string, records int64) error {
	admin, err := sarama.NewClusterAdmin(brokers, sarama.NewConfig())
	if err != nil {
		return err
	}
	defer admin.Close()
	parts := make([]int32, c.partitions)
	for i := range parts {
		parts[i] = int32(i)
	}
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{benchTopic: parts})
	if err != nil {
		return fmt.Errorf("committed offsets of group %s: %w", group, err)
	}
	var committed int64
	for _, p := range parts {
		if b := resp.GetBlock(benchTopic, p); b != nil && b.Offset > 0 {
			committed += b.Offset
		}
	}
	if committed != records {
		return fmt.Errorf("group %s counted %d records, and committed offsets that cover %d", group, records, committed)
	}
	return nil
}

// state runs the pipeline with the sketch sk on 2·stateUsers events made
// in memory, two per user, in batches of -batch-records, and measures the heap it holds per user in
// state after the last batch, and the threshold step of every batch. No
// Kafka client runs, so that their buffers are not counted as state.
func (c *benchConfig) state(ctx context.Context, sk string, log *slog.Logger) (benchFigures, error) {
	var f benchFigures
	rc, err := parseRun([]string{"-sketch", sk}, io.Discard)
	if err != nil {
		return f, err
	}
	events := 2 * c.stateUsers
	gen := &userEvents{users: c.stateUsers, n: events, partitions: int64(c.partitions)}
	dec, err := score.NewDecoder(score.FormatJSON)
	if err != nil {
		return f, err
	}
	dead := sink.NewJSONLines[deadLetter]("dead letters", io.Discard)
	defer dead.Close()
	out := &outputs{report: newReporter(io.Discard, false, true, log), deadLetters: dead}
	var (
		timer    stepTimer
		records  int64
		users    func() uint64
		ms       runtime.MemStats
		baseline uint64
	)
	done := hookFunc(func(s stream.BatchStats) {
		f.batches = append(f.batches, s.Processing)
		if records += int64(s.Info.Records); records < events {
			return
		}
		// The state is held: the run loop waits here.
		runtime.GC()
		runtime.ReadMemStats(&ms)
		if f.users = users(); f.users > 0 {
			f.stateUser = float64(int64(ms.HeapAlloc)-int64(baseline)) / float64(f.users)
		}
		for _, st := range s.State {
			if st.Name == "totals" && st.Keys > 0 {
				f.stateOwn = float64(st.Bytes) / float64(st.Keys)
			}
		}
	})
	p := stream.NewPipeline(stream.MaxRecords(c.batchRecords), stream.Interval(time.Hour), stream.Logger(log), stream.WithHook(done))
	raw := stream.From(p, gen)
	event := func(e score.Event) []byte { return score.AppendJSON(nil, e) }
	users = timedWire(rc, sk, raw, event, dec, out, &timer)
	// Twice: what sync.Pools held at the first survives it.
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	baseline = ms.HeapAlloc
	if err := p.Run(ctx); err != nil {
		return f, err
	}
	if f.users == 0 || len(timer.steps) == 0 {
		return f, fmt.Errorf("stopped after %d of %d records", records, events)
	}
	f.steps = timer.steps
	return f, nil
}

// userEvents is a source of n events over users users, each user's in
// turn, so that every user is in the state after the first users events.
type userEvents struct {
	users, n, partitions int64
	i                    int64
}

var _ stream.Source[score.Event] = (*userEvents)(nil)

func (u *userEvents) Poll(_ context.Context, buf []stream.Record[score.Event]) (int, error) {
	k := 0
	for ; k < len(buf) && u.i < u.n; k, u.i = k+1, u.i+1 {
		user := defaultStart + u.i%u.users
		// A scattered activity, so that totals differ.
		act := source.Activities[uint64(u.i)*0x9e3779b97f4a7c15>>62%uint64(len(source.Activities))]
		buf[k] = stream.Record[score.Event]{
			Value:  score.Event{UserID: user, Activity: act},
			Origin: stream.Origin{Source: "state", Partition: int32(user % u.partitions), Offset: u.i},
		}
	}
	if u.i == u.n {
		return k, io.EOF
	}
	return k, nil
}

// timedWire builds the pipeline on raw with the sketch sk, its threshold
// step timed, and returns a function that tells the users in state at the
// last threshold.
func timedWire[T any](rc *runConfig, sk string, raw *stream.Stream[T], event func(T) []byte, dec *score.Decoder, out *outputs, t *stepTimer) func() uint64 {
	var users atomic.Uint64
	end := func(n uint64) {
		t.end()
		users.Store(n)
	}
	out.sketchBegun = t.begin
	if sk == "exact" {
		popularUsers(raw, event, true, dec, func() (*timedCounts, error) {
			return &timedCounts{Counts: digest.NewCounts(), end: end}, nil
		}, rc.limit, out)
		return users.Load
	}
	popularUsers(raw, event, true, dec, func() (*timedTDigest, error) {
		d, err := digest.NewTDigest(digest.WithCompression(rc.compression))
		return &timedTDigest{TDigest: d, end: end}, err
	}, rc.limit, out)
	return users.Load
}

// stepTimer times the threshold step of every batch: from the first
// partition's sketch step begun to the quantile read from the merged
// sketch.
type stepTimer struct {
	mu      sync.Mutex
	running bool
	start   time.Time
	steps   []time.Duration
}

func (t *stepTimer) begin() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.running {
		t.running, t.start = true, time.Now()
	}
}

func (t *stepTimer) end() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.running {
		t.running = false
		t.steps = append(t.steps, time.Since(t.start))
	}
}

// timedCounts and timedTDigest are the pipeline's sketches, whose Quantile
// ends the step timer. timedCounts moves values as digest.Counts does, so
// that the pipeline keeps it per partition as it keeps a digest.Counts.
type (
	timedCounts struct {
		*digest.Counts
		end func(users uint64)
	}
	timedTDigest struct {
		*digest.TDigest
		end func(users uint64)
	}
)

var (
	_ sketch[*timedCounts]  = (*timedCounts)(nil)
	_ mover                 = (*timedCounts)(nil)
	_ sketch[*timedTDigest] = (*timedTDigest)(nil)
)

func (x *timedCounts) Merge(other *timedCounts) error { return x.Counts.Merge(other.Counts) }
func (x *timedCounts) Quantile(q float64) float64 {
	v := x.Counts.Quantile(q)
	x.end(x.Count())
	return v
}

func (x *timedTDigest) Merge(other *timedTDigest) error { return x.TDigest.Merge(other.TDigest) }
func (x *timedTDigest) Quantile(q float64) float64 {
	v := x.TDigest.Quantile(q)
	x.end(x.Count())
	return v
}

// hookFunc is a stream.Hook.
type hookFunc func(stream.BatchStats)

func (f hookFunc) BatchDone(s stream.BatchStats) { f(s) }

// countLines counts the lines of path as a hand-written reader of lines
// would, with a bufio.Scanner, and returns lines/s.
func countLines(path string) (float64, error) {
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	n := 0
	for sc.Scan() {
		n++
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// handLoop reads path as a hand-written program that computes the same
// as the pipeline would, in one goroutine: each line decoded by the
// pipeline's decoder into the user's total in a Go map, and every
// batchRecords lines (and at the end) a t-digest of all totals, its
// limit quantile and the users above it; with totalsOnly, the totals
// alone. It returns records/s.
func handLoop(path string, batchRecords int, compression, limit float64, totalsOnly bool) (float64, error) {
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	dec, err := score.NewDecoder(score.FormatCSV)
	if err != nil {
		return 0, err
	}
	totals := map[int64]int64{}
	var popular []total
	step := func() error {
		if totalsOnly {
			return nil
		}
		d, err := digest.NewTDigest(digest.WithCompression(compression))
		if err != nil {
			return err
		}
		for _, t := range totals {
			if err := d.Add(float64(t)); err != nil {
				return err
			}
		}
		threshold := d.Quantile(limit)
		popular = popular[:0]
		for u, t := range totals {
			if float64(t) > threshold {
				popular = append(popular, stream.KV(u, t))
			}
		}
		return nil
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		user, points, err := dec.Score(sc.Bytes())
		if err != nil {
			return 0, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		totals[user] += points
		if n%batchRecords == 0 {
			if err := step(); err != nil {
				return 0, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if n%batchRecords != 0 {
		if err := step(); err != nil {
			return 0, err
		}
	}
	if !totalsOnly && len(totals) > 0 && len(popular) == 0 {
		return 0, fmt.Errorf("%s: no user above the %v quantile of %d", path, limit, len(totals))
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// file runs the pipeline on path as "popularusers -input path" does, and
// returns records/s.
func (c *benchConfig) file(ctx context.Context, path string, log *slog.Logger, stderr io.Writer) (float64, error) {
	rc, err := parseRun([]string{"-input", path, "-batch-records", strconv.Itoa(c.batchRecords)}, io.Discard)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := rc.run(ctx, log, nil, io.Discard, stderr); err != nil {
		return 0, err
	}
	// Cancelled, run stops early and returns nil: the file was not all
	// read.
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("pipeline stopped before the end of %s: %w", path, err)
	}
	return float64(c.events) / time.Since(start).Seconds(), nil
}

// median returns the median of xs, or NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// cores returns the cores the process used on average since cpu0 and t0.
func cores(cpu0 time.Duration, t0 time.Time) float64 {
	return float64(processCPU()-cpu0) / float64(time.Since(t0))
}
