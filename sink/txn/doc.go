// Package txn holds a transactional Kafka producer, shared by the Kafka
// adapters of one pipeline so that each batch is one Kafka transaction:
// exactly-once processing.
//
//	tx, err := txn.New(txn.Config{Brokers: brokers, ID: "popularusers-host-a"})
//	defer tx.Close()
//	out, err := sink.NewKafka(sink.KafkaConfig{Brokers: brokers, Topic: "popular_users", Transaction: tx}, encode)
//	store, err := changelog.NewKafka(changelog.Config{Brokers: brokers, Topic: "totals", Partitions: 4, Transaction: tx})
//	src, err := source.NewKafka(source.KafkaConfig{Brokers: brokers, Topic: "messages", Group: "g", InstanceID: "host-a", Transaction: tx})
//	p := stream.NewPipeline(stream.WithStore(store), stream.WithTransaction(tx))
//
// The pipeline begins a transaction before a batch's outputs, the sinks
// and the changelog write in it, the source adds the group's offsets to it
// (TxnOffsetCommit, with the group generation), and the pipeline commits
// it; any failure aborts it and stops the run. Consumers of the output
// must read with isolation level read_committed to see committed batches
// only; the changelog restores that way.
//
// # Transactional ID and fencing
//
// Config.ID is the transactional.id. It must be stable per process
// identity, such as the group and the static member's instance ID: a
// process restarted with the same ID registers it again (Init, or the
// first Begin), which bumps the producer epoch, so that its predecessor,
// if it still runs, is fenced off (its writes and commit fail), and
// aborts the transaction the predecessor left open. The predecessor's
// Producer then fails with ErrFenced, and stays stopped: starting again
// would fence off its successor in turn. A changelog Restore
// registers the ID before it reads, for that open transaction would hold
// read_committed reads back until it timed out (Config.Timeout). Two live
// processes with one ID fence each other off in turn: give each its own.
//
// # Limits
//
// The Producer serializes its callers: one write, one commit at a time.
// A write that fails cannot be retried within the transaction: the abort
// that follows starts a new producer epoch, so that nothing of the
// aborted transaction can land after it. With Kafka 2.5 or later the new
// epoch is asked for as a bump of the producer's own (KIP-360), which the
// coordinator refuses to a producer fenced off; an abort of a transaction
// whose writes all succeeded keeps the epoch, as Kafka's producer does.
// When the abort itself fails (but for finding no transaction open), or
// is given up (a ctx done, Close), or with Kafka before 2.5, the next
// Begin registers the ID afresh (but after a write refused for a stale
// epoch: see below), as a restarted process does: a producer that did
// not hear it was fenced off would fence off the newer one in turn. A
// process whose transaction failed should stop, as a pipeline's run
// does, rather than Begin again. A transaction that outlives Config.Timeout fails (see
// below). The Producer sends the group's
// offsets (with the group's generation) as the transaction commits, not
// as they are added: the source counts them committed, and lets a revoked partition
// go, once the transaction has committed (OnEnd), so that the group does
// not move to its next generation before. That takes an eager rebalance,
// the Kafka source's default with a transaction. In a cooperative one (a
// strategy such as cooperative-sticky set in its Sarama config) the
// generation moves without the claims ending: a rebalance between a
// batch's offsets and its commit fails the transaction, as it does one
// that fails otherwise. Then the run stops, nothing of the batch is
// committed, and the partitions' next owners resume at the last committed
// offsets (exactly once holds; a restarted process goes on).
//
// # Transactions timed out
//
// The brokers abort a transaction that outlives Config.Timeout, and move
// the producer's epoch on, as a newer producer's registration does. A
// partition leader then refuses the producer's next write for its epoch
// (INVALID_PRODUCER_EPOCH), or for the transaction being over
// (INVALID_TXN_STATE, as franz-go's kfake does), without knowing which of
// the two moved the epoch on; coordinators before Kafka 2.7 answer a
// producer fenced off INVALID_PRODUCER_EPOCH too. The Producer takes
// PRODUCER_FENCED, wherever it comes from, as a fence. A write refused so
// fails the transaction, and its abort, as Kafka's producer does
// (KIP-360), sends no EndTxn, which the coordinator would answer
// PRODUCER_FENCED either way, but asks for a bump of the producer's own
// epoch, which aborts what is left of the transaction: granted, the next
// transaction goes on in the new epoch; refused, the Producer is fenced
// off, and Abort returns ErrFenced. After such a write the ID is never
// registered afresh, which would fence off the newer producer, if there
// is one: without the bump (Kafka before 2.5, in the Sarama config's
// Version or at the coordinator, or a producer ID the coordinator does
// not know), nothing tells the two apart, and the Producer stops for
// good.
//
// The coordinator has the last word. KIP-588 has it grant the bump to a
// producer whose transaction it timed out and refuse it to one fenced
// off; kfake grants it, to a producer fenced off too, and there the
// Producer goes on after a timeout. Kafka's coordinator (2.7 to 4.x, by
// its source) forgets the epoch before when it times a transaction out,
// as when a newer producer registers, and refuses the bump
// (PRODUCER_FENCED): against Kafka, a transaction timed out still stops
// the Producer, at its abort. So does a timeout found by a request to the
// coordinator rather than by a write (adding partitions or offsets, the
// commit), which the coordinator answers PRODUCER_FENCED. A batch must
// still fit in the transaction timeout.
package txn
