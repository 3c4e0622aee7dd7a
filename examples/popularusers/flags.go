package main

import (
	"io"
	"math"
	"net"
	"strings"
	"time"

	"github.com/sluicehq/sluice/digest"
	"github.com/sluicehq/sluice/sink"
)

// Defaults shared by the commands.
const (
	defaultListen   = "127.0.0.1:9092"
	defaultTopic    = "messages"
	defaultOutTopic = "popular_users"
	defaultRate     = 1000
	// The original producer's users: randint(1000, 10000), both ends
	// included.
	defaultStart = 1000
	defaultUsers = 9000
	// Partitions of the input topic on an embedded broker.
	defaultPartitions = 4
	// The original's quantile: a user above it is popular.
	defaultLimit = 0.95
)

// Values of -state.
const (
	stateDir       = "dir"
	stateChangelog = "changelog"
)

// runConfig is the configuration of the pipeline: the run command.
type runConfig struct {
	logConfig
	brokers        []string
	listen         string
	listenSet      bool // -listen was given, so a busy port is an error
	rate           float64
	topic          string
	outTopic       string
	group          string
	limit          float64
	interval       time.Duration
	batchRecords   int
	sketch         string
	compression    float64
	checkpoint     string
	checkpointSet  bool // -checkpoint was given: file input checkpoints too
	resetState     bool
	state          string // stateDir or stateChangelog
	changelogTopic string
	digestTopic    string
	input          string
	json           bool
	thresholdTopic string
	exactlyOnce    bool
	commitInterval time.Duration
	instance       string // names the process in its group; "" derives one
	cpuProfile     string
	metricsAddr    string
	saramaFetch    bool        // -sarama-fetch
	faults         faultConfig // bad input and unreachable brokers
}

