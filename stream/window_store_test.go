package stream_test

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/checkpoint"
)

type intPair = stream.Pair[int, int]

var errWindowCrash = errors.New("crash")

// windowKinds are the windowed graphs the restart tests run, each with
// how a window of it is written down for comparison.
var windowKinds = map[string]func(in *stream.Stream[intPair], length, slide int) (*stream.Stream[intPair], func(*stream.Batch[intPair]) string){
	"window": func(in *stream.Stream[intPair], length, slide int) (*stream.Stream[intPair], func(*stream.Batch[intPair]) string) {
		return stream.Window(in, length, slide), windowByPartition
	},
	"recompute": func(in *stream.Stream[intPair], length, slide int) (*stream.Stream[intPair], func(*stream.Batch[intPair]) string) {
		return stream.ReduceByKeyAndWindow(in, plus, nil, length, slide), windowSums
	},
	"inverse": func(in *stream.Stream[intPair], length, slide int) (*stream.Stream[intPair], func(*stream.Batch[intPair]) string) {
		return stream.ReduceByKeyAndWindow(in, plus, windowInverses["inverse"], length, slide), windowSums
	},
	"inverse, keyed": func(in *stream.Stream[intPair], length, slide int) (*stream.Stream[intPair], func(*stream.Batch[intPair]) string) {
		return stream.ReduceByKeyAndWindow(stream.Keyed(in), plus, windowInverses["inverse"], length, slide), windowSums
	},
}

// windowSums writes down a window of sums by key.
func windowSums(b *stream.Batch[intPair]) string { return fmt.Sprint(stateMap(b)) }

// windowByPartition writes down a window of pairs as the sorted values of
// each partition.
func windowByPartition(b *stream.Batch[intPair]) string {
	var sb strings.Builder
	for _, part := range b.Partitions {
		var vs []int
		for _, kv := range part.Values {
			vs = append(vs, kv.Value)
		}
		slices.Sort(vs)
		fmt.Fprintf(&sb, "%d:%v ", part.ID, vs)
	}
	return sb.String()
}

// windowChunks makes n chunks of records, one a batch, some empty but the
// last (a run ends at an empty one) unless dense, over 3 partitions (the
// key's remainder), with values all different.
func windowChunks(n int, seed uint64, dense bool) [][]stream.Record[intPair] {
	rng := rand.New(rand.NewPCG(seed, 7))
	offs := map[int32]int64{}
	var chunks [][]stream.Record[intPair]
	v := 0
	for i := range n {
		var ch []stream.Record[intPair]
		if rng.IntN(4) != 0 || i == n-1 || dense {
			for range 1 + rng.IntN(6) {
				k := rng.IntN(9)
				p := int32(k % 3)
				v++
				ch = append(ch, rec(stream.KV(k, v), p, offs[p]))
				offs[p]++
			}
		}
		chunks = append(chunks, ch)
	}
	return chunks
}

// runWindowed runs a windowed graph over chunks[from:], one chunk a batch,
// with store (nil: none) checkpointed every batches (0: one batch an hour,
// by CommitInterval), and crashes (an output fails) at its batch crash (0:
// never); assigned, as a source that owns its 3 partitions (an Assigner).
// It returns the windows emitted, by the position of their batch in the
// whole input.
func runWindowed(t *testing.T, kind string, store stream.Store, chunks [][]stream.Record[intPair], from, crash, length, slide, every int, assigned bool, opts ...stream.Option) (map[int]string, error) {
	t.Helper()
	var src stream.Source[intPair] = &scripted[intPair]{chunks: slices.Clone(chunks[from:])}
	if assigned {
		src = &assigning{scripted: scripted[intPair]{chunks: slices.Clone(chunks[from:])}, plan: [][]int32{{0, 1, 2}}}
	}
	opts = append(opts, stream.Interval(2*time.Millisecond))
	switch {
	case store != nil && every == 0:
		opts = append(opts, stream.WithStore(store), stream.CommitInterval(time.Hour))
	case store != nil:
		opts = append(opts, stream.WithStore(store), stream.CheckpointEvery(every))
	}
	p := stream.NewPipeline(opts...)
	in := stream.From(p, src)
	stream.ForEachBatch(in, func(_ context.Context, b *stream.Batch[intPair]) error {
		if b.Info.ID == int64(crash) {
			return errWindowCrash
		}
		return nil
	})
	out, show := windowKinds[kind](in, length, slide)
	got := map[int]string{}
	stream.ForEachBatch(out.Named("w"), func(_ context.Context, b *stream.Batch[intPair]) error {
		got[from+int(b.Info.ID)] = show(b)
		return nil
	})
	return got, p.Run(context.Background())
}

