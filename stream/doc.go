// Package stream is a micro-batch stream processing engine, in the manner
// of Spark Streaming's DStreams: records from a source are cut into
// batches on an interval or a record count, every batch is computed by a
// graph of typed operators over its partitions in parallel, outputs run,
// and only then is the batch committed back to the source.
//
// # Building a pipeline
//
//	p := stream.NewPipeline(stream.Interval(3*time.Second))
//	events := stream.From(p, src)                          // *Stream[[]byte]
//	pairs := stream.Keyed(stream.Map(events, toUserScore)) // *Stream[Pair[int64, int64]]
//	totals := stream.UpdateStateByKey(pairs, updateTotal)  // running total per user
//	stream.ForEachBatch(totals, publish)                   // side effects go here
//	err := p.Run(ctx)
//
// where updateTotal adds a user's scores of the batch to the user's total:
//
//	func updateTotal(user int64, scores []int64, total int64, _ bool) (int64, bool) {
//		for _, s := range scores {
//			total += s
//		}
//		return total, true // false would drop the user
//	}
//
// Keyed says that src already holds all the events of a user in one
// partition, as a Kafka topic keyed by user ID does. On a source whose
// partitions move between processes, such as source.Kafka, state must
// stay in them, so UpdateStateByKey needs it: Run fails at start
// otherwise. On other sources it may be left out, and UpdateStateByKey
// moves the values by a hash of the key first.
//
// Operators are generic top-level functions, typed end to end:
//
//   - stateless: Map, Filter, FlatMap, MapErr, TryMap, MapPartitions, Transform;
//   - aggregating: Reduce, ReduceByKey, PartitionByKey, Keyed, and
//     Broadcast, which hands a value of the whole batch (Reduce's) to
//     every partition;
//   - stateful: UpdateStateByKey, with TTLBatches, TTL, UpdateAll and Observe;
//   - windows: Window and ReduceByKeyAndWindow, counted in batches;
//   - outputs: ForEachBatch, ForEachPartition and To (a Sink).
//
// Nothing runs until Run. A stream may feed several operators; each of its
// batches is computed once. A graph built wrong (a nil function, sink or
// source, a window of no batches, Broadcast of a side stream of another
// pipeline) makes Run fail at start, naming the operator.
//
// # Batches and partitions
//
// A Batch is split into partitions. A source names each record's partition
// in its Origin: a Kafka partition, or a share of a file's lines. The
// partitions of a batch are processed in parallel (Parallelism, by default
// GOMAXPROCS); the values of one partition in order, by one goroutine.
// Keyed operators need all values of a key in one partition: either the
// source already partitions by key (declare it with Keyed; state then lives
// with the source partition that owns the key, which is what lets several
// processes share a Kafka topic), or PartitionByKey moves the values, as
// ReduceByKey and UpdateStateByKey do by themselves otherwise.
//
// A batch and its slices are valid only while the function it is handed to
// runs: the engine reuses its buffers. Copy what must be kept.
//
// # Origins and errors
//
// Every input record carries its Origin (source, partition, offset or
// line), and element-wise operators carry it along, so that MapErr can say
// "record messages/3@1042: ..." and TryMap can hand failed values, with
// their origin, to a dead-letter output. Run returns the first error of
// any stage, wrapped in a *StageError (the stage's name and batch), a
// *PartitionError, a *KeyError (the key whose values were being combined,
// or whose state was being updated) and a *RecordError as far as they
// apply; use errors.As. A panic in a function given to an operator is
// such an error, a *PanicError, and so is one in a hook, an OnRebalance
// function, a state's codec or observer, or a method of the source, a
// sink, the Store or the Transaction, named in the error.
//
// # Delivery
//
// A batch is committed (Committer) after every output of it has returned
// without error, and every sink that stores after its Write returns
// (Flusher) has been flushed. A crash or an error before that leaves the
// batch uncommitted, and a source such as Kafka delivers it again: outputs
// are at least once. CommitInterval commits at most once per interval, so
// that batches run back to back do not each wait for a commit and their
// outputs' acknowledgements. Cancelling Run's context cuts the batch being
// collected, finishes it, commits it and returns nil; DrainTimeout bounds
// how long that may take. Run leaves no goroutine behind.
//
// # Durable state
//
// With WithStore, the state of every UpdateStateByKey, and what every
// window (Window, ReduceByKeyAndWindow) holds, survives a restart: after a
// batch's outputs, what changed in the state and the windows is
// checkpointed to the Store together with the input offsets it reflects,
// and only then is the batch committed to the source. On start (or when
// an Assigner source gains partitions) the state is restored, and input
// records below the restored offsets are dropped as already counted, so
// that a crash between the checkpoint and the commit does not count them
// twice; no commit goes back below them. They are dropped as they are
// read: they count neither toward MaxRecords nor in a batch, an interval
// that read only those starts again, and a rerun of an input the state
// has counted to its end runs no batch, leaving the state, its TTLs and
// the windows as they were; their offsets are committed with the next
// batch, or as Run ends. A source that ends (io.EOF)
// below the restored offsets of a partition it read from is not the input
// checkpointed (a file replaced by a shorter one): Run fails as it ends,
// before committing. A window restored goes on sliding in step, so that
// the windows after a restart are those of a run that did not stop; one
// restored with a partition gained holds the partition's batches as they
// were as of the checkpoint. Name stateful operators and windows
// (Stream.Named): the name, not the position in the graph, keys their
// state, so the program around them may change. Package
// stream/checkpoint keeps state in a local directory, and package
// sink/changelog in a compacted Kafka topic, from which a partition's
// state can be rebuilt on whichever process the partition moves to.
//
// With WithTransaction, each batch's outputs, checkpoint and source commit
// are one transaction (see Transaction): exactly once when the outputs,
// the Store and the source's offsets all live where the transaction does,
// as in Kafka with sink/txn.
//
// # Observing a pipeline
//
// WithHook adds a Hook, told after every batch what it did (BatchStats:
// records and lag per input partition, processing time and scheduling
// delay, the time of each output, of the checkpoint and of the commit, the
// size of every state and window), if it implements RestoreHook, how a
// restore of durable state progresses, and, if it implements
// FinalCommitHook, the commit with which Run ends of what the batches
// CommitInterval held back read, which comes after the last batch. The
// engine itself logs through the Logger option (log/slog): rebalances and
// restores at Info, with a progress line every second of a long restore,
// and a line per batch at Debug.
// Package stream/prom exports what hooks see as Prometheus metrics; the
// engine imports no metrics library.
//
// # Sources and sinks
//
// A Source has one method, Poll. Optional interfaces add what some sources
// need: Committer (progress), Runner (background work, such as a consumer
// group session), Assigner (partitions that come and go in a rebalance;
// the state and the windowed batches of lost partitions are dropped, and
// those of partitions gained restored from the Store, which
// needs them in the source's partitions, not moved by a hash of the keys:
// Run fails at start otherwise; and OnRebalance hooks run) and
// Lagger (how far behind the pipeline is, for metrics). A Sink has one
// method, Write, called once per batch. Packages source and sink hold
// adapters for memory, files, a random event generator and Kafka.
package stream