func parseRun(args []string, stderr io.Writer) (*runConfig, error) {
	c := &runConfig{}
	fs := newFlagSet("run", `Reads activity events, keeps a running score per user, and every batch
reports the users whose score is above the -limit quantile of all scores.
With no -brokers and no -input, it starts an embedded Kafka broker and a
producer of random events, and shows results on its own.

The other commands, produce, generate, broker and bench, take flags of
their own: "popularusers help" lists them.`, stderr)
	brokers := fs.String("brokers", "", "Kafka bootstrap `addresses`, host:port,...; empty: start an embedded broker on -listen")
	fs.StringVar(&c.listen, "listen", defaultListen, "`address` of the embedded broker (host:0 picks a free port)")
	fs.Float64Var(&c.rate, "rate", defaultRate, "events per second of the embedded broker's built-in producer; 0: none")
	fs.StringVar(&c.topic, "topic", defaultTopic, "Kafka `topic` to read events from; it must be keyed by user id")
	fs.StringVar(&c.outTopic, "out-topic", defaultOutTopic, "Kafka `topic` to publish the popular users of every batch to")
	fs.StringVar(&c.group, "group", "popularusers", "Kafka consumer `group`; several processes of one group share the input's partitions (see -digest-topic)")
	fs.Float64Var(&c.limit, "limit", defaultLimit, "`quantile` of the scores above which a user is popular, in (0,1)")
	fs.DurationVar(&c.interval, "interval", 3*time.Second, "batch `interval` (Kafka and standard input)")
	fs.IntVar(&c.batchRecords, "batch-records", 100_000, "cut a batch after `n` records, before its interval is over; 0: no limit (a file is then one batch)")
	fs.DurationVar(&c.commitInterval, "commit-interval", time.Second, "commit the input offsets and checkpoint the totals at most once per `duration`: batches cut every -interval still commit each, while batches run back to back to catch up on a backlog commit once per this, their Kafka outputs delivered as the next batches run. After a crash, up to this much more input is read and published again. 0: every batch; with -exactly-once it is 0 (a batch is a transaction)")
	fs.StringVar(&c.sketch, "sketch", "tdigest", "quantile sketch: tdigest (estimate, bounded size) or exact (a count per distinct score)")
	fs.Float64Var(&c.compression, "compression", digest.DefaultCompression, "t-digest `compression`: higher is more accurate and larger")
	fs.StringVar(&c.checkpoint, "checkpoint", "checkpoint", "`directory` where the running totals and the input offsets they reflect are checkpointed after every batch (see -commit-interval), and restored from at start; empty: none. Used with -brokers, and with -input FILE when given")
	fs.BoolVar(&c.resetState, "reset-checkpoint", false, "discard the checkpoint in -checkpoint before starting, to start from empty totals on purpose")
	fs.StringVar(&c.state, "state", stateDir, "where the totals are kept: dir (the -checkpoint directory) or changelog (the compacted Kafka topic -changelog-topic, restored on whichever machine reads the partitions; needs -brokers)")
	fs.StringVar(&c.changelogTopic, "changelog-topic", "", "Kafka `topic` of -state changelog, created compacted with as many partitions as -topic if missing; empty: <group>-totals-changelog")
	fs.StringVar(&c.digestTopic, "digest-topic", "", "share the threshold between the processes of -group: each publishes the partial digest of each partition it owns to this compacted Kafka `topic`, and merges every partition's latest one; needs -state changelog. Empty: each process finds its threshold over its own partitions")
	fs.StringVar(&c.input, "input", "", "read events from `file` (- for standard input) instead of Kafka: CSV rows user_id,activity or JSON lines")
	fs.BoolVar(&c.json, "json", false, "print one JSON object per batch instead of a summary")
	fs.StringVar(&c.thresholdTopic, "threshold-topic", "", "also publish every batch's threshold to this Kafka `topic`")
	fs.BoolVar(&c.exactlyOnce, "exactly-once", false, "commit each batch's output (-out-topic, -threshold-topic, -dlq-topic), totals (-state changelog, implied) and input offsets in one Kafka transaction; consumers of the output read it with read_committed isolation. Needs -brokers")
	fs.StringVar(&c.instance, "instance", "", "`name` of this process in its -group, the same across restarts and different for each process: its static group membership and, with -exactly-once, its Kafka transactional.id; empty: derived from -checkpoint, or with -exactly-once from the group and host name")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile to `file`")
	fs.BoolVar(&c.saramaFetch, "sarama-fetch", false, "fetch the Kafka input through sarama's partition consumers instead of the source's own fetch loops: slower, for a setup the loops would not serve (see source.KafkaConfig.SaramaFetch)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://`address`/metrics and a live page on http://address/ (host:0 picks a free port); empty: off")
	c.faults.flags(fs)
	if err := parseFlags(fs, args, &c.logConfig); err != nil {
		return nil, err
	}
	var err error
	if c.brokers, err = splitBrokers(*brokers); err != nil {
		return nil, err
	}
	c.listenSet = isSet(fs, "listen")
	c.checkpointSet = isSet(fs, "checkpoint")
	embedded := len(c.brokers) == 0 && c.input == ""
	if c.exactlyOnce && !isSet(fs, "commit-interval") {
		c.commitInterval = 0
	}
	if c.exactlyOnce && !isSet(fs, "state") {
		c.state = stateChangelog // the totals must be in the transaction too
	}
	if c.changelogTopic == "" {
		c.changelogTopic = c.group + "-totals-changelog"
	}
	switch {
	case !(c.limit > 0 && c.limit < 1):
		return nil, usagef("-limit %v: must be a quantile strictly between 0 and 1, such as 0.95", c.limit)
	case c.interval <= 0:
		return nil, usagef("-interval %v: must be positive, such as 3s", c.interval)
	case c.batchRecords < 0:
		return nil, usagef("-batch-records %d: must be 0 (no limit) or more", c.batchRecords)
	case c.commitInterval < 0:
		return nil, usagef("-commit-interval %v: must be 0 (every batch) or positive, such as 1s", c.commitInterval)
	case c.exactlyOnce && c.commitInterval != 0:
		return nil, usagef("-commit-interval %v: with -exactly-once every batch is one transaction, committed with its offsets; leave it out", c.commitInterval)
	case c.sketch != "tdigest" && c.sketch != "exact":
		return nil, usagef("-sketch %q: must be tdigest or exact", c.sketch)
	case !(c.compression >= digest.MinCompression && c.compression <= digest.MaxCompression):
		return nil, usagef("-compression %v: must be between %d and %d", c.compression, digest.MinCompression, digest.MaxCompression)
	case !(c.rate >= 0) || math.IsInf(c.rate, 0):
		return nil, usagef("-rate %v: must be 0 (no producer) or a positive number of events per second", c.rate)
	case !embedded && (c.listenSet || isSet(fs, "rate")):
		return nil, usagef("-listen and -rate configure the embedded broker, which runs only without -brokers and -input (to feed a cluster, use \"popularusers produce\")")
	case c.input != "" && (isSet(fs, "topic") || isSet(fs, "group")):
		return nil, usagef("-topic and -group name the Kafka input; they do not go with -input")
	case c.topic == "" || c.outTopic == "" || c.group == "":
		return nil, usagef("-topic, -out-topic and -group must not be empty")
	case c.input == "" && (c.outTopic == c.topic || c.thresholdTopic == c.topic):
		return nil, usagef("-out-topic and -threshold-topic must differ from the input -topic %q", c.topic)
	case c.thresholdTopic != "" && c.thresholdTopic == c.outTopic:
		return nil, usagef("-threshold-topic must differ from -out-topic %q", c.outTopic)
	case c.thresholdTopic != "" && c.input != "" && len(c.brokers) == 0:
		return nil, usagef("-threshold-topic publishes to Kafka: with -input it needs -brokers")
	case isSet(fs, "out-topic") && c.input != "" && len(c.brokers) == 0:
		return nil, usagef("-out-topic publishes to Kafka: with -input it needs -brokers")
	case embedded && c.checkpointSet && c.checkpoint != "":
		return nil, usagef("-checkpoint: the embedded broker keeps no data across runs, so a checkpoint of its offsets would skip new events; use -brokers (see \"popularusers broker -data-dir\") or -input")
	case c.input == "-" && c.checkpointSet && c.checkpoint != "":
		return nil, usagef("-checkpoint with -input -: standard input is a new stream every run, and the lines a checkpoint counted would be skipped from the next one; checkpoint a named file")
	case c.resetState && c.checkpoint == "":
		return nil, usagef("-reset-checkpoint needs a -checkpoint directory")
	case c.resetState && c.state == stateDir && c.checkpointDir(len(c.brokers) > 0) == "":
		return nil, usagef("-reset-checkpoint: this run uses no checkpoint to discard (one is used with -brokers, or with -input FILE and -checkpoint DIR)")
	case c.state != stateDir && c.state != stateChangelog:
		return nil, usagef("-state %q: must be dir or changelog", c.state)
	case c.state != stateChangelog && isSet(fs, "changelog-topic"):
		return nil, usagef("-changelog-topic names the topic of -state changelog")
	case c.saramaFetch && c.input != "":
		return nil, usagef("-sarama-fetch is how the Kafka input is fetched; it does not go with -input")
	case c.exactlyOnce && (c.input != "" || len(c.brokers) == 0):
		return nil, usagef("-exactly-once commits Kafka transactions: it needs -brokers, and does not go with -input or the embedded broker")
	case c.exactlyOnce && c.state != stateChangelog:
		return nil, usagef("-exactly-once keeps the totals in the transaction, in -state changelog; -state dir cannot join a Kafka transaction")
	case c.state == stateChangelog && (c.input != "" || len(c.brokers) == 0):
		return nil, usagef("-state changelog keeps the totals in Kafka beside the input they count: it needs -brokers, and does not go with -input or the embedded broker")
	case c.digestTopic != "" && c.state != stateChangelog:
		return nil, usagef("-digest-topic shares the threshold between processes whose partitions move between them: each needs its totals in a changelog (-state changelog -brokers ...)")
	case c.state == stateChangelog && (c.checkpointSet || c.resetState):
		return nil, usagef("-checkpoint and -reset-checkpoint are for -state dir; with -state changelog, delete the -changelog-topic to start from empty totals on purpose")
	}
	if _, _, err := net.SplitHostPort(c.listen); embedded && err != nil {
		return nil, usagef("-listen %q: need host:port, such as 127.0.0.1:9092", c.listen)
	}
	if _, _, err := net.SplitHostPort(c.metricsAddr); c.metricsAddr != "" && err != nil {
		return nil, usagef("-metrics-addr %q: need host:port, such as 127.0.0.1:9464", c.metricsAddr)
	}
	if err := c.faults.check(fs, c); err != nil {
		return nil, err
	}
	switch c.changelogTopic {
	case c.topic, c.outTopic, c.thresholdTopic, c.faults.dlqTopic, c.digestTopic:
		if c.state == stateChangelog {
			return nil, usagef("-changelog-topic %q must differ from the input, output, threshold, dead-letter and digest topics", c.changelogTopic)
		}
	}
	switch c.digestTopic {
	case "":
	case c.topic, c.outTopic, c.thresholdTopic, c.faults.dlqTopic:
		return nil, usagef("-digest-topic %q must differ from the input, output, threshold and dead-letter topics", c.digestTopic)
	}
	return c, nil
}