// A windowed pipeline that crashes and restarts from its checkpoint, once
// or twice, emits the windows an uninterrupted run does, at the same
// batches: the windows are restored with the offsets of the same
// checkpoint, also when it is taken every 3 batches or by CommitInterval
// (here the first batch only), and the slide goes on in step, also when
// the source is an Assigner, whose partitions are restored as they are
// assigned.
func TestWindowRestartsMatchAnUninterruptedRun(t *testing.T) {
	const batches = 14
	for kind := range windowKinds {
		for _, length := range []int{1, 2, 4} {
			for _, slide := range []int{1, 3} {
				for _, every := range []int{1, 3, 0} {
					for _, crashes := range [][]int{{4, 3}, {6, 5}} {
						for _, assigned := range []bool{false, true} {
							if assigned && slide == 1 {
								continue // the slide's phase is what an Assigner could lose
							}
							t.Run(fmt.Sprintf("%s/len%d/slide%d/every%d/crash%v/assigned%v", kind, length, slide, every, crashes, assigned), func(t *testing.T) {
								chunks := windowChunks(batches, uint64(length*10+slide), false)
								want, err := runWindowed(t, kind, nil, chunks, 0, 0, length, slide, every, assigned)
								require.NoError(t, err)
								require.Len(t, want, batches/slide)

								dir := t.TempDir()
								check := func(got map[int]string) {
									for at, w := range got {
										assert.Contains(t, want, at, "a window emitted at batch %d, off the slide", at)
										assert.Equal(t, want[at], w, "window at batch %d", at)
									}
								}
								from := 0
								for _, crash := range crashes {
									store, err := checkpoint.Open(dir)
									require.NoError(t, err)
									got, err := runWindowed(t, kind, store, chunks, from, crash, length, slide, every, assigned)
									require.NoError(t, store.Close())
									require.ErrorIs(t, err, errWindowCrash)
									check(got)
									from += lastCheckpoint(crash, every)
								}
								store, err := checkpoint.Open(dir)
								require.NoError(t, err)
								defer store.Close()
								got, err := runWindowed(t, kind, store, chunks, from, 0, length, slide, every, assigned)
								require.NoError(t, err)
								check(got)
								for at := range want {
									if at > from {
										assert.Contains(t, got, at, "the window at batch %d, after the last restart, is emitted", at)
									}
								}
							})
						}
					}
				}
			}
		}
	}
}

// lastCheckpoint is the last batch checkpointed before a crash at batch
// crash, every batches (0: the first batch only, by CommitInterval).
func lastCheckpoint(crash, every int) int {
	if every == 0 {
		return min(1, crash-1)
	}
	return (crash - 1) / every * every
}

// txnStore is a Store in memory whose checkpoints are part of its
// transaction: written by its Commit, which fails at its failAt-th call,
// writing nothing.
type txnStore struct {
	*memStore
	pending         []*stream.Changes
	commits, failAt int
}

func (s *txnStore) Checkpoint(_ context.Context, c *stream.Changes) error {
	s.pending = append(s.pending, c)
	return nil
}

func (s *txnStore) Begin(context.Context) error { s.pending = nil; return nil }

