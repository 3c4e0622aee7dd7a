package stream_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream"
)

// journal records, in order, what a pipeline asks of its transaction,
// outputs, store and source.
type journal struct{ events []string }

func (j *journal) add(format string, args ...any) {
	j.events = append(j.events, fmt.Sprintf(format, args...))
}

type journalTxn struct {
	j         *journal
	failBegin error
}

func (t *journalTxn) Begin(context.Context) error {
	t.j.add("begin")
	return t.failBegin
}
func (t *journalTxn) Commit(context.Context) error { t.j.add("commit txn"); return nil }
func (t *journalTxn) Abort(context.Context) error  { t.j.add("abort"); return nil }

type journalStore struct{ j *journal }

func (s journalStore) Restore(context.Context, []int32, func(stream.Entry) error) ([]stream.Offset, error) {
	s.j.add("restore")
	return nil, nil
}

func (s journalStore) Checkpoint(_ context.Context, c *stream.Changes) error {
	s.j.add("checkpoint %d", c.Batch.ID)
	return nil
}

type journalSource struct {
	*scripted[int]
	j *journal
}

func (s journalSource) Commit(ctx context.Context, offsets []stream.Offset) error {
	s.j.add("commit offsets %v", offsets)
	return s.scripted.Commit(ctx, offsets)
}

// With a transaction, each batch's outputs, checkpoint and source commit
// run between Begin and Commit; a batch that fails is aborted, and neither
// checkpointed nor committed.
func TestTransactionWrapsEachBatch(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name  string
		fail  int64 // the batch whose output fails; 0: none
		txn   journalTxn
		want  []string
		errIs error
	}{
		{name: "batches", want: []string{
			"restore",
			"begin", "write 1", "checkpoint 1", "commit offsets [{test 0 2}]", "commit txn",
			"begin", "write 2", "checkpoint 2", "commit offsets [{test 0 3}]", "commit txn",
		}},
		{name: "output fails", fail: 2, errIs: boom, want: []string{
			"restore",
			"begin", "write 1", "checkpoint 1", "commit offsets [{test 0 2}]", "commit txn",
			"begin", "write 2", "abort",
		}},
		{name: "begin fails", txn: journalTxn{failBegin: boom}, errIs: boom, want: []string{"restore", "begin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := &journal{}
			tx := tc.txn
			tx.j = j
			src := journalSource{&scripted[int]{chunks: [][]stream.Record[int]{
				{rec(1, 0, 0), rec(2, 0, 1)}, {rec(3, 0, 2)},
			}}, j}
			p := stream.NewPipeline(stream.Interval(10*time.Millisecond), stream.WithStore(journalStore{j}), stream.WithTransaction(&tx))
			in := stream.From[int](p, src)
			totals := stream.UpdateStateByKey(stream.Map(in, func(v int) stream.Pair[int, int] { return stream.KV(v%2, v) }), sum).Named("sum")
			stream.ForEachBatch(totals, func(_ context.Context, b *stream.Batch[stream.Pair[int, int]]) error {
				j.add("write %d", b.Info.ID)
				if b.Info.ID == tc.fail {
					return boom
				}
				return nil
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := p.Run(ctx)
			if tc.errIs != nil {
				require.ErrorIs(t, err, tc.errIs)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tc.want, j.events)
		})
	}
}

func TestTransactionNeedsACheckpointEveryBatch(t *testing.T) {
	p := stream.NewPipeline(stream.WithTransaction(&journalTxn{j: &journal{}}), stream.CheckpointEvery(2))
	stream.ForEachBatch(stream.From[int](p, &scripted[int]{}), func(context.Context, *stream.Batch[int]) error { return nil })
	assert.ErrorContains(t, p.Run(context.Background()), "transaction")
}