// produceConfig is the configuration of the produce command.
type produceConfig struct {
	logConfig
	brokers []string
	topic   string
	rate    float64
	count   int64
	start   int64
	users   int64
	seed    uint64
	// connectTimeout bounds the wait for the brokers to answer.
	connectTimeout time.Duration
}

func parseProduce(args []string, stderr io.Writer) (*produceConfig, error) {
	c := &produceConfig{}
	fs := newFlagSet("produce", `Writes random activity events {"user_id":...,"activity":...} to a Kafka
topic, keyed by user id, as the original producer does.`, stderr)
	brokers := fs.String("brokers", defaultListen, "Kafka bootstrap `addresses`, host:port,...")
	fs.StringVar(&c.topic, "topic", defaultTopic, "Kafka `topic` to write to")
	fs.Float64Var(&c.rate, "rate", defaultRate, "events per second; 0: as fast as the brokers take them")
	fs.Int64Var(&c.count, "count", 0, "events to write before exiting; 0: until stopped")
	fs.Int64Var(&c.start, "start", defaultStart, "first user id")
	fs.Int64Var(&c.users, "users", defaultUsers, "user ids are uniform over start..start+users, both included")
	fs.Uint64Var(&c.seed, "seed", 0, "random seed; 0: a new one every run")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", sink.DefaultKafkaConnectTimeout, "give up after this `long` without reaching the Kafka brokers")
	if err := parseFlags(fs, args, &c.logConfig); err != nil {
		return nil, err
	}
	var err error
	if c.brokers, err = splitBrokers(*brokers); err != nil {
		return nil, err
	}
	switch {
	case len(c.brokers) == 0:
		return nil, usagef("-brokers: need at least one host:port")
	case c.topic == "":
		return nil, usagef("-topic must not be empty")
	case !(c.rate >= 0) || math.IsInf(c.rate, 0):
		return nil, usagef("-rate %v: must be 0 (as fast as possible) or a positive number of events per second", c.rate)
	case c.count < 0:
		return nil, usagef("-count %d: must be 0 (until stopped) or more", c.count)
	case c.connectTimeout <= 0:
		return nil, usagef("-connect-timeout %v: must be positive, such as 30s", c.connectTimeout)
	}
	if err := checkUsers(c.start, c.users); err != nil {
		return nil, err
	}
	return c, nil
}

