package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/digest"
	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/sink/changelog"
	"github.com/sluicehq/sluice/sink/exchange"
	"github.com/sluicehq/sluice/sink/txn"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/checkpoint"
)

// run runs the pipeline until its input ends (a file) or ctx is cancelled
// (a signal), finishing and committing the batch in progress.
func (c *runConfig) run(ctx context.Context, log *slog.Logger, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	if c.cpuProfile != "" {
		stop, err := startCPUProfile(c.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	// runCtx also stops the pipeline when the built-in producer fails.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	brokers := c.brokers
	if len(brokers) == 0 && c.input == "" {
		addr, stop, err := c.startEmbedded(runCtx, cancel, log, stderr)
		if err != nil {
			return err
		}
		defer stop()
		brokers = []string{addr}
	}

	out := &outputs{report: newReporter(stdout, c.json, c.input == "", log)}
	opts := c.options(log)
	if c.metricsAddr != "" {
		mon, err := startMonitor(c.metricsAddr, c.limit, log)
		if err != nil {
			return err
		}
		defer mon.close()
		out.report.mon = mon
		opts = append(opts, stream.WithHook(mon))
	}
	var tx *txn.Producer
	if c.exactlyOnce {
		if tx, err = c.newTransaction(brokers, log); err != nil {
			return err
		}
		defer func() {
			// After the sinks and the store, which write through it.
			if cerr := tx.Close(); err == nil && cerr != nil {
				err = cerr
			}
		}()
		// A write that failed in a transaction cannot be retried in it:
		// the transaction is aborted and the run fails, to restart from
		// the last committed batch.
		c.faults.outputRetry = 0
	}
	var closers []func() error
	defer func() {
		// Sinks flush on Close: a failure there is a failure of the run.
		for _, close := range closers {
			if cerr := close(); err == nil && cerr != nil {
				err = cerr
			}
		}
	}()
	dead, where, closeDead, err := c.deadLetterSinks(brokers, tx, stderr, log)
	if err != nil {
		return err
	}
	out.deadLetters, out.report.deadLetters, out.maxBadRatio = dead, where, c.faults.maxBadRatio
	out.fileInput = c.input != ""
	out.retry = retryConfig{c.faults.outputRetry, log}
	closers = append(closers, closeDead...)
	if len(brokers) > 0 {
		popular, err := newPopularSink(brokers, c.outTopic, c.faults.connectTimeout, tx, log)
		if err != nil {
			return err
		}
		out.popular = popular
		closers = append(closers, popular.Close)
		if c.thresholdTopic != "" {
			thresholds, err := newThresholdSink(brokers, c.thresholdTopic, c.faults.connectTimeout, tx, log)
			if err != nil {
				return err
			}
			out.thresholds = thresholds
			closers = append(closers, thresholds.Close)
		}
	}

	if c.state == stateChangelog {
		store, err := c.openChangelog(runCtx, brokers, tx, log)
		if err != nil || store == nil {
			return err // store is nil when ctx was cancelled first
		}
		closers = append(closers, store.Close)
		opts = append(opts, stream.WithStore(store))
		if tx != nil {
			opts = append(opts, stream.WithTransaction(tx))
		}
	} else if dir := c.checkpointDir(len(c.brokers) > 0); dir != "" {
		store, err := openCheckpoint(dir, c.resetState, log)
		if err != nil {
			return err
		}
		closers = append(closers, store.Close)
		opts = append(opts, stream.WithStore(store))
	}

	if c.digestTopic != "" {
		member := cmp.Or(c.instance, memberName())
		// The partials say their sketch and input topic, so that after
		// a change of either the others' partials of before are left
		// out, not merged or failed on.
		x, err := exchange.New(exchange.Config{Brokers: brokers, Topic: c.digestTopic, Member: member, Kind: c.sketch, Input: c.topic, ConnectTimeout: c.faults.connectTimeout, Logger: log})
		if err != nil {
			return err
		}
		xCtx, stopX := context.WithCancel(runCtx)
		var reading sync.WaitGroup
		reading.Go(func() {
			if err := x.Run(xCtx); err != nil {
				cancel(fmt.Errorf("digest exchange: %w", err))
			}
		})
		defer func() {
			stopX()
			reading.Wait()
			x.Close()
		}()
		out.exchange = x
		if out.report.mon != nil {
			if err := out.report.mon.watchExchange(x, &out.undecodable); err != nil {
				return err
			}
		}
		log.Info("sharing the threshold through the digest topic", "topic", c.digestTopic, "member", member)
	}

	var p *stream.Pipeline
	if c.input != "" {
		in, err := openInput(runCtx, c.input, stdin)
		if err != nil || in == nil {
			return err // in is nil when ctx was cancelled first
		}
		defer in.file.Close()
		p = c.filePipeline(in, out, opts, log)
	} else if p, err = c.kafkaPipeline(brokers, out, opts, tx, log); err != nil {
		return err
	}
	err = p.Run(runCtx)
	if errors.Is(err, checkpoint.ErrCorrupt) {
		// A checkpoint file read as the state is restored, after Open
		// checked the directory.
		err = fmt.Errorf("%w (to start from empty totals on purpose, run with -reset-checkpoint)", err)
	}
	if err == nil && c.input != "" && c.input != "-" && c.checkpointDir(false) != "" && lastLineUnended(c.input) {
		log.Warn("the input's last line has no line ending: it was counted as it is, and if the file is appended to, a rerun with this checkpoint goes on from the line after it, not from the rest of that line", "input", c.input)
	}
	out.report.done()
	if err == nil && ctx.Err() == nil && runCtx.Err() != nil {
		err = context.Cause(runCtx) // the producer failed
	}
	return err
}

// options are the pipeline options of every input.
func (c *runConfig) options(log *slog.Logger) []stream.Option {
	return []stream.Option{stream.MaxRecords(c.batchRecords), stream.CommitInterval(c.commitInterval), stream.Logger(log)}
}

// checkpointDir returns the checkpoint directory to use, or "". The
// embedded broker keeps nothing across runs, so its offsets are not worth
// keeping; a file is checkpointed only when -checkpoint is given, so that
// reading a file twice counts it twice, as one expects.
func (c *runConfig) checkpointDir(external bool) string {
	switch {
	case c.checkpoint == "" || c.state != stateDir:
		return ""
	case c.input != "" && !c.checkpointSet:
		return ""
	case c.input == "" && !external:
		return ""
	}
	return c.checkpoint
}

// instanceID returns the name of this process in its group: -instance,
// or one derived from the checkpoint directory, or with -exactly-once from
// the group and host (see -instance); "" for a dynamic member.
func (c *runConfig) instanceID() string {
	switch {
	case c.instance != "":
		return c.instance
	case c.exactlyOnce:
		host, _ := os.Hostname()
		sum := sha256.Sum256([]byte(host))
		return fmt.Sprintf("%s-%x", c.group, sum[:8])
	}
	return instanceID(c.group, c.checkpointDir(len(c.brokers) > 0))
}

// newTransaction returns the producer of -exactly-once, whose
// transactional.id is the process's instance name: a process restarted
// under the same name fences off its predecessor and aborts what that one
// left open.
func (c *runConfig) newTransaction(brokers []string, log *slog.Logger) (*txn.Producer, error) {
	id := c.instanceID()
	tx, err := txn.New(txn.Config{Brokers: brokers, ID: id, Logger: log})
	if err != nil {
		return nil, err
	}
	log.Info("exactly once: each batch is one Kafka transaction", "transactional_id", id)
	return tx, nil
}

// instanceID names a static group member after its host and checkpoint
// directory: the same process identity after a restart, and a different
// one for every process with a state of its own. No directory, no name.
func instanceID(group, dir string) string {
	if dir == "" {
		return ""
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	host, _ := os.Hostname()
	sum := sha256.Sum256([]byte(host + "\x00" + abs))
	return fmt.Sprintf("%s-%x", group, sum[:8])
}

// openCheckpoint opens the checkpoint directory, discarding what it holds
// first when asked to.
func openCheckpoint(dir string, reset bool, log *slog.Logger) (*checkpoint.Dir, error) {
	opts := []checkpoint.Option{checkpoint.Logger(log)}
	if reset {
		opts = append(opts, checkpoint.Reset())
	}
	store, err := checkpoint.Open(dir, opts...)
	if errors.Is(err, checkpoint.ErrInUse) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w (to start from empty totals on purpose, run with -reset-checkpoint)", err)
	}
	if reset {
		log.Info("checkpoint discarded", "dir", dir)
	}
	log.Info("checkpointing state", "dir", dir)
	return store, nil
}

// openChangelog returns the store of -state changelog on -changelog-topic.
// State partition p is written to partition p of the topic, so a topic the
// store creates gets as many partitions as the input topic has now. It
// returns nil, nil when ctx is cancelled first.
func (c *runConfig) openChangelog(ctx context.Context, brokers []string, tx *txn.Producer, log *slog.Logger) (*changelog.Kafka, error) {
	n, err := topicPartitions(ctx, brokers, c.topic, c.faults.connectTimeout, log)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, nil
	case err != nil:
		return nil, err
	}
	store, err := changelog.NewKafka(changelog.Config{
		Brokers:        brokers,
		Topic:          c.changelogTopic,
		Partitions:     n,
		ConnectTimeout: c.faults.connectTimeout,
		Logger:         log,
		Transaction:    tx,
	})
	if err != nil {
		return nil, err
	}
	log.Info("keeping state in a Kafka changelog", "topic", c.changelogTopic, "partitions", n)
	return store, nil
}

// topicPartitions returns how many partitions topic has, retrying with a
// growing backoff, each attempt logged, for up to timeout while the
// brokers cannot be reached, as the Kafka input does.
func topicPartitions(ctx context.Context, brokers []string, topic string, timeout time.Duration, log *slog.Logger) (int32, error) {
	// Brokers that take connections and never answer must not hold an
	// attempt for sarama's 30s reads, and its retries, past timeout.
	cfg := kafkaconf.Probe(sarama.NewConfig(), timeout)
	cfg.Metadata.AllowAutoTopicCreation = false // the input topic is the producers' to create
	start := time.Now()
	backoff := firstRetry
	for attempt := 1; ; attempt++ {
		n, err := fetchPartitions(ctx, brokers, topic, &cfg, timeout-time.Since(start))
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, sarama.ErrUnknownTopicOrPartition):
			return 0, fmt.Errorf("partitions of input topic %q: %w", topic, err)
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("partitions of input topic %q: %w", topic, context.Cause(ctx))
		}
		if time.Since(start)+backoff > timeout {
			return 0, fmt.Errorf("partitions of input topic %q: brokers %v unreachable for %v (%d attempts): %w",
				topic, brokers, time.Since(start).Round(time.Millisecond), attempt, err)
		}
		log.Warn("kafka brokers unreachable; retrying", "topic", topic, "brokers", fmt.Sprint(brokers), "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("partitions of input topic %q: %w", topic, context.Cause(ctx))
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxRetry)
	}
}

