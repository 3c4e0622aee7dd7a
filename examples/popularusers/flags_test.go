package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestBadCommandLinesExitWithUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"limit above 1", []string{"-limit", "1.5"}, "-limit 1.5: must be a quantile strictly between 0 and 1"},
		{"limit 0", []string{"-limit", "0"}, "-limit 0: must be"},
		{"limit 1", []string{"run", "-limit", "1"}, "-limit 1: must be"},
		{"limit NaN", []string{"-limit", "NaN"}, "-limit NaN: must be"},
		{"limit not a number", []string{"-limit", "high"}, `invalid value "high" for flag -limit`},
		{"unknown sketch", []string{"-sketch", "foo"}, `-sketch "foo": must be tdigest or exact`},
		{"zero interval", []string{"-interval", "0s"}, "-interval 0s: must be positive"},
		{"negative batch records", []string{"-batch-records", "-1"}, "-batch-records -1"},
		{"compression too low", []string{"-compression", "5"}, "-compression 5: must be between 10 and 10000"},
		{"negative rate", []string{"-rate", "-3"}, "-rate -3"},
		{"rate with brokers", []string{"-brokers", "localhost:9092", "-rate", "10"}, "-listen and -rate configure the embedded broker"},
		{"listen with input", []string{"-input", "x.csv", "-listen", ":0"}, "-listen and -rate configure the embedded broker"},
		{"topic with input", []string{"-input", "x.csv", "-topic", "t"}, "-topic and -group name the Kafka input"},
		{"output to the input topic", []string{"-out-topic", "messages"}, "must differ from the input -topic"},
		{"broker without port", []string{"-brokers", "localhost"}, "need host:port addresses"},
		{"threshold topic without Kafka", []string{"-input", "x.csv", "-threshold-topic", "t"}, "-threshold-topic publishes to Kafka: with -input it needs -brokers"},
		{"output topic without Kafka", []string{"-input", "x.csv", "-out-topic", "t"}, "-out-topic publishes to Kafka: with -input it needs -brokers"},
		{"exactly once without Kafka", []string{"-exactly-once"}, "-exactly-once commits Kafka transactions: it needs -brokers"},
		{"exactly once with a directory", []string{"-brokers", "k:9092", "-exactly-once", "-state", "dir"}, "-exactly-once keeps the totals in the transaction, in -state changelog"},
		{"listen without port", []string{"-listen", "localhost"}, `-listen "localhost": need host:port`},
		{"broker listen without port", []string{"broker", "-listen", "9092"}, `-listen "9092": need host:port`},
		{"unknown flag", []string{"-bogus"}, "flag provided but not defined: -bogus"},
		{"positional argument", []string{"-json", "extra"}, `unexpected argument "extra"`},
		{"unknown command", []string{"serve"}, `unknown command "serve"`},
		{"produce negative count", []string{"produce", "-count", "-1"}, "-count -1"},
		{"produce no brokers", []string{"produce", "-brokers", ""}, "-brokers: need at least one"},
		{"produce user 0", []string{"produce", "-start", "0"}, "-start 0: user ids start at 1"},
		{"produce connect timeout 0", []string{"produce", "-connect-timeout", "0s"}, "-connect-timeout 0s: must be positive"},
		{"generate negative rows", []string{"generate", "-rows", "-5"}, "-rows -5"},
		{"generate no output", []string{"generate", "-o", ""}, "-o: need a file name"},
		{"unknown state", []string{"-state", "disk"}, `-state "disk": must be dir or changelog`},
		{"changelog without brokers", []string{"-state", "changelog"}, "-state changelog keeps the totals in Kafka beside the input they count: it needs -brokers"},
		{"changelog with input", []string{"-state", "changelog", "-input", "x.csv", "-brokers", "localhost:9092"}, "does not go with -input"},
		{"changelog with checkpoint", []string{"-state", "changelog", "-brokers", "localhost:9092", "-checkpoint", "d"}, "-checkpoint and -reset-checkpoint are for -state dir"},
		{"changelog on the input topic", []string{"-state", "changelog", "-brokers", "localhost:9092", "-changelog-topic", "messages"}, `-changelog-topic "messages" must differ`},
		{"changelog topic with dir", []string{"-brokers", "localhost:9092", "-changelog-topic", "c"}, "-changelog-topic names the topic of -state changelog"},
		{"metrics address without port", []string{"-metrics-addr", "nonsense"}, `-metrics-addr "nonsense": need host:port`},
		{"sarama fetch with input", []string{"-input", "x.csv", "-sarama-fetch"}, "-sarama-fetch is how the Kafka input is fetched; it does not go with -input"},
		{"broker no partitions", []string{"broker", "-partitions", "0"}, "-partitions 0"},
		{"reset without a checkpoint of the input", []string{"-input", "x.csv", "-reset-checkpoint"}, "-reset-checkpoint: this run uses no checkpoint"},
		{"reset on the embedded broker", []string{"-reset-checkpoint"}, "-reset-checkpoint: this run uses no checkpoint"},
		{"checkpoint of standard input", []string{"-input", "-", "-checkpoint", "d"}, "-checkpoint with -input -: standard input is a new stream every run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runMain(t, context.Background(), "", tc.args...)
			assert.Equal(t, exitUsage, r.code)
			assert.Contains(t, r.stderr, tc.want)
			assert.Empty(t, r.stdout)
			assert.NotContains(t, r.stderr, "level=", "nothing started")
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"run", "-help"}, {"produce", "-h"}, {"generate", "-h"}, {"broker", "-h"}} {
		r := runMain(t, context.Background(), "", args...)
		assert.Equal(t, exitOK, r.code, "%v", args)
		assert.Contains(t, r.stderr, "Usage: popularusers", "%v", args)
		assert.Contains(t, r.stderr, "(default info)", "%v: the default -log-level named as the usage names the levels", args)
	}
	r := runMain(t, context.Background(), "", "-h")
	assert.Contains(t, r.stderr, `produce, generate, broker and bench`, "the default command's usage names the others")
	assert.Contains(t, r.stderr, `"popularusers help"`)
	r = runMain(t, context.Background(), "", "help")
	assert.Equal(t, exitOK, r.code)
	assert.Contains(t, r.stdout, "popularusers generate")
}