// generateConfig is the configuration of the generate command.
type generateConfig struct {
	logConfig
	out   string
	users int64
	rows  int64
	start int64
	seed  uint64
}

func parseGenerate(args []string, stderr io.Writer) (*generateConfig, error) {
	c := &generateConfig{}
	fs := newFlagSet("generate", `Writes the original's static data set: CSV rows user_id,activity without a
header, users uniform over start..start+users, activities uniform. The same
seed gives the same file.`, stderr)
	fs.StringVar(&c.out, "o", "sample_data.csv", "output `file`; - for standard output")
	fs.Int64Var(&c.users, "users", 100_000, "user ids are uniform over start..start+users, both included")
	fs.Int64Var(&c.rows, "rows", 10_000_000, "rows to write")
	fs.Int64Var(&c.start, "start", defaultStart, "first user id")
	fs.Uint64Var(&c.seed, "seed", 1, "random seed")
	if err := parseFlags(fs, args, &c.logConfig); err != nil {
		return nil, err
	}
	switch {
	case c.out == "":
		return nil, usagef("-o: need a file name, or - for standard output")
	case c.rows < 0:
		return nil, usagef("-rows %d: must be 0 or more", c.rows)
	}
	if err := checkUsers(c.start, c.users); err != nil {
		return nil, err
	}
	return c, nil
}

// brokerConfig is the configuration of the broker command.
type brokerConfig struct {
	logConfig
	listen     string
	partitions int
	dataDir    string
}

func parseBroker(args []string, stderr io.Writer) (*brokerConfig, error) {
	c := &brokerConfig{}
	fs := newFlagSet("broker", `Runs an embedded Kafka broker until interrupted, with the topics messages
(-partitions partitions), popular_users and messages.dlq (1 partition each),
so that several pipelines and producers can share it.`, stderr)
	fs.StringVar(&c.listen, "listen", defaultListen, "`address` to listen on")
	fs.IntVar(&c.partitions, "partitions", defaultPartitions, "partitions of the messages topic")
	fs.StringVar(&c.dataDir, "data-dir", "", "`directory` that keeps topics, records and group offsets across restarts; empty: memory only")
	if err := parseFlags(fs, args, &c.logConfig); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return nil, usagef("-listen %q: need host:port, such as 127.0.0.1:9092", c.listen)
	}
	switch {
	case c.partitions < 1 || c.partitions > 1000:
		return nil, usagef("-partitions %d: must be between 1 and 1000", c.partitions)
	}
	return c, nil
}

// splitBrokers splits a comma-separated list of host:port addresses.
func splitBrokers(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []string
	for _, b := range strings.Split(s, ",") {
		b = strings.TrimSpace(b)
		if b == "" || !strings.Contains(b, ":") {
			return nil, usagef("-brokers %q: need host:port addresses separated by commas", s)
		}
		out = append(out, b)
	}
	return out, nil
}

// checkUsers checks a range of user ids as source.GeneratorConfig takes it.
func checkUsers(start, users int64) error {
	switch {
	case start < 1:
		return usagef("-start %d: user ids start at 1", start)
	case users < 0 || start > math.MaxInt64-users:
		return usagef("-users %d from -start %d: out of range", users, start)
	}
	return nil
}