// fetchPartitions asks for topic's partitions, first reaching the
// brokers within left, or until ctx is done (kafkaconf.Reach).
func fetchPartitions(ctx context.Context, brokers []string, topic string, cfg *sarama.Config, left time.Duration) (int32, error) {
	if err := kafkaconf.Reach(ctx, brokers, cfg, max(left, time.Millisecond)); err != nil {
		return 0, err
	}
	client, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		return 0, err
	}
	defer client.Close()
	ps, err := client.Partitions(topic)
	if err != nil {
		return 0, err
	}
	return int32(len(ps)), nil
}

// filePipeline builds the pipeline on an event file.
func (c *runConfig) filePipeline(in *input, out *outputs, opts []stream.Option, log *slog.Logger) *stream.Pipeline {
	// A regular file is cut by record count alone, so that its batches
	// are the same on every run; a pipe or a terminal is a live stream,
	// cut on the interval too.
	interval := c.interval
	if in.regular {
		interval = 0
		if c.batchRecords == 0 { // no limit: the whole file is one batch
			opts = append(opts, stream.MaxRecords(math.MaxInt))
		}
	}
	p := stream.NewPipeline(append(opts, stream.Interval(interval), stream.WithHook(newFileProgress(in.file, log)))...)
	log.Info("reading events", "input", c.input, "format", in.format.String(), "batch records", c.batchRecords)
	// The file is not keyed: the pipeline moves each user's scores to one
	// partition.
	wire(c, stream.From(p, in.src), func(line []byte) []byte { return line }, false, in.decoder, out)
	return p
}

