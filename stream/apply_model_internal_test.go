package stream

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
)

type mapObs[K comparable] struct {
	m   map[K]int
	err []string
}

func (o *mapObs[K]) Changed(k K, old int, hadOld bool, cur int, hasCur bool) {
	got, had := o.m[k]
	if had != hadOld || (had && got != old) {
		o.err = append(o.err, fmt.Sprintf("key %v: observer had %v,%v told %v,%v", k, got, had, old, hadOld))
	}
	if hasCur {
		o.m[k] = cur
	} else {
		delete(o.m, k)
	}
}

type sk struct {
	a int32
	b string
}

// The state update, run by hand batch after batch on keys of several
// types and hashes (colliding ones too), batches of every size (the index
// grows while a batch is grouped), new keys dropped at several rates, and
// keys removed between batches as a TTL does, matches a map model; and
// after every batch, the partition's index, slab, side slices and
// observer agree (checkPart).

// checkPart checks the internal invariants of a state partition.
func checkPart[K comparable, V any](t *testing.T, sp *statePart[K, V, int], model map[K]int, ctx string) {
	t.Helper()
	if sp.index.len() != len(sp.slab) {
		t.Fatalf("%s: index.len %d != slab %d", ctx, sp.index.len(), len(sp.slab))
	}
	if len(sp.slab) != len(model) {
		t.Fatalf("%s: slab %d != model %d", ctx, len(sp.slab), len(model))
	}
	if sp.ttl && len(sp.seen) != len(sp.slab) {
		t.Fatalf("%s: seen %d", ctx, len(sp.seen))
	}
	if sp.durable && len(sp.ver) != len(sp.slab) {
		t.Fatalf("%s: ver %d", ctx, len(sp.ver))
	}
	n := 0
	for i, e := range sp.index.entries {
		if e.mark != 0 {
			t.Fatalf("%s: mark left at %d", ctx, i)
		}
		if e.pos == 0 {
			continue
		}
		n++
		if e.pos < 0 {
			t.Fatalf("%s: pending entry left: %v", ctx, e.key)
		}
		if f := sp.index.find(e.key); f != i {
			t.Fatalf("%s: entry %d (%v) found at %d", ctx, i, e.key, f)
		}
		if int(e.pos-1) >= len(sp.slab) || sp.slab[e.pos-1].Key != e.key {
			t.Fatalf("%s: entry %v points at %d", ctx, e.key, e.pos-1)
		}
	}
	if n != sp.index.n {
		t.Fatalf("%s: n %d, entries %d", ctx, sp.index.n, n)
	}
	for i, kv := range sp.slab {
		if p, ok := sp.index.get(kv.Key); !ok || p != int32(i) {
			t.Fatalf("%s: slab %d key %v index %d %v", ctx, i, kv.Key, p, ok)
		}
		if mv, ok := model[kv.Key]; !ok || mv != kv.Value {
			t.Fatalf("%s: key %v state %d model %d,%v", ctx, kv.Key, kv.Value, mv, ok)
		}
	}
}

func applyMatchesAModel[K comparable](t *testing.T, mk func(int) K, hash func(K) uint64, refs bool, maxU int) {
	for seed := range 16 {
		rng := rand.New(rand.NewPCG(uint64(seed), 99))
		dropNew := []int{0, 3, 10, 100}[seed%4] // percent of new keys not kept
		ttl := seed%3 == 1
		durable := seed%5 < 2
		update := func(_ K, vals []int, st int, exists bool) (int, bool) {
			for _, v := range vals {
				st += v
			}
			if !exists && st%100 < dropNew {
				return st, false
			}
			return st, st%7 != 0
		}
		op := &stateOp[K, int, int]{in: &Stream[Pair[K, int]]{}, update: update, scratchRefs: refs}
		obs := &mapObs[K]{m: map[K]int{}}
		sp := &statePart[K, int, int]{index: newHasherIndex[K](), group: map[K]int32{}, ttl: ttl, durable: durable, obs: obs}
		if hash != nil {
			sp.index = newKeyIndex(hash)
		}
		model := map[K]int{}
		universe := 1 + rng.IntN(maxU)
		for b := range 20 {
			size := []int{1, 5, 8, 9, 17, 100, 1000, 3000}[rng.IntN(8)]
			if rng.IntN(4) == 0 {
				size = rng.IntN(5000)
			}
			vals := make([]Pair[K, int], size)
			hot := 1 + rng.IntN(universe)
			for i := range vals {
				vals[i] = Pair[K, int]{mk(rng.IntN(hot)), rng.IntN(1000) - 100}
			}
			// model
			grp := map[K][]int{}
			var order []K
			for _, kv := range vals {
				if _, ok := grp[kv.Key]; !ok {
					order = append(order, kv.Key)
				}
				grp[kv.Key] = append(grp[kv.Key], kv.Value)
			}
			for _, k := range order {
				old, ok := model[k]
				nv, keep := update(k, grp[k], old, ok)
				if keep {
					model[k] = nv
				} else {
					delete(model, k)
				}
			}
			op.apply(sp, vals, int64(b+1))
			ctx := fmt.Sprintf("seed %d batch %d size %d", seed, b, size)
			checkPart(t, sp, model, ctx)
			if len(obs.err) > 0 {
				t.Fatalf("%s: %v", ctx, obs.err[:1])
			}
			if len(obs.m) != len(model) {
				t.Fatalf("%s: observer %d model %d", ctx, len(obs.m), len(model))
			}
			// some removals between batches, as TTL does
			if rng.IntN(3) == 0 {
				for range rng.IntN(len(sp.slab) + 1) {
					if len(sp.slab) == 0 {
						break
					}
					i := rng.IntN(len(sp.slab))
					delete(model, sp.slab[i].Key)
					sp.remove(int32(i))
				}
				checkPart(t, sp, model, ctx+" after removals")
			}
		}
	}
}