func (s *txnStore) Commit(ctx context.Context) error {
	s.commits++
	pending := s.pending
	s.pending = nil
	if s.commits == s.failAt {
		return errWindowCrash
	}
	for _, c := range pending {
		if err := s.memStore.Checkpoint(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

func (s *txnStore) Abort(context.Context) error { s.pending = nil; return nil }

// With a transaction, a window's entries are part of the batch's: a batch
// whose transaction fails to commit, after its checkpoint, leaves none of
// them, and the restart restores the windows of the batch before.
func TestWindowRestartsMatchAnUninterruptedRunWithTransactions(t *testing.T) {
	const batches = 14
	for kind := range windowKinds {
		t.Run(kind, func(t *testing.T) {
			const length, slide = 4, 3
			chunks := windowChunks(batches, 11, false)
			want, err := runWindowed(t, kind, nil, chunks, 0, 0, length, slide, 1, false)
			require.NoError(t, err)
			mem := newMemStore()
			from := 0
			for _, failAt := range []int{5, 4, 0} {
				store := &txnStore{memStore: mem, failAt: failAt}
				got, err := runWindowed(t, kind, store, chunks, from, 0, length, slide, 1, false, stream.WithTransaction(store))
				if failAt == 0 {
					require.NoError(t, err)
				} else {
					require.ErrorIs(t, err, errWindowCrash)
				}
				for at, w := range got {
					if failAt == 0 || at < from+failAt { // not the batch whose commit failed
						assert.Equal(t, want[at], w, "window at batch %d", at)
					}
				}
				from += failAt - 1
			}
		})
	}
}

// The new owner of a partition, gained in a rebalance many batches into
// its run, restores the partition's window as its old owner checkpointed
// it: the batches before the gain that are still in the window hold the
// partition's values of the old owner's last batches checkpointed, and
// the records of later batches, read again from the checkpoint's offsets,
// count once. The old owner either stops, checkpointing its last batch,
// or crashes after a batch that CheckpointEvery(3) had not checkpointed.
func TestWindowOfAGainedPartitionIsRestored(t *testing.T) {
	// The windows of the second owner: partition 0's values, then 1's.
	want := [][2][]int{
		{{1}, nil},
		{{1, 2}, nil},
		{{1, 2, 3}, nil},
		{{2, 3, 4}, {102, 103, 104}}, // 102 and 103 restored
		{{3, 4, 5}, {103, 104, 105}},
		{{4, 5, 6}, {104, 105}},
	}
	for kind, graph := range windowKinds {
		for _, crashes := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/crashes%v", kind, crashes), func(t *testing.T) {
				store := newMemStore()
				// The first owner of partition 1 sees 101, 102 and 103,
				// checkpointed, and 104 if it crashes.
				first := &assigning{
					scripted: scripted[intPair]{chunks: [][]stream.Record[intPair]{
						{pair1v(1, 101, 1, 0)}, {pair1v(1, 102, 1, 1)}, {pair1v(1, 103, 1, 2)},
					}},
					plan: [][]int32{{1}},
				}
				opts := []stream.Option{stream.Interval(2 * time.Millisecond), stream.WithStore(store)}
				if crashes {
					first.chunks = append(first.chunks, []stream.Record[intPair]{pair1v(1, 104, 1, 3)})
					opts = append(opts, stream.CheckpointEvery(3))
				}
				p := stream.NewPipeline(opts...)
				in := stream.From(p, first)
				out, _ := graph(in, 3, 1)
				collect(out.Named("w"))
				stream.ForEachBatch(in, func(_ context.Context, b *stream.Batch[intPair]) error {
					if b.Info.ID == 4 { // after the window took it in
						return errWindowCrash
					}
					return nil
				})
				if err := p.Run(context.Background()); crashes {
					require.ErrorIs(t, err, errWindowCrash)
				} else {
					require.NoError(t, err)
				}

				// The second owns partition 0, and gains 1 before its fourth
				// batch.
				second := &assigning{
					scripted: scripted[intPair]{chunks: [][]stream.Record[intPair]{
						{pair1v(0, 1, 0, 0)}, {pair1v(0, 2, 0, 1)}, {pair1v(0, 3, 0, 2)},
						{pair1v(0, 4, 0, 3), pair1v(1, 104, 1, 3)},
						{pair1v(0, 5, 0, 4), pair1v(1, 105, 1, 4)},
						{pair1v(0, 6, 0, 5)},
					}},
					plan: [][]int32{{0}, {0}, {0}, {0, 1}},
				}
				p = stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
				out, show := graph(stream.From(p, second), 3, 1)
				c := collect(out.Named("w"))
				run(t, p)
				got := c.all()
				require.Len(t, got, len(want))
				for i, w := range want {
					b := &stream.Batch[intPair]{}
					for id, vs := range w {
						if id == 1 && i < 3 {
							continue // not assigned yet
						}
						part := stream.Partition[intPair]{ID: int32(id)}
						sum := 0
						for _, v := range vs {
							part.Values = append(part.Values, stream.KV(id, v))
							sum += v
						}
						if kind != "window" { // one sum of the key id
							part.Values = []intPair{stream.KV(id, sum)}
						}
						b.Partitions = append(b.Partitions, part)
					}
					assert.Equal(t, show(b), show(got[i]), "batch %d", i+1)
				}
			})
		}
	}
}

// pair1v is a record of the pair (k, v), from partition p at off.
func pair1v(k, v int, p int32, off int64) stream.Record[intPair] {
	return rec(stream.KV(k, v), p, off)
}

// hidden is a value encoding/json cannot give back: its field is
// unexported.
type hidden struct{ n int }

type hiddenCodec struct{}

func (hiddenCodec) Append(dst []byte, v hidden) ([]byte, error) {
	return binary.AppendVarint(dst, int64(v.n)), nil
}

func (hiddenCodec) Decode(b []byte) (hidden, error) {
	n, k := binary.Varint(b)
	if k != len(b) {
		return hidden{}, errors.New("bad varint")
	}
	return hidden{int(n)}, nil
}