// kafkaPipeline builds the pipeline on the Kafka topic -topic.
func (c *runConfig) kafkaPipeline(brokers []string, out *outputs, opts []stream.Option, tx *txn.Producer, log *slog.Logger) (*stream.Pipeline, error) {
	cfg := source.KafkaConfig{
		Brokers:        brokers,
		Topic:          c.topic,
		Group:          c.group,
		ConnectTimeout: c.faults.connectTimeout,
		// Without a checkpoint, a dynamic member: it leaves the group when
		// it stops, so that the partitions it held move at once to the
		// other members. With one, a static member named after the
		// checkpoint: a restart after a crash takes its partitions (and
		// their state) back at once, instead of waiting for the dead
		// member's session to expire.
		//
		// With -state changelog, a dynamic member too. The state is in
		// Kafka, so there is no directory to name the process after, and
		// group, topic and host alone would give every process of a group
		// on one host the same name: each would fence the other out. The
		// changelog exists for partitions that move between processes,
		// and any process restores what it is assigned; the price is that
		// a restart after a crash waits for the dead member's session to
		// expire (sarama's 10s by default) before it gets partitions.
		InstanceID:  c.instanceID(),
		Logger:      log,
		SaramaFetch: c.saramaFetch,
	}
	if tx != nil {
		cfg.Transaction = tx // offsets go in the batch's transaction
	}
	src, err := source.NewKafka(cfg)
	if err != nil {
		return nil, err
	}
	out.owns = src.Owns
	out.report.kafka = &kafkaWait{reached: src.Reached, brokers: brokers, timeout: c.faults.connectTimeout}
	dec, err := score.NewDecoder(score.FormatJSON)
	if err != nil {
		return nil, err
	}
	p := stream.NewPipeline(append(opts, stream.Interval(c.interval))...)
	log.Info("reading events from Kafka", "brokers", fmt.Sprint(brokers), "topic", c.topic, "group", c.group, "interval", c.interval)
	// The topic is keyed by user id (as produce writes it), so each
	// partition keeps the totals of its own users and nothing moves.
	wire(c, stream.From(p, src), func(m source.Message) []byte { return m.Value }, true, dec, out)
	return p, nil
}

