package stream

import "context"

// Transaction makes each batch all or nothing: its outputs, its state
// checkpoint and its source commit are committed together, or none of
// them is. It is what exactly-once processing needs from the system the
// outputs, the Store and the source's offsets live in, such as Kafka
// (sink/txn.Producer, which the Kafka sink, the changelog store and the
// Kafka source write through).
//
// With WithTransaction, every batch is run as
//
//	Begin -> outputs -> Store.Checkpoint -> Committer.Commit -> Commit
//
// and a failure anywhere after Begin calls Abort and stops the run: the
// state in memory holds the batch, which the transaction no longer does,
// so the run must restart from the Store. The methods are called from the
// run loop's goroutine, one batch at a time. A panic in one of them fails
// Run with a *PanicError naming the method; after a panic in Begin or
// Commit, which may leave the transaction open, Abort is called.
//
// When Run's DrainTimeout has passed, the ctx of Commit and Abort is done
// a second later: they may then return with ctx's error, leaving the
// commit or abort to finish in the background (all of the transaction
// committed, or none of it), so that Run does not wait for a broker that
// does not answer.
type Transaction interface {
	// Begin opens the transaction of the next batch.
	Begin(ctx context.Context) error
	// Commit commits the open transaction. When it fails, nothing of the
	// batch must be visible: Commit aborts what it cannot commit.
	Commit(ctx context.Context) error
	// Abort discards the open transaction, if any.
	Abort(ctx context.Context) error
}

// WithTransaction runs every batch in a transaction of t (see
// Transaction). The state is checkpointed with every batch, inside the
// transaction: it cannot go with CheckpointEvery above 1.
func WithTransaction(t Transaction) Option { return optionFunc(func(c *config) { c.txn = t }) }
