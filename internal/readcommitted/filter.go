// Package readcommitted tells, in a read_committed fetch response, the
// record batches of aborted transactions from the others, as a Kafka
// consumer does: the brokers hold back what is not yet committed, but
// return aborted records with a list of the transactions aborted, for the
// client to skip.
package readcommitted

import (
	"cmp"
	"slices"

	"github.com/IBM/sarama"
)

// Filter skips the batches of aborted transactions of one fetch response
// block, which must be looked at in offset order. The zero Filter skips
// only control batches.
type Filter struct {
	aborted []*sarama.AbortedTransaction // not yet started, by first offset
	active  map[int64]bool               // producers in an aborted transaction
}

// New returns the filter of block.
func New(block *sarama.FetchResponseBlock) *Filter {
	f := &Filter{aborted: slices.Clone(block.AbortedTransactions)}
	slices.SortFunc(f.aborted, func(a, b *sarama.AbortedTransaction) int { return cmp.Compare(a.FirstOffset, b.FirstOffset) })
	return f
}

// Skip reports whether b holds no record for the application: a control
// batch (a transaction's commit or abort marker), or a batch of an aborted
// transaction.
func (f *Filter) Skip(b *sarama.RecordBatch) bool {
	last := b.FirstOffset + int64(b.LastOffsetDelta)
	for len(f.aborted) > 0 && f.aborted[0].FirstOffset <= last {
		if f.active == nil {
			f.active = map[int64]bool{}
		}
		f.active[f.aborted[0].ProducerID] = true
		f.aborted = f.aborted[1:]
	}
	if b.Control {
		delete(f.active, b.ProducerID) // the transaction ends here
		return true
	}
	return b.IsTransactional && f.active[b.ProducerID]
}