// startEmbedded starts the embedded broker and, with -rate, the built-in
// producer, whose failure cancels the run. stop stops both, the producer
// first.
func (c *runConfig) startEmbedded(ctx context.Context, cancel context.CancelCauseFunc, log *slog.Logger, stderr io.Writer) (addr string, stop func(), err error) {
	topics := map[string]int32{c.topic: defaultPartitions, c.outTopic: 1}
	if c.faults.dlqTopic != "" {
		topics[c.faults.dlqTopic] = 1
	}
	if c.thresholdTopic != "" {
		topics[c.thresholdTopic] = 1
	}
	b, err := startBroker(c.listen, !c.listenSet, "", topics, log, stderr)
	if err != nil {
		return "", nil, err
	}
	addr = b.Addrs()[0]
	log.Info("embedded Kafka broker started", "addr", addr, "topics", fmt.Sprint(topics))
	if c.rate == 0 {
		return addr, b.Close, nil
	}
	gen := source.GeneratorConfig{Name: "producer", Seed: newSeed(), Start: defaultStart, Users: defaultUsers, Rate: c.rate}
	p, out, err := newProducer(ctx, gen, []string{addr}, c.topic, c.faults.connectTimeout, log)
	if err != nil {
		b.Close()
		return "", nil, err
	}
	log.Info("built-in producer started", "topic", c.topic, "rate", c.rate, "users", fmt.Sprintf("%d..%d", gen.Start, gen.Start+gen.Users))
	var producer sync.WaitGroup
	producer.Go(func() {
		err := p.Run(ctx)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			cancel(fmt.Errorf("built-in producer: %w", err))
		}
	})
	return addr, func() {
		cancel(nil)
		producer.Wait()
		b.Close()
	}, nil
}

// wire builds the pipeline with the sketch -sketch names.
func wire[T any](c *runConfig, raw *stream.Stream[T], event func(T) []byte, keyed bool, dec *score.Decoder, out *outputs) {
	if c.sketch == "exact" {
		popularUsers(raw, event, keyed, dec, func() (*digest.Counts, error) { return digest.NewCounts(), nil }, c.limit, out)
		return
	}
	popularUsers(raw, event, keyed, dec, func() (*digest.TDigest, error) {
		return digest.NewTDigest(digest.WithCompression(c.compression))
	}, c.limit, out)
}

// input is an event file opened and looked at.
type input struct {
	file    *source.File
	src     stream.Source[[]byte] // file, or its first lines held, then file
	format  score.Format
	decoder *score.Decoder
	regular bool // a regular file, not a pipe or a terminal
}