// A window with a Store keeps its values with their codec: JSON by
// default, which Run refuses at start for values it would not give back,
// and the one given by WindowCodec otherwise.
func TestWindowValuesNeedACodecJSONKeeps(t *testing.T) {
	chunk := func(n int, off int64) []stream.Record[hidden] {
		return []stream.Record[hidden]{rec(hidden{n}, 0, off)}
	}
	store := newMemStore()
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
	collect(stream.Window(stream.From(p, &scripted[hidden]{chunks: [][]stream.Record[hidden]{chunk(1, 0)}}), 3, 1).Named("w"))
	err := p.Run(context.Background())
	require.Error(t, err)
	assert.ErrorContains(t, err, "give them a codec (WindowCodec)")

	for _, chunks := range [][][]stream.Record[hidden]{{chunk(1, 0), chunk(2, 1)}, {chunk(3, 2)}} {
		p = stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
		c := collect(stream.Window(stream.From(p, &scripted[hidden]{chunks: chunks}), 3, 1, stream.WindowCodec[hidden](hiddenCodec{})).Named("w"))
		run(t, p)
		if len(chunks) == 1 {
			got := c.all()
			require.Len(t, got, 1)
			assert.Equal(t, []hidden{{1}, {2}, {3}}, slices.Collect(got[0].All()), "the first run's values restored by the codec")
		}
	}
}

// A window keys its entries in the Store by its name, which no other
// stateful operator may share.
func TestDurableWindowNeedsANameOfItsOwn(t *testing.T) {
	p := stream.NewPipeline(stream.WithStore(newMemStore()))
	in := stream.Keyed(stream.From(p, &scripted[intPair]{}))
	collect(stream.UpdateStateByKey(in, sum).Named("n"))
	collect(stream.Window(in, 2, 1).Named("n"))
	assert.ErrorContains(t, p.Run(context.Background()), `two stateful operators are named "n"`)
}

// ReduceByKeyAndWindow keeps its per-batch results with the codecs of
// their keys and values: by default those of CodecFor, refused at start
// when JSON would not give them back, and those of WindowCodecs
// otherwise.
func TestReduceByKeyAndWindowNeedsCodecsJSONKeeps(t *testing.T) {
	type kv = stream.Pair[hidden, int]
	chunk := func(n int, off int64) []stream.Record[kv] {
		return []stream.Record[kv]{rec(stream.KV(hidden{n % 2}, n), 0, off)}
	}
	for name, inv := range windowInverses {
		t.Run(name, func(t *testing.T) {
			store := newMemStore()
			p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
			in := stream.From(p, &scripted[kv]{chunks: [][]stream.Record[kv]{chunk(1, 0)}})
			collect(stream.ReduceByKeyAndWindow(in, plus, inv, 3, 1).Named("w"))
			err := p.Run(context.Background())
			require.Error(t, err)
			assert.ErrorContains(t, err, "keys of stream_test.hidden cannot be stored as JSON")
			assert.ErrorContains(t, err, "give them a codec (WindowCodecs)")

			codecs := stream.WindowCodecs[hidden, int](hiddenCodec{}, stream.CodecFor[int]())
			for _, chunks := range [][][]stream.Record[kv]{{chunk(1, 0), chunk(2, 1)}, {chunk(3, 2)}} {
				p = stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
				in := stream.Keyed(stream.From(p, &scripted[kv]{chunks: chunks}))
				c := collect(stream.ReduceByKeyAndWindow(in, plus, inv, 3, 1, codecs).Named("w"))
				run(t, p)
				if len(chunks) == 1 {
					got := c.all()
					require.Len(t, got, 1)
					m := map[hidden]int{}
					for kv := range got[0].All() {
						m[kv.Key] = kv.Value
					}
					assert.Equal(t, map[hidden]int{{1}: 1 + 3, {0}: 2}, m, "the first run's results restored by the codecs")
				}
			}
		})
	}
}

