// Package changelog keeps the state of a stream.Pipeline in a compacted
// Kafka topic, one record per changed key, as Kafka Streams and goka do,
// so that the state can be rebuilt on any machine that reaches the
// brokers.
//
// Prefer it to stream/checkpoint, which keeps state in a local directory,
// when the partitions of a consumer group move between processes: the
// process that is assigned a partition restores that partition's state
// from the topic, wherever the state was written. Prefer
// stream/checkpoint for a single process with a disk of its own: it
// restores without the network and needs no broker.
//
//	store, err := changelog.NewKafka(changelog.Config{
//		Brokers: brokers, Topic: "popular-state-changelog", Partitions: 12,
//	})
//	defer store.Close()
//	p := stream.NewPipeline(stream.WithStore(store))
//
// # Format
//
// Entry e of state partition p is written to partition p of the topic.
// Its key is the format version (1), the byte 0, the length of e.Op as a
// uvarint, e.Op and e.Key; its value is the version and e.Value, and a
// deleted key is a tombstone (a null value), which compaction removes in
// time. Every checkpoint ends, in each partition it writes, with a marker:
// a record whose key is the version and the byte 1, which no entry key can
// equal, and whose value is the version, a kind (checkpoint or repair), a
// sequence number, the batch ID, the offset of the partition's previous
// marker, the partitions the checkpoint writes, the checkpoints a repair
// revoked, and the input offsets the state reflects. A record of another
// version is an error (ErrVersion), as is one that does not decode
// (ErrCorrupt), each naming the record's topic, partition and offset: the
// state is never silently reset. Delete the topic to start from nothing
// on purpose.
//
// # Atomicity without transactions
//
// Checkpoint writes every entry, waits until all are acknowledged, then
// writes the markers and waits for those. Restore reads each partition
// from its oldest record, but only up to its last marker: what follows is
// a checkpoint that a crash cut short, and is not restored. The records
// are streamed to the pipeline as they are read; Restore first reads the
// end of each partition to find its last marker, and holds in memory only
// the keys written after it.
//
// A checkpoint may be cut short after the markers of some partitions.
// Restoring all partitions (Restore with nil, as a pipeline without a
// consumer group does), a checkpoint counts only if every partition it
// wrote holds its marker, or a later one: otherwise each partition is
// rolled back to the marker before, whose offset the last one names, and
// the input offsets are those of the last checkpoint that finished. This
// is what a shuffled pipeline needs, whose every state partition depends
// on every input partition. Restoring some partitions (as a consumer group
// member does when it is assigned them), each is restored to its own last
// marker, with the offsets of the input partition of the same number:
// this is right for a Keyed pipeline, whose state partition p counts
// input partition p and nothing else, and such a pipeline is the one
// whose partitions can move between processes.
//
// # Repair
//
// Ignoring the records of an unfinished checkpoint is not enough. The next
// marker written to the partition would make them count, and compaction,
// which keeps the latest record of each key, may drop the older value of
// a key whose newer value they hold. So before Restore returns, it writes,
// for every key written after the marker it restored to, the value the key
// had there (or a tombstone), then a repair marker. Restore finds those
// values in the same pass that restores the state.
//
// The repair closes the gap only once it is written: Kafka never compacts
// the active segment of a partition, where the last records are, but if
// the segment rolls (every 10 minutes on a topic the store creates, see
// Topic) in the middle of an unfinished checkpoint and the log cleaner
// compacts it before the next restore, an older value can be lost.
// min.compaction.lag.ms rules that out for as long as it lasts: an hour on
// a topic the store creates; set it (Config.TopicConfig) to how long a
// partition may wait for its next owner. A process that has
// lost its partitions but still writes (a "zombie") is not fenced off;
// the consumer group protocol keeps that window short.
//
// # Exactly once
//
// With Config.Transaction, a checkpoint is written in the open Kafka
// transaction of a sink/txn.Producer, with the batch's output and input
// offsets, and counts only once the transaction commits. Restore then
// registers the transactional ID first (fencing off the process it
// replaces and aborting what that one left open). The markers stay: they
// delimit checkpoints as before, and a topic written without transactions
// earlier is restored and repaired the same way (a repair is a
// transaction of its own).
//
// Restore reads the topic read_committed, with a Transaction or without,
// skipping the records of aborted transactions: a topic written in
// transactions and restored by a store without one (a pipeline run again
// without exactly-once) restores what the transactions committed. A
// transaction that a process which died left open then holds the restore
// back until the brokers abort it (the producer's transaction timeout):
// only a store with the same transactional ID aborts it at once.
//
// # Partitions
//
// The state of partition p and the offsets of input partition p go to
// partition p of the topic, so it needs at least as many partitions as
// the input topic, and, for a shuffled pipeline, as its Parallelism. A
// topic holds
// the state of one pipeline, restored the way it was written: by a
// consumer group member, partition by partition, or whole. The first
// Checkpoint creates a missing topic with
// Config.Partitions partitions and cleanup.policy=compact, and fails,
// naming the topic and partition, if an existing topic has too few or is
// not compacted.
//
// # Topic
//
// A topic the store creates has segment.ms of 10 minutes and
// min.compaction.lag.ms of an hour, unless Config.TopicConfig sets them.
// Kafka never compacts the segment being written, which it rolls by
// default at 1 GiB or after 7 days: a restore would otherwise read up to
// that much of values since replaced. The lag keeps the last hour's
// records, so that an unfinished checkpoint is repaired before the cleaner
// can drop the values it replaced (see Repair); a restore reads about an
// hour of changes more. A topic made beforehand should be given the same.
package changelog