func TestApplyMatchesAModelInt(t *testing.T) {
	applyMatchesAModel(t, func(i int) int { return i }, nil, false, 20000)
}

func TestApplyMatchesAModelString(t *testing.T) {
	applyMatchesAModel(t, func(i int) string { return fmt.Sprint("k", i) }, nil, true, 20000)
}

func TestApplyMatchesAModelStruct(t *testing.T) {
	applyMatchesAModel(t, func(i int) sk { return sk{int32(i % 13), fmt.Sprint(i / 13)} }, nil, true, 20000)
}

func TestApplyMatchesAModelCollisions(t *testing.T) {
	applyMatchesAModel(t, func(i int) int64 { return int64(i) }, func(k int64) uint64 { return uint64(k%7) * 0x9E3779B97F4A7C15 }, false, 600)
}

func TestApplyMatchesAModelFewHomes(t *testing.T) {
	applyMatchesAModel(t, func(i int) int64 { return int64(i) }, func(k int64) uint64 { return uint64(k % 64) }, false, 3000)
}

func TestTypeMayBeIrreflexive(t *testing.T) {
	type id int64
	type withFloat struct {
		A int
		B float32
	}
	for _, tc := range []struct {
		t    reflect.Type
		want bool
	}{
		{reflect.TypeFor[int](), false},
		{reflect.TypeFor[id](), false},
		{reflect.TypeFor[string](), false},
		{reflect.TypeFor[*float64](), false},
		{reflect.TypeFor[sk](), false},
		{reflect.TypeFor[[0]float64](), false},
		{reflect.TypeFor[float64](), true},
		{reflect.TypeFor[withFloat](), true},
		{reflect.TypeFor[[2]complex64](), true},
		{reflect.TypeFor[any](), true},
	} {
		assert.Equal(t, tc.want, typeMayBeIrreflexive(tc.t), "%v", tc.t)
	}
}

type jsonKeyed struct{ v int }

func (k *jsonKeyed) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &k.v) }

func TestJSONLossy(t *testing.T) {
	type exported struct {
		A int
		B []string
		C map[string]float64
	}
	type unexported struct {
		A int
		b int
	}
	type skipped struct {
		A int `json:"-"`
	}
	type inner struct{ X int }
	type embedded struct {
		inner
		Y int
	}
	type myint int
	type embeddedInt struct {
		myint
		Y int
	}
	_, _ = unexported{b: 1}, embeddedInt{myint: 1} // fields JSON drops, set to be sure they are there
	type deep struct{ A []map[string]unexported }
	type withPointer struct{ P *int }
	type list struct {
		V    int
		Next *list
	}
	for _, tc := range []struct {
		t         reflect.Type
		key, keep bool // lossy as a key, as a state
	}{
		{reflect.TypeFor[int](), false, false},
		{reflect.TypeFor[string](), false, false},
		{reflect.TypeFor[exported](), false, false},
		{reflect.TypeFor[embedded](), false, false},
		{reflect.TypeFor[jsonKeyed](), false, false},
		{reflect.TypeFor[unexported](), true, true},
		{reflect.TypeFor[skipped](), true, true},
		{reflect.TypeFor[embeddedInt](), true, true},
		{reflect.TypeFor[deep](), true, true},
		{reflect.TypeFor[any](), true, true},
		{reflect.TypeFor[[2]any](), true, true},
		{reflect.TypeFor[*int](), true, false},
		{reflect.TypeFor[withPointer](), true, false},
		{reflect.TypeFor[list](), true, false},
	} {
		assert.Equal(t, tc.key, jsonLossy(tc.t, true, map[reflect.Type]bool{}) != nil, "%v as a key", tc.t)
		assert.Equal(t, tc.keep, jsonLossy(tc.t, false, map[reflect.Type]bool{}) != nil, "%v as a state", tc.t)
	}
}