// A window of pairs placed by a hash of their keys over the parallelism,
// restored under another parallelism, holds them where the keys now hash
// to: its windows are those of an uninterrupted run, with each key in one
// partition, and the Store holds them in the new partitions only.
func TestWindowRestoredUnderAnotherParallelismIsPlacedAgain(t *testing.T) {
	for kind, graph := range map[string]func(in *stream.Stream[intPair]) *stream.Stream[intPair]{
		"window": func(in *stream.Stream[intPair]) *stream.Stream[intPair] {
			return stream.Window(stream.PartitionByKey(in, 0), 3, 1)
		},
		"recompute": func(in *stream.Stream[intPair]) *stream.Stream[intPair] {
			return stream.ReduceByKeyAndWindow(in, plus, nil, 3, 1)
		},
		"inverse": func(in *stream.Stream[intPair]) *stream.Stream[intPair] {
			return stream.ReduceByKeyAndWindow(in, plus, windowInverses["inverse"], 3, 1)
		},
	} {
		t.Run(kind, func(t *testing.T) {
			chunks := windowChunks(12, 5, true)
			// show writes down a window whatever its partitions: its sorted
			// values, or its sums by key; and notes a key in two of them.
			show := func(b *stream.Batch[intPair]) string {
				owner := map[int]int32{}
				var vals []int
				for _, part := range b.Partitions {
					for _, kv := range part.Values {
						if o, ok := owner[kv.Key]; ok && o != part.ID {
							t.Errorf("batch %d: key %d in partitions %d and %d", b.Info.ID, kv.Key, o, part.ID)
						}
						owner[kv.Key] = part.ID
						vals = append(vals, kv.Value)
					}
				}
				if kind != "window" {
					return fmt.Sprint(stateMap(b))
				}
				slices.Sort(vals)
				return fmt.Sprint(vals)
			}
			runs := func(store stream.Store, segments [][3]int) map[int]string {
				got := map[int]string{}
				for _, seg := range segments {
					from, to, par := seg[0], seg[1], seg[2]
					opts := []stream.Option{stream.Interval(2 * time.Millisecond), stream.Parallelism(par)}
					if store != nil {
						opts = append(opts, stream.WithStore(store))
					}
					p := stream.NewPipeline(opts...)
					out := graph(stream.From(p, &scripted[intPair]{chunks: slices.Clone(chunks[from:to])}))
					stream.ForEachBatch(out.Named("w"), func(_ context.Context, b *stream.Batch[intPair]) error {
						got[from+int(b.Info.ID)] = show(b)
						return nil
					})
					run(t, p)
				}
				return got
			}
			want := runs(nil, [][3]int{{0, 12, 4}})
			store := newMemStore()
			got := runs(store, [][3]int{{0, 4, 4}, {4, 8, 2}, {8, 12, 3}})
			assert.Equal(t, want, got)
			for _, e := range store.entries {
				assert.Less(t, e.Partition, int32(3), "an entry of partition %d, of a parallelism before", e.Partition)
			}
		})
	}
}

// A window of values placed by a hash of keys they no longer hold cannot
// be placed again under another parallelism: Run says so as it restores
// it, unless the window had nothing left to restore.
func TestWindowOfValuesPlacedByGoneKeysNeedsTheSameParallelism(t *testing.T) {
	for _, tc := range []struct {
		length int
		fails  bool
	}{{1, false}, {3, true}} {
		t.Run(fmt.Sprint("length", tc.length), func(t *testing.T) {
			store := newMemStore()
			var err error
			for i, par := range []int{4, 2} {
				p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(par), stream.WithStore(store))
				in := stream.From(p, &scripted[intPair]{chunks: [][]stream.Record[intPair]{{pair1v(i, i, 0, int64(i))}}})
				vals := stream.Map(stream.PartitionByKey(in, 0), func(kv intPair) int { return kv.Value })
				collect(stream.Window(vals, tc.length, 1).Named("w"))
				err = p.Run(context.Background())
			}
			if !tc.fails {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, "window w holds values placed by a hash over 4 partitions (the parallelism), which cannot be placed again under a parallelism of 2")
		})
	}
}

// A codec option that does not fit the window's values is an error of
// Run, before it starts.
func TestWindowCodecsMustFit(t *testing.T) {
	for _, tc := range []struct {
		build func(in *stream.Stream[intPair])
		want  string
	}{
		{func(in *stream.Stream[intPair]) {
			collect(stream.Window(in, 2, 1, stream.WindowCodec[int](stream.CodecFor[int]())))
		}, "Window: a codec of stream.intCodec does not fit values stream.Pair[int,int]"},
		{func(in *stream.Stream[intPair]) {
			collect(stream.Window(in, 2, 1, stream.WindowCodecs(stream.CodecFor[int](), stream.CodecFor[int]())))
		}, "Window: WindowCodecs is for the keys and values of ReduceByKeyAndWindow"},
		{func(in *stream.Stream[intPair]) {
			collect(stream.ReduceByKeyAndWindow(in, plus, nil, 2, 1, stream.WindowCodecs(stream.CodecFor[string](), stream.CodecFor[int]())))
		}, "ReduceByKeyAndWindow: codecs of stream.stringCodec and stream.intCodec do not fit keys int and values int"},
		{func(in *stream.Stream[intPair]) {
			collect(stream.ReduceByKeyAndWindow(in, plus, nil, 2, 1, stream.WindowCodec[intPair](stream.JSONCodec[intPair]{})))
		}, "ReduceByKeyAndWindow: WindowCodec is for the values of Window"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			p := stream.NewPipeline()
			tc.build(stream.From(p, &scripted[intPair]{}))
			assert.ErrorContains(t, p.Run(context.Background()), tc.want)
		})
	}
}

