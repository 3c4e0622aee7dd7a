package stream

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The index against a map, with random inserts, updates and removals: with
// the state's hash, and with one that sends keys to a few homes, so that
// probes run long and wrap around the table's end and removals move many
// entries back.
func TestKeyIndexMatchesAMap(t *testing.T) {
	for name, index := range map[string]func() keyIndex[int64]{
		"hasher": newHasherIndex[int64], // hashed inline
		"collisions": func() keyIndex[int64] {
			return newKeyIndex(func(k int64) uint64 { return uint64(k%5) * 0x9E3779B97F4A7C15 })
		},
	} {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 8))
			x := index()
			model := map[int64]int32{}
			for step := range 20000 {
				k := int64(rng.IntN(300))
				switch rng.IntN(3) {
				case 0, 1:
					if step%5000 == 0 {
						x.reserve(x.len() + rng.IntN(600)) // a table of another size
					}
					pos := int32(rng.IntN(1 << 20))
					x.set(k, pos)
					model[k] = pos
				case 2:
					x.remove(k)
					delete(model, k)
				}
				if step%997 == 0 || step == 19999 {
					require.Equal(t, len(model), x.len(), "step %d", step)
					for k := range int64(300) {
						got, ok := x.get(k)
						want, wantOK := model[k]
						require.Equal(t, wantOK, ok, "step %d: key %d", step, k)
						require.Equal(t, want, got, "step %d: key %d", step, k)
					}
					held := 0
					for _, e := range x.entries {
						if e.pos != 0 {
							held++
						}
					}
					require.Equal(t, len(model), held, "step %d: entries in the table", step)
					assert.LessOrEqual(t, 4*x.len(), 3*len(x.entries), "at most 3/4 full")
				}
			}
		})
	}
}

// reserve makes room for n keys at once: inserting them does not grow the
// table again, and it stays at most 3/4 full.
func TestKeyIndexReserve(t *testing.T) {
	x := newKeyIndex(hasher[int64]())
	x.set(-1, 0)
	x.reserve(1000)
	size := len(x.entries)
	assert.LessOrEqual(t, 1000*4, size*3)
	assert.Greater(t, 1000*4, size*3/2, "not more than a doubling past what is needed")
	for k := range int64(999) {
		x.set(k, int32(k))
	}
	assert.Equal(t, size, len(x.entries), "no growth")
	for k := range int64(999) {
		got, ok := x.get(k)
		require.True(t, ok)
		require.Equal(t, int32(k), got)
	}
	got, ok := x.get(-1)
	assert.True(t, ok, "kept across the resize")
	assert.Equal(t, int32(0), got)
	x.reserve(10)
	assert.Equal(t, size, len(x.entries), "never shrinks")
}

type userID int64

// The inline hash of 64-bit integer keys is hasher's, named types too: the
// state's index and the shuffle agree on where a key goes.
func TestInlineHashIsHashers(t *testing.T) {
	values := []uint64{0, 1, 42, 1 << 40, 1<<63 + 5, ^uint64(0)}
	check := func(name string, word bool, inline, hashed func(v uint64) uint64) {
		assert.True(t, word, "%s: hashed inline", name)
		for _, v := range values {
			assert.Equal(t, hashed(v), inline(v), "%s %d", name, v)
		}
	}
	i64, i, u64, u := newHasherIndex[int64](), newHasherIndex[int](), newHasherIndex[uint64](), newHasherIndex[userID]()
	check("int64", i64.word, func(v uint64) uint64 { return i64.hashOf(int64(v)) }, func(v uint64) uint64 { return hasher[int64]()(int64(v)) })
	check("int", i.word, func(v uint64) uint64 { return i.hashOf(int(v)) }, func(v uint64) uint64 { return hasher[int]()(int(v)) })
	check("uint64", u64.word, func(v uint64) uint64 { return u64.hashOf(v) }, func(v uint64) uint64 { return hasher[uint64]()(v) })
	check("userID", u.word, func(v uint64) uint64 { return u.hashOf(userID(v)) }, func(v uint64) uint64 { return hasher[userID]()(userID(v)) })
	assert.False(t, newHasherIndex[int32]().word, "not a 64-bit key")
	assert.False(t, newHasherIndex[string]().word)
}
