package stream_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// keyedSource yields pairs, each in partition key%parts, with offsets
// counted per partition; io.EOF after the last.
type keyedSource struct {
	name  string
	vals  []stream.Pair[int, int]
	parts int
	next  int
	offs  map[int32]int64
}

func (s *keyedSource) Poll(_ context.Context, buf []stream.Record[stream.Pair[int, int]]) (int, error) {
	if s.offs == nil {
		s.offs = map[int32]int64{}
	}
	n := 0
	for n < len(buf) && s.next < len(s.vals) {
		kv := s.vals[s.next]
		p := int32(kv.Key % s.parts)
		buf[n] = stream.Record[stream.Pair[int, int]]{Value: kv, Origin: stream.Origin{Source: s.name, Partition: p, Offset: s.offs[p]}}
		s.offs[p]++
		n++
		s.next++
	}
	if s.next == len(s.vals) {
		return n, io.EOF
	}
	return n, nil
}

func decodeMem(t *testing.T, s *memStore) map[int]int {
	out := map[int]int{}
	for _, e := range s.entries {
		k, n := binary.Varint(e.Key)
		require.Equal(t, len(e.Key), n)
		v, n := binary.Varint(e.Value)
		require.Equal(t, len(e.Value), n)
		_, dup := out[int(k)]
		require.False(t, dup, "key %d stored twice", k)
		out[int(k)] = int(v)
	}
	return out
}

// sumDropping adds the values to the state, and drops the key when the sum
// is not positive or is a multiple of 5; with no values (UpdateAll), it
// takes 1 from the state, and drops the key at 0.
func sumDropping(_ int, values []int, state int, _ bool) (int, bool) {
	if len(values) == 0 {
		state--
		return state, state > 0
	}
	for _, v := range values {
		state += v
	}
	return state, state > 0 && state%5 != 0
}

// UpdateStateByKey matches a map model, through every path of its input
// (moved by hash, keyed, reduced first), with and without a TTL, UpdateAll
// and a Store checkpointed every 1 or 3 batches, on 1 and 3 goroutines:
// the state after every batch, its observers and what the Store holds.
func TestUpdateStateByKeyMatchesAModelUnderEveryOption(t *testing.T) {
	for _, mode := range []string{"partitionByKey", "keyed", "reduceByKey"} {
		for _, ttl := range []int{0, 2} {
			for _, all := range []bool{false, true} {
				for _, every := range []int{0, 1, 3} {
					durable := every > 0
					for _, par := range []int{1, 3} {
						name := fmt.Sprintf("%s/ttl%d/all%v/every%d/par%d", mode, ttl, all, every, par)
						t.Run(name, func(t *testing.T) {
							const batches, per, keys = 40, 300, 150
							rng := rand.New(rand.NewPCG(uint64(ttl+1), uint64(par)))
							var vals []stream.Pair[int, int]
							for range batches * per {
								vals = append(vals, stream.KV(rng.IntN(keys), rng.IntN(6)-2))
							}
							opts := []stream.Option{stream.Interval(0), stream.MaxRecords(per), stream.Parallelism(par)}
							store := newMemStore()
							var storeErr []string
							var stateAfter []map[int]int
							if durable {
								opts = append(opts, stream.WithStore(store), stream.CheckpointEvery(every))
							}
							opts = append(opts, stream.WithHook(hookFunc(func(s stream.BatchStats) {
								if !durable || s.Info.ID%int64(every) != 0 {
									return
								}
								got := decodeMem(t, store)
								want := stateAfter[s.Info.ID-1]
								if fmt.Sprint(got) != fmt.Sprint(want) {
									storeErr = append(storeErr, fmt.Sprintf("batch %d: store %v\nstate %v", s.Info.ID, got, want))
								}
							})))
							p := stream.NewPipeline(opts...)
							in := stream.From[stream.Pair[int, int]](p, &keyedSource{name: "k", vals: vals, parts: 3})
							switch mode {
							case "keyed":
								in = stream.Keyed(in)
							case "reduceByKey":
								in = stream.ReduceByKey(in, func(a, b int) int { return a + b })
							}
							var sopts []stream.StateOption
							if ttl > 0 {
								sopts = append(sopts, stream.TTLBatches(ttl))
							}
							if all {
								sopts = append(sopts, stream.UpdateAll())
							}
							obs := newObservers()
							sopts = append(sopts, obs.observe())
							st := stream.UpdateStateByKey(in, sumDropping, sopts...).Named("st")
							var obsErr []string
							stream.ForEachBatch(st, func(_ context.Context, b *stream.Batch[stream.Pair[int, int]]) error {
								m := map[int]int{}
								for kv := range b.All() {
									if _, dup := m[kv.Key]; dup {
										obsErr = append(obsErr, fmt.Sprintf("batch %d: key %d twice", b.Info.ID, kv.Key))
									}
									m[kv.Key] = kv.Value
								}
								stateAfter = append(stateAfter, m)
								obs.check(t, b)
								return nil
							})
							run(t, p)
							require.Len(t, stateAfter, batches)

							model := map[int]int{}
							seen := map[int]int64{}
							for b := range batches {
								id := int64(b + 1)
								grouped := applyModel(model, vals[b*per:(b+1)*per], mode == "reduceByKey", sumDropping, func(k int, _, keep bool) {
									if keep {
										seen[k] = id
									} else {
										delete(seen, k)
									}
								})
								if ttl > 0 {
									cut := id - int64(ttl) - 1
									for k, s := range seen {
										if s <= cut {
											delete(model, k)
											delete(seen, k)
										}
									}
								}
								if all {
									for k, v := range model {
										if _, ok := grouped[k]; ok {
											continue
										}
										nv, keep := sumDropping(k, nil, v, true)
										if !keep {
											delete(model, k)
											delete(seen, k)
											continue
										}
										model[k] = nv
									}
								}
								require.Equal(t, fmt.Sprint(model), fmt.Sprint(stateAfter[b]), "batch %d", id)
							}
							require.Empty(t, obsErr)
							require.Empty(t, storeErr)
						})
					}
				}
			}
		}
	}
}