// A partition lost and assigned again to the same process comes back into
// its window from the Store, as of the checkpoint whose offsets it is read
// again from: the batches CommitInterval held back, dropped with the
// partition, are read again, and every record is in the window once.
func TestWindowOfRegainedPartitionIsRestoredOnce(t *testing.T) {
	for name, inv := range windowInverses {
		t.Run(name, func(t *testing.T) {
			src := regainedPartition()
			p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.CommitInterval(time.Hour), stream.WithStore(newMemStore()))
			c := collect(stream.ReduceByKeyAndWindow(stream.Keyed(stream.From(p, src)), plus, inv, 4, 1).Named("w"))
			run(t, p)
			got := c.all()
			require.Len(t, got, 4)
			assert.Equal(t, map[int]int{1: 3}, stateMap(got[3]), "key 1's records at offsets 0 (restored), 1 and 2 (read again)")
		})
	}
}

// panickyCodec panics on the value 3.
type panickyCodec struct{ hiddenCodec }

func (c panickyCodec) Append(dst []byte, v hidden) ([]byte, error) {
	if v.n == 3 {
		panic("bad value")
	}
	return c.hiddenCodec.Append(dst, v)
}

// A panic of a window's codec as a batch enters fails the batch with a
// *PanicError naming the partition and the stage.
func TestPanicInAWindowCodecNamesItsPartition(t *testing.T) {
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(newMemStore()))
	src := &scripted[hidden]{chunks: [][]stream.Record[hidden]{{rec(hidden{1}, 0, 0)}, {rec(hidden{3}, 2, 0)}}}
	collect(stream.Window(stream.From(p, src), 2, 1, stream.WindowCodec[hidden](panickyCodec{})).Named("w"))
	err := p.Run(context.Background())
	var pe *stream.PanicError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "bad value", pe.Value)
	var part *stream.PartitionError
	require.ErrorAs(t, err, &part)
	assert.Equal(t, int32(2), part.Partition)
	assert.ErrorContains(t, err, "batch 2: w: partition 2: encode the window's values: panic: bad value")
}

// spot is a key with no fixed hash: it is placed by a hash seeded once
// per process.
type spot struct{ X, Y int }

// A window of pairs placed by a hash of their keys, restored where their
// keys no longer hash to (a new process seeds the hash of keys that have
// none fixed; a new version of the program places them over another
// count of partitions), holds them where the keys now hash: its windows
// are those of an uninterrupted run, each key in one partition, never in
// one restored and another read since.
func TestWindowRestoredWhereItsKeysNoLongerHashIsPlacedAgain(t *testing.T) {
	type spotPair = stream.Pair[spot, int]
	type graph = func(in *stream.Stream[spotPair], parts int) *stream.Stream[spotPair]
	type placing struct {
		parts  [2]int // PartitionByKey's count, in the first run and after
		reseed bool   // the second run is another process's
		graph  graph
	}
	window := func(in *stream.Stream[spotPair], parts int) *stream.Stream[spotPair] {
		return stream.ReduceByKey(stream.Window(stream.PartitionByKey(in, parts), 3, 1), plus)
	}
	cases := map[string]placing{
		"window/new process":   {[2]int{0, 0}, true, window},
		"window/another count": {[2]int{4, 2}, false, window},
	}
	for name, inv := range windowInverses {
		cases["reduce/new process/"+name] = placing{[2]int{0, 0}, true, func(in *stream.Stream[spotPair], _ int) *stream.Stream[spotPair] {
			return stream.ReduceByKeyAndWindow(in, plus, inv, 3, 1)
		}}
		cases["reduce/another count/"+name] = placing{[2]int{4, 2}, false, func(in *stream.Stream[spotPair], parts int) *stream.Stream[spotPair] {
			return stream.ReduceByKeyAndWindow(stream.PartitionByKey(in, parts), plus, inv, 3, 1)
		}}
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var chunks [][]stream.Record[spotPair]
			for i := range 8 {
				var ch []stream.Record[spotPair]
				for j := range 6 {
					ch = append(ch, rec(stream.KV(spot{j, j % 2}, i*10+j), int32(j%2), int64(i*3+j/2)))
				}
				chunks = append(chunks, ch)
			}
			// show writes down a window as its results by key, sorted,
			// and notes a key in two partitions.
			show := func(b *stream.Batch[spotPair]) string {
				owner := map[spot]int32{}
				var kvs []string
				for _, part := range b.Partitions {
					for _, kv := range part.Values {
						if o, ok := owner[kv.Key]; ok {
							t.Errorf("batch %d: key %v in partitions %d and %d", b.Info.ID, kv.Key, o, part.ID)
						}
						owner[kv.Key] = part.ID
						kvs = append(kvs, fmt.Sprintf("%v=%d", kv.Key, kv.Value))
					}
				}
				slices.Sort(kvs)
				return fmt.Sprint(kvs)
			}
			runs := func(store stream.Store, segments [][2]int) map[int]string {
				got := map[int]string{}
				for i, seg := range segments {
					from, to := seg[0], seg[1]
					if i > 0 && tc.reseed {
						defer stream.NewProcessSeed()()
					}
					opts := []stream.Option{stream.Interval(2 * time.Millisecond), stream.Parallelism(4)}
					if store != nil {
						opts = append(opts, stream.WithStore(store))
					}
					p := stream.NewPipeline(opts...)
					out := tc.graph(stream.From(p, &scripted[spotPair]{chunks: slices.Clone(chunks[from:to])}), tc.parts[min(i, 1)])
					stream.ForEachBatch(out.Named("w"), func(_ context.Context, b *stream.Batch[spotPair]) error {
						got[from+int(b.Info.ID)] = show(b)
						return nil
					})
					run(t, p)
				}
				return got
			}
			want := runs(nil, [][2]int{{0, 8}})
			store := newMemStore()
			got := runs(store, [][2]int{{0, 4}, {4, 8}})
			assert.Equal(t, want, got)
			parts := cmp.Or(tc.parts[1], 4)
			for _, e := range store.entries {
				assert.Less(t, e.Partition, int32(parts), "an entry of partition %d, where keys hashed before", e.Partition)
			}
		})
	}
}

