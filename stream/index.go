package stream

import "unsafe"

// keyIndex maps the keys of a state partition to their positions in its
// slab. It is an open-addressing table with linear probing, at most 3/4
// full: a lookup that finds its key reads one entry, usually in one cache
// line, where Go's map reads a group's control word and then a slot. An
// entry also holds the key's mark, its group while a batch's values are
// grouped, so that grouping a record costs one lookup and no other memory.
//
// Removal shifts the entries that follow back (no tombstones), so entries
// move: an entry's table position is valid only until the next removal or
// growth.
type keyIndex[K comparable] struct {
	hash    func(K) uint64
	entries []keyEntry[K]
	n       int  // keys held
	word    bool // K is a 64-bit integer, which hash mixes as its bits: hashed inline
}

type keyEntry[K comparable] struct {
	key  K
	pos  int32 // slab position + 1; 0: the entry is empty; pendingPos: not in the slab yet
	mark int32 // 1 + the key's group in the batch being grouped, or 0
}

const minIndexSize = 8

// pendingPos is the pos of the entry of a key entered while a batch is
// grouped, before the update gives it a slab position.
const pendingPos = -1

// newKeyIndex returns an empty index of keys hashed by hash.
func newKeyIndex[K comparable](hash func(K) uint64) keyIndex[K] {
	return keyIndex[K]{hash: hash, entries: make([]keyEntry[K], minIndexSize)}
}

// newHasherIndex returns an empty index of keys hashed by hasher, inline
// for 64-bit integers.
func newHasherIndex[K comparable]() keyIndex[K] {
	x := newKeyIndex(hasher[K]())
	x.word = wordKey[K]()
	return x
}

// home returns where k's probe starts.
func (x *keyIndex[K]) home(k K) int {
	return int(x.hashOf(k) & uint64(len(x.entries)-1))
}

// hashOf returns the hash of k.
func (x *keyIndex[K]) hashOf(k K) uint64 {
	if x.word {
		// hasher's hash of a 64-bit integer, without the call.
		return mix64(*(*uint64)(unsafe.Pointer(&k)))
	}
	return x.hash(k)
}

// find returns the table position of k's entry, or -1.
func (x *keyIndex[K]) find(k K) int { return x.findFrom(x.home(k), k) }

// findFrom is find with k's home already known.
func (x *keyIndex[K]) findFrom(home int, k K) int {
	mask := len(x.entries) - 1
	for i := home; ; i = (i + 1) & mask {
		e := &x.entries[i]
		if e.pos == 0 {
			return -1
		}
		if e.key == k {
			return i
		}
	}
}

// slot returns the table position of k's entry and true, or, with false,
// the empty position where k's probe from home ends: where k would go.
func (x *keyIndex[K]) slot(home int, k K) (int, bool) {
	mask := len(x.entries) - 1
	for i := home; ; i = (i + 1) & mask {
		e := &x.entries[i]
		if e.pos == 0 {
			return i, false
		}
		if e.key == k {
			return i, true
		}
	}
}

// full reports whether one more key would grow the table.
func (x *keyIndex[K]) full() bool { return (x.n+1)*4 > len(x.entries)*3 }

// get returns k's slab position.
func (x *keyIndex[K]) get(k K) (int32, bool) {
	if i := x.find(k); i >= 0 {
		return x.entries[i].pos - 1, true
	}
	return 0, false
}

// set records k at slab position pos, adding k if it is not there.
func (x *keyIndex[K]) set(k K, pos int32) {
	if x.full() {
		x.grow()
	}
	mask := len(x.entries) - 1
	for i := x.home(k); ; i = (i + 1) & mask {
		e := &x.entries[i]
		if e.pos == 0 {
			*e = keyEntry[K]{key: k, pos: pos + 1}
			x.n++
			return
		}
		if e.key == k {
			e.pos = pos + 1
			return
		}
	}
}

// remove deletes k, if it is there, and moves back the entries after it
// that would no longer be found past the gap.
func (x *keyIndex[K]) remove(k K) {
	i := x.find(k)
	if i < 0 {
		return
	}
	mask := len(x.entries) - 1
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		e := &x.entries[j]
		if e.pos == 0 {
			break
		}
		// e may fill the gap at i if its probe from home passes i before
		// it reaches j.
		if h := x.home(e.key); (j-h)&mask >= (j-i)&mask {
			x.entries[i] = *e
			i = j
		}
	}
	x.entries[i] = keyEntry[K]{}
	x.n--
}

// reserve grows the table, if need be, to hold n keys without growing
// again.
func (x *keyIndex[K]) reserve(n int) {
	size := len(x.entries)
	for n*4 > size*3 {
		size *= 2
	}
	if size > len(x.entries) {
		x.resize(size)
	}
}

// grow doubles the table.
func (x *keyIndex[K]) grow() { x.resize(2 * len(x.entries)) }

// resize moves the entries to a table of size entries, a power of two.
func (x *keyIndex[K]) resize(size int) {
	old := x.entries
	x.entries = make([]keyEntry[K], size)
	mask := len(x.entries) - 1
	for _, e := range old {
		if e.pos == 0 {
			continue
		}
		i := x.home(e.key)
		for x.entries[i].pos != 0 {
			i = (i + 1) & mask
		}
		x.entries[i] = e
	}
}

func (x *keyIndex[K]) len() int { return x.n }

// lookAhead is how many keys' entries a batch of lookups reads before it
// probes for the first: their cache misses overlap instead of following
// one another (the table is far larger than the caches).
const lookAhead = 16