// openInput opens path ("-": stdin) and tells its format from the first
// line that is not blank, skipping a CSV header on line 1. It returns nil, nil when ctx is cancelled
// before the first line comes.
func openInput(ctx context.Context, path string, stdin io.Reader) (*input, error) {
	parts := source.Partitions(runtime.GOMAXPROCS(0)) // decode on every core
	in := &input{}
	var err error
	switch {
	case path == "-" && stdin == os.Stdin:
		// OpenFile reopens a pipe or a terminal so that a signal can
		// stop a read that waits for input.
		in.regular = isRegular(os.Stdin.Stat())
		in.file, err = source.OpenFile("-", parts)
	case path == "-":
		in.regular = true // a reader in memory has no live end
		in.file, err = source.NewFile("stdin", stdin, parts)
	default:
		// Named by its absolute path: the checkpoint keeps its offsets
		// by name, and a rerun of the same file as g.csv, ./g.csv or
		// /data/g.csv must resume it, not count it again.
		if abs, aerr := filepath.Abs(path); aerr == nil {
			path = abs
		}
		in.regular = isRegular(os.Stat(path))
		// A named pipe's open waits for a writer: not past a signal.
		in.file, err = source.OpenFileContext(ctx, path, parts)
	}
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("input: %w", err)
	}
	// The format is told from the first line that is not blank; blank
	// lines before it are held, to be decoded (as bad records) first.
	var held []stream.Record[[]byte]
	first, err := in.file.Peek(ctx)
	for err == nil && blankLine(first) {
		if len(held) == maxLeadingBlank {
			in.file.Close()
			return nil, fmt.Errorf("input %s: lines 1 to %d are blank: no line to tell the format from", path, maxLeadingBlank)
		}
		var one [1]stream.Record[[]byte]
		if _, err = in.file.Poll(ctx, one[:]); err != nil && !errors.Is(err, io.EOF) {
			break
		}
		held = append(held, one[0])
		if err == nil {
			first, err = in.file.Peek(ctx)
		}
	}
	in.src = in.file
	if len(held) > 0 {
		in.src = &heldFirst{File: in.file, held: held}
	}
	switch {
	case errors.Is(err, io.EOF):
		in.format = score.FormatCSV // empty: any decoder will do
	case err != nil && ctx.Err() != nil:
		in.file.Close()
		return nil, nil
	case err != nil:
		in.file.Close()
		return nil, fmt.Errorf("input: %w", err)
	default:
		in.format = score.DetectFormat(first)
	}
	if in.format == score.FormatUnknown {
		in.file.Close()
		return nil, fmt.Errorf("input %s: line %d is neither a JSON event nor a CSV row user_id,activity: %.80q", path, len(held)+1, first)
	}
	if len(held) == 0 && score.IsCSVHeader(first) {
		// Consume the header: line numbers in errors still count it.
		var one [1]stream.Record[[]byte]
		if _, err := in.file.Poll(ctx, one[:]); err != nil && !errors.Is(err, io.EOF) {
			in.file.Close()
			return nil, fmt.Errorf("input: %w", err)
		}
	}
	if in.decoder, err = score.NewDecoder(in.format); err != nil {
		in.file.Close()
		return nil, err
	}
	return in, nil
}

// maxLeadingBlank bounds the blank lines held before the first that
// tells an input's format.
const maxLeadingBlank = 10_000

// blankLine reports whether a line holds nothing but spaces, tabs, a
// "\r" or a byte order mark: a line no format can be told from.
func blankLine(line []byte) bool {
	return len(bytes.Trim(bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")), " \t\r")) == 0
}

// heldFirst is a File whose first lines were read before the pipeline
// ran: Poll yields them first.
type heldFirst struct {
	*source.File
	held []stream.Record[[]byte]
}

func (h *heldFirst) Poll(ctx context.Context, buf []stream.Record[[]byte]) (int, error) {
	if len(h.held) > 0 {
		n := copy(buf, h.held)
		h.held = h.held[n:]
		return n, nil
	}
	return h.File.Poll(ctx, buf)
}

// lastLineUnended reports whether the regular file at path ends with a
// line that has no line ending.
func lastLineUnended(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return false
	}
	var last [1]byte
	_, err = f.ReadAt(last[:], fi.Size()-1)
	return err == nil && last[0] != '\n'
}

func isRegular(fi os.FileInfo, err error) bool {
	return err == nil && fi.Mode().IsRegular()
}

// startCPUProfile writes a CPU profile to path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