// A restart under an Assigner source that owns no partition for its first
// batches (a consumer group's member before it joins) goes on sliding in
// step once its partitions are assigned and restored: the batches of no
// partition before them are in no run that did not stop, and the windows
// come out at the batches of an uninterrupted run's.
func TestWindowRestoredAfterBatchesOfNoPartitionSlidesInStep(t *testing.T) {
	const batches, length, slide, idle = 10, 3, 3, 2
	for kind, graph := range windowKinds {
		t.Run(kind, func(t *testing.T) {
			chunks := windowChunks(batches, 9, true)
			want, err := runWindowed(t, kind, nil, chunks, 0, 0, length, slide, 1, true)
			require.NoError(t, err)
			store := newMemStore()
			_, err = runWindowed(t, kind, store, chunks[:4], 0, 0, length, slide, 1, true)
			require.NoError(t, err)

			src := &assigning{
				scripted: scripted[intPair]{chunks: append(make([][]stream.Record[intPair], idle), chunks[4:]...)},
				plan:     [][]int32{{}, {}, {0, 1, 2}},
			}
			p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.WithStore(store))
			out, show := graph(stream.From(p, src), length, slide)
			got := map[int]string{}
			stream.ForEachBatch(out.Named("w"), func(_ context.Context, b *stream.Batch[intPair]) error {
				if at := 4 + int(b.Info.ID) - idle; at > 4 {
					got[at] = show(b)
				}
				return nil
			})
			run(t, p)
			for at, w := range want {
				if at > 4 {
					assert.Equal(t, w, got[at], "window at batch %d", at)
				}
			}
			for at := range got {
				assert.Contains(t, want, at, "a window emitted at batch %d, off the slide", at)
			}
		})
	}
}

// recordingStore is a Store in memory that keeps the entries of every
// checkpoint.
type recordingStore struct {
	*memStore
	checkpoints [][]stream.Entry
}

func (s *recordingStore) Checkpoint(ctx context.Context, c *stream.Changes) error {
	s.checkpoints = append(s.checkpoints, slices.Clone(c.Entries))
	return s.memStore.Checkpoint(ctx, c)
}

// A window keeps no empty batch in the Store: under an Assigner source,
// whose every partition enters the window each batch, an idle pipeline
// checkpoints the windows' positions alone, not a write and a delete of
// an empty batch for every partition. A batch missing from the Store is
// restored as empty: the windows after a restart are those of an
// uninterrupted run.
func TestWindowStoresNoEmptyBatch(t *testing.T) {
	for kind := range windowKinds {
		t.Run(kind, func(t *testing.T) {
			const length, slide = 3, 1
			var chunks [][]stream.Record[intPair]
			chunks = append(chunks, []stream.Record[intPair]{pair1v(0, 1, 0, 0), pair1v(1, 2, 1, 0)})
			chunks = append(chunks, make([][]stream.Record[intPair], 5)...)
			chunks = append(chunks, []stream.Record[intPair]{pair1v(0, 3, 0, 1)}, nil, []stream.Record[intPair]{pair1v(2, 4, 2, 0)})
			want, err := runWindowed(t, kind, nil, chunks, 0, 0, length, slide, 1, true)
			require.NoError(t, err)

			store := &recordingStore{memStore: newMemStore()}
			got, err := runWindowed(t, kind, store, chunks, 0, 8, length, slide, 1, true)
			require.ErrorIs(t, err, errWindowCrash)
			for i, entries := range store.checkpoints {
				var batches []string
				for _, e := range entries {
					if len(e.Key) > 0 && e.Key[0] != 0 { // not a position
						batches = append(batches, fmt.Sprintf("%d/%x deleted %v", e.Partition, e.Key, e.Deleted))
					}
				}
				switch i + 1 {
				case 1, 3: // the batch of partitions 0 and 1 written, then deleted
					assert.Len(t, batches, 2, "checkpoint %d: %v", i+1, batches)
				case 7: // partition 0's written
					assert.Len(t, batches, 1, "checkpoint %d: %v", i+1, batches)
				default:
					assert.Empty(t, batches, "checkpoint %d: an empty batch written or deleted", i+1)
				}
			}
			for _, e := range store.entries {
				if len(e.Key) > 0 && e.Key[0] != 0 {
					assert.Equal(t, int32(0), e.Partition, "the batch of partition 0 read at batch 7 alone is stored")
				}
			}
			got2, err := runWindowed(t, kind, store, chunks, 7, 0, length, slide, 1, true)
			require.NoError(t, err)
			for at, w := range got2 {
				got[at] = w
			}
			assert.Equal(t, want, got)
		})
	}
}