// State survives restarts under changing parallelism (3, 1, 2, 4, 2), with
// its keys moved by hash, reduced first, or over 3 partitions: after every
// batch and in the Store, it matches a map model.
func TestRestartsUnderChangingParallelismMatchAModel(t *testing.T) {
	for _, mode := range []string{"partitionByKey", "reduceByKey", "partitionByKey3"} {
		for _, all := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/all%v", mode, all), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(1, 2))
				store := newMemStore()
				model := map[int]int{}
				for seg, par := range []int{3, 1, 2, 4, 2} {
					const batches, per, keys = 5, 200, 120
					var vals []stream.Pair[int, int]
					for range batches * per {
						vals = append(vals, stream.KV(rng.IntN(keys), rng.IntN(6)-2))
					}
					p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(per), stream.Parallelism(par), stream.WithStore(store))
					in := stream.From(p, source.NewSlice(fmt.Sprintf("seg%d", seg), vals, 2))
					switch mode {
					case "reduceByKey":
						in = stream.ReduceByKey(in, func(a, b int) int { return a + b })
					case "partitionByKey3":
						in = stream.PartitionByKey(in, 3)
					}
					var opts []stream.StateOption
					if all {
						opts = append(opts, stream.UpdateAll())
					}
					var got []map[int]int
					var dup []string
					st := stream.UpdateStateByKey(in, sumDropping, opts...).Named("st")
					stream.ForEachBatch(st, func(_ context.Context, b *stream.Batch[stream.Pair[int, int]]) error {
						m := map[int]int{}
						for kv := range b.All() {
							if _, ok := m[kv.Key]; ok {
								dup = append(dup, fmt.Sprint(kv.Key))
							}
							m[kv.Key] = kv.Value
						}
						got = append(got, m)
						return nil
					})
					run(t, p)
					require.Empty(t, dup)
					require.Len(t, got, batches)
					for b := range batches {
						grouped := applyModel(model, vals[b*per:(b+1)*per], mode == "reduceByKey", sumDropping, nil)
						if all {
							for k, v := range model {
								if _, ok := grouped[k]; ok {
									continue
								}
								if nv, keep := sumDropping(k, nil, v, true); keep {
									model[k] = nv
								} else {
									delete(model, k)
								}
							}
						}
						require.Equal(t, fmt.Sprint(model), fmt.Sprint(got[b]), "segment %d batch %d", seg, b+1)
					}
					require.Equal(t, fmt.Sprint(model), fmt.Sprint(decodeMem(t, store)), "store after segment %d", seg)
				}
			})
		}
	}
}

// ReduceByKeyAndWindow, with and without its inverse, over windows of 1 to
// 3 batches sliding by 1 or 2, with empty batches, matches a sum over the
// window.
func TestWindowsMatchAModel(t *testing.T) {
	add := func(a, b int) int { return a + b }
	sub := func(a, b int) int { return a - b }
	for _, length := range []int{1, 2, 3} {
		for _, slide := range []int{1, 2} {
			for _, inv := range []bool{false, true} {
				t.Run(fmt.Sprintf("len%d/slide%d/inv%v", length, slide, inv), func(t *testing.T) {
					rng := rand.New(rand.NewPCG(uint64(length), uint64(slide)))
					const batches = 9
					var chunks [][]stream.Record[stream.Pair[int, int]]
					offs := map[int32]int64{}
					for b := 0; b < batches; b++ {
						var ch []stream.Record[stream.Pair[int, int]]
						if rng.IntN(3) != 0 {
							for range 1 + rng.IntN(8) {
								p := int32(rng.IntN(3))
								ch = append(ch, rec(stream.KV(rng.IntN(5), 1+rng.IntN(3)), p, offs[p]))
								offs[p]++
							}
						}
						chunks = append(chunks, ch)
					}
					src := &scripted[stream.Pair[int, int]]{chunks: chunks}
					p := stream.NewPipeline(stream.Interval(3*time.Millisecond), stream.Parallelism(2))
					in := stream.From(p, src)
					var f func(int, int) int
					if inv {
						f = sub
					}
					c := collect(stream.ReduceByKeyAndWindow(in, add, f, length, slide))
					raw := collect(in)
					run(t, p)
					rb := raw.all()
					out := c.all()
					var want []map[int]int
					var win [][]stream.Pair[int, int]
					for i, b := range rb {
						var vals []stream.Pair[int, int]
						for kv := range b.All() {
							vals = append(vals, kv)
						}
						win = append(win, vals)
						if len(win) > length {
							win = win[1:]
						}
						if (i+1)%slide != 0 {
							continue
						}
						m := map[int]int{}
						for _, w := range win {
							for _, kv := range w {
								m[kv.Key] += kv.Value
							}
						}
						want = append(want, m)
					}
					require.Len(t, out, len(want), "raw batches %d", len(rb))
					for i := range want {
						require.Equal(t, fmt.Sprint(want[i]), fmt.Sprint(stateMap(out[i])), "window %d", i)
					}
				})
			}
		}
	}
}
