// Command popularusers finds the most active users of a stream of activity
// events: the pipeline of a classic Spark Streaming + Kafka tutorial
// (pythian/spark_streaming_percentile), built on sluice.
//
// Events are JSON objects {"user_id": 1234, "activity": "profile.view"} on a
// Kafka topic, or CSV rows 1234,profile.view in a file. Every activity has
// a score (profile.picture.like 2, profile.view 1, message.private 3); the
// pipeline keeps a running total per user and, every batch, finds the
// -limit quantile (0.95) of all totals with a t-digest built per partition
// and merged. The users whose total is strictly above it are popular: they
// are printed, and published to Kafka with the key popular_<unix seconds>
// and the value [user_id, score].
//
// # Usage
//
//	popularusers [run] [flags]     the pipeline (the default command)
//	popularusers produce [flags]   random events to a Kafka topic
//	popularusers generate [flags]  the original's static data set as CSV
//	popularusers broker [flags]    an embedded Kafka broker, until stopped
//	popularusers bench [flags]     the pipeline's speed against a bare consumer and line count
//
// With no flags, run starts an embedded Kafka broker on 127.0.0.1:9092 (or
// a free port if that one is taken) with the topics messages (4 partitions)
// and popular_users, a producer of 1000 random events per second, and the
// pipeline, which prints a summary every 3 seconds:
//
//	go run ./examples/popularusers
//
// Against a Kafka cluster, whose input topic must be keyed by user id:
//
//	popularusers -brokers kafka1:9092,kafka2:9092 -topic messages -out-topic popular_users
//
// On a file, in batches of -batch-records records, printing one JSON line
// per batch:
//
//	popularusers generate -o data.csv
//	popularusers -input data.csv -json
//
// Run "popularusers <command> -h" for every flag.
//
// # Output
//
// Without -json, run prints per batch its number, the records read, their
// rate, the users in the state, the threshold, how many users are popular
// and the top 10. With -json it prints one line per batch:
//
//	{"batch":N,"records":R,"bad":B,"users":U,"threshold":T,"popular":[{"user_id":ID,"score":S},...]}
//
// records and bad count the batch's input records and those that did not
// decode; users is the number of users in the state; threshold is null
// until there is a user; popular lists every popular user by score,
// highest first, then by user id. Reading Kafka, a batch is printed every
// -interval even when no record came, so that a watcher can tell an idle
// stream from a stopped one.
//
// Records that do not decode are left out, counted by kind, logged with
// their origin (the first 5 of a batch), and written as dead letters: to
// the -dead-letter file, one JSON object per line (with a Kafka record's
// key, if it has one),
//
//	{"dead_letter":"/data/data.csv:17","kind":"unknown activity","error":"...","record":"..."}
//
// and, reading Kafka, to the topic -dlq-topic (<topic>.dlq by default),
// unchanged, with the error, kind and origin in headers; to standard error
// when there is neither. -max-bad-ratio fails the run when a batch holds a
// greater share of them. A running total that would overflow int64 stays
// at its largest value, with a warning.
//
// Brokers that cannot be reached are retried with backoff, each attempt
// logged, for -connect-timeout; a batch whose Kafka output fails is
// retried, uncommitted, for -output-retry (with -exactly-once it is not:
// its transaction is aborted). Past either, the run fails.
//
// # Exit status
//
// 0 when the input ended, or after SIGINT or SIGTERM: the batch in progress
// is finished, published and committed first (a second signal stops the
// program at once, with 128 plus the signal's number). 1 on a runtime failure, 2 on a bad command line, each
// with a message on standard error. generate writes its file whole or not
// at all: interrupted, it leaves no file and exits 1.
//
// # State
//
// With -brokers, the running totals and the input offsets they reflect are
// checkpointed to the -checkpoint directory whenever a batch is committed
// (every batch, or at most once per -commit-interval when batches run back
// to back), before the offsets are committed to Kafka; a restart restores them and skips the
// events they already count, so totals stay exact across crashes.
// -reset-checkpoint discards the checkpoint. With -input, a checkpoint is
// used only when -checkpoint is given. The embedded broker keeps nothing
// across runs and is never checkpointed.
//
// With -state changelog, the totals and offsets go instead to the compacted
// Kafka topic -changelog-topic (default <group>-totals-changelog), one
// partition per input partition, so that whichever process is assigned a
// partition restores its totals, on any machine. With -exactly-once, each
// batch's outputs, changed totals and input offsets are one Kafka
// transaction, under the transactional.id -instance.
//
// With -digest-topic, the processes of one -group share one threshold:
// each publishes the partial sketch of every partition it owns to that
// compacted topic, and merges the latest partial of every partition.
// Partials of another -sketch or -topic, of an earlier owner sent late,
// or that do not decode are left out of the threshold, with a warning.
package main