// An empty batch in the Store, as earlier versions kept them, is restored
// as empty, and deleted by the next checkpoint: it would not be deleted
// as it leaves the window.
func TestWindowDeletesAnEmptyBatchStoredBefore(t *testing.T) {
	store := newMemStore()
	put := func(key, value []byte) {
		store.entries[fmt.Sprintf("w/0/%x", key)] = stream.Entry{Op: "w", Key: key, Value: value}
	}
	batch := func(k int64) []byte { return binary.AppendVarint([]byte{1}, k) }
	pos := binary.AppendUvarint(binary.AppendVarint(nil, 2), 1)
	put([]byte{0}, pos)                  // two batches entered, under Parallelism(1)
	put(batch(1), []byte{1, 1, 10 << 1}) // the value 10
	put(batch(2), []byte{0})             // empty
	p := stream.NewPipeline(stream.Interval(2*time.Millisecond), stream.Parallelism(1), stream.WithStore(store))
	src := &scripted[int]{chunks: [][]stream.Record[int]{{rec(20, 0, 0)}}}
	c := collect(stream.Window(stream.From(p, src), 4, 1).Named("w"))
	run(t, p)
	got := c.values()
	require.Len(t, got, 1)
	assert.Equal(t, []int{10, 20}, got[0])
	assert.NotContains(t, store.entries, fmt.Sprintf("w/0/%x", batch(2)), "the empty batch deleted")
	assert.Contains(t, store.entries, fmt.Sprintf("w/0/%x", batch(1)))
	assert.Contains(t, store.entries, fmt.Sprintf("w/0/%x", batch(3)))
}

// A window keeps the position of a source's partition only while it
// holds a batch of it, and of one partition when it holds none, for the
// slide's phase: the partitions a source no longer reads are not written
// by every checkpoint for ever. The windows after a restart are those of
// an uninterrupted run. (ReduceByKeyAndWindow of a stream that is not
// Keyed holds every partition of the hash of its keys, empty or not.)
func TestWindowForgetsThePositionOfAPartitionItNoLongerHolds(t *testing.T) {
	for _, kind := range []string{"window", "inverse, keyed"} {
		t.Run(kind, func(t *testing.T) {
			const length, slide = 2, 2
			chunks := [][]stream.Record[intPair]{
				{pair1v(0, 1, 0, 0), pair1v(1, 2, 1, 0), pair1v(2, 3, 2, 0)},
				{pair1v(0, 4, 0, 1)},
				{pair1v(0, 5, 0, 2)},
				nil, nil, nil,
				{pair1v(1, 6, 1, 1)},
				{pair1v(1, 7, 1, 2)},
			}
			want, err := runWindowed(t, kind, nil, chunks, 0, 0, length, slide, 1, false)
			require.NoError(t, err)

			store := &recordingStore{memStore: newMemStore()}
			got, err := runWindowed(t, kind, store, chunks, 0, 8, length, slide, 1, false)
			require.ErrorIs(t, err, errWindowCrash)
			var positions [][]int32
			for _, entries := range store.checkpoints {
				var ids []int32
				for _, e := range entries {
					if len(e.Key) == 1 && e.Key[0] == 0 && !e.Deleted {
						ids = append(ids, e.Partition)
					}
				}
				positions = append(positions, ids)
			}
			assert.Equal(t, [][]int32{{0, 1, 2}, {0}, {0}, {0}, {0}, {0}, {1}}, positions, "the positions each checkpoint writes")
			var stored []int32
			for _, e := range store.entries {
				if len(e.Key) == 1 && e.Key[0] == 0 {
					stored = append(stored, e.Partition)
				}
			}
			assert.Equal(t, []int32{1}, stored, "the positions in the Store")

			again, err := runWindowed(t, kind, store, chunks, 7, 0, length, slide, 1, false)
			require.NoError(t, err)
			for at, w := range again {
				got[at] = w
			}
			assert.Equal(t, want, got)
		})
	}
}
