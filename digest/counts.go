package digest

import (
	"encoding"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// Counts is an exact sketch of integer values: a count per distinct value.
// Its quantiles are exact, values can be removed, and its size grows with
// the number of distinct values, so it suits integer data with few of them,
// such as running totals of small scores. The zero value is empty and ready
// to use.
//
// Updates (AddInt, Remove, Move) cost a map access. Quantile walks the
// distinct values in order, sorting only those that are new since the last
// call: a few microseconds for thousands of distinct values, whatever the
// number of values.
//
// Counts is not safe for concurrent use: Quantile and the encoders sort
// internal state. Build one per goroutine and merge them. Merge only reads
// its argument, so one Counts may be merged into several others at once, as
// long as nothing writes to it meanwhile.
type Counts struct {
	// Slot s holds value vals[s], seen ns[s] times. A slot whose count
	// drops to 0 is kept for the value's return, until zero slots are the
	// majority and compact drops them.
	index map[int64]int
	vals  []int64
	ns    []uint64
	zeros int // slots with ns == 0

	// order holds slots [0, sorted) sorted by value; later slots are new.
	order  []int
	sorted int
	fresh  []int // scratch for sort
	spare  []int // scratch for sort

	n uint64
}

var (
	_ encoding.BinaryMarshaler   = (*Counts)(nil)
	_ encoding.BinaryAppender    = (*Counts)(nil)
	_ encoding.BinaryUnmarshaler = (*Counts)(nil)
)

// NewCounts returns an empty Counts.
func NewCounts() *Counts { return &Counts{} }

// Count returns the number of values held.
func (c *Counts) Count() uint64 { return c.n }

// Distinct returns the number of distinct values held.
func (c *Counts) Distinct() int { return len(c.vals) - c.zeros }

// CountOf returns how many times v is held.
func (c *Counts) CountOf(v int64) uint64 {
	if s, ok := c.index[v]; ok {
		return c.ns[s]
	}
	return 0
}

// Reset empties c, keeping its buffers.
func (c *Counts) Reset() {
	clear(c.index)
	c.vals, c.ns, c.order = c.vals[:0], c.ns[:0], c.order[:0]
	c.zeros, c.sorted, c.n = 0, 0, 0
}

// Add records x, which must be an integer within ±MaxExactInt; it returns
// an error wrapping ErrInvalidValue otherwise, and one wrapping ErrFull when
// c already holds MaxCount values.
func (c *Counts) Add(x float64) error {
	if !(math.Abs(x) <= MaxExactInt) || x != math.Trunc(x) {
		return fmt.Errorf("digest: counts: add %v: not an integer within ±2^53: %w", x, ErrInvalidValue)
	}
	return c.AddInt(int64(x))
}

// AddInt records v. It returns an error wrapping ErrInvalidValue when v is
// outside ±MaxExactInt, and one wrapping ErrFull when c already holds
// MaxCount values.
func (c *Counts) AddInt(v int64) error {
	if err := checkInt("add", v); err != nil {
		return err
	}
	if c.n >= MaxCount {
		return fmt.Errorf("digest: counts: add %d: %w", v, ErrFull)
	}
	c.add(v, 1)
	return nil
}

func checkInt(op string, v int64) error {
	if v < -MaxExactInt || v > MaxExactInt {
		return fmt.Errorf("digest: counts: %s %d: outside ±2^53: %w", op, v, ErrInvalidValue)
	}
	return nil
}

// add counts v k times; v is in range and the total stays within MaxCount.
func (c *Counts) add(v int64, k uint64) {
	c.n += k
	if s, ok := c.index[v]; ok {
		if c.ns[s] == 0 {
			c.zeros--
		}
		c.ns[s] += k
		return
	}
	if c.index == nil {
		c.index = make(map[int64]int)
	}
	c.index[v] = len(c.vals)
	c.vals = append(c.vals, v)
	c.ns = append(c.ns, k)
}

// Remove removes one occurrence of v. It returns an error wrapping
// ErrNotFound, leaving c unchanged, if c does not hold v.
func (c *Counts) Remove(v int64) error {
	s, ok := c.index[v]
	if !ok || c.ns[s] == 0 {
		return fmt.Errorf("digest: counts: remove %d: %w", v, ErrNotFound)
	}
	c.ns[s]--
	c.n--
	if c.ns[s] == 0 {
		c.zeros++
		c.maybeCompact()
	}
	return nil
}

// maybeCompact drops the emptied slots once they are the majority: this
// keeps the walk in Quantile proportional to the live values, at an
// amortised O(1) cost per removal.
func (c *Counts) maybeCompact() {
	if c.zeros > 1024 && c.zeros > len(c.vals)/2 {
		c.compact()
	}
}

// Move replaces one occurrence of from by to, as when a running total
// changes. It returns an error wrapping ErrNotFound if c does not hold from,
// and one wrapping ErrInvalidValue if to is outside ±MaxExactInt; c is
// unchanged then.
func (c *Counts) Move(from, to int64) error {
	if err := checkInt("move to", to); err != nil {
		return err
	}
	s, ok := c.index[from]
	if !ok || c.ns[s] == 0 {
		return fmt.Errorf("digest: counts: move %d to %d: %w", from, to, ErrNotFound)
	}
	if from == to {
		return nil
	}
	c.add(to, 1) // never moves a slot, so s still holds from
	c.n--
	if c.ns[s]--; c.ns[s] == 0 {
		c.zeros++
		c.maybeCompact()
	}
	return nil
}

// Merge adds every value of other to c. It only reads other, which may be c
// itself (doubling every count). It returns an error wrapping ErrFull,
// leaving c unchanged, when the result would hold more than MaxCount
// values. A nil other is empty.
func (c *Counts) Merge(other *Counts) error {
	if other == nil || other.n == 0 {
		return nil
	}
	if c.n > MaxCount-other.n {
		return fmt.Errorf("digest: counts: merge %d values into %d: %w", other.n, c.n, ErrFull)
	}
	// When other is c, add finds every value in place: no slot is added
	// while we range over them.
	for s, k := range other.ns {
		if k > 0 {
			c.add(other.vals[s], k)
		}
	}
	return nil
}

// Quantile returns the smallest value v such that at least q·n of the n
// values are ≤ v (see the package doc for the exact definition): exact,
// and always one of the values. Quantile(0) is the minimum and Quantile(1)
// the maximum. It returns NaN if c is empty or q is outside [0, 1].
func (c *Counts) Quantile(q float64) float64 {
	if c.n == 0 || !(q >= 0 && q <= 1) {
		return math.NaN()
	}
	r := rank(q, c.n)
	c.sort()
	// Walk from the nearer end. A slot with count 0 never ends a walk:
	// the running sum does not move there.
	if r <= c.n/2 {
		var below uint64
		for _, s := range c.order {
			if below += c.ns[s]; below >= r {
				return float64(c.vals[s])
			}
		}
	}
	var above uint64 // values greater than vals[order[i]]
	i := len(c.order) - 1
	for ; i > 0; i-- {
		s := c.order[i]
		if c.n-above-c.ns[s] < r {
			break
		}
		above += c.ns[s]
	}
	return float64(c.vals[c.order[i]])
}

// sort brings order up to date with the slots added since the last call,
// in O(new·log(new) + distinct).
func (c *Counts) sort() {
	if c.sorted == len(c.vals) {
		return
	}
	less := func(a, b int) int {
		switch va, vb := c.vals[a], c.vals[b]; {
		case va < vb:
			return -1
		case va > vb:
			return 1
		}
		return 0
	}
	fresh := c.fresh[:0]
	for s := c.sorted; s < len(c.vals); s++ {
		fresh = append(fresh, s)
	}
	slices.SortFunc(fresh, less)
	merged := slices.Grow(c.spare[:0], len(c.vals))
	old := c.order
	i, j := 0, 0
	for i < len(old) && j < len(fresh) {
		if less(old[i], fresh[j]) < 0 {
			merged = append(merged, old[i])
			i++
		} else {
			merged = append(merged, fresh[j])
			j++
		}
	}
	merged = append(merged, old[i:]...)
	merged = append(merged, fresh[j:]...)
	c.order, c.spare, c.fresh = merged, old, fresh
	c.sorted = len(c.vals)
}

// compact drops the slots whose count is 0 and renumbers the others in
// value order, so that later walks read memory in sequence.
func (c *Counts) compact() {
	c.sort()
	live := len(c.vals) - c.zeros
	vals := make([]int64, 0, live)
	ns := make([]uint64, 0, live)
	for _, s := range c.order {
		v := c.vals[s]
		if c.ns[s] == 0 {
			delete(c.index, v)
			continue
		}
		c.index[v] = len(vals)
		vals = append(vals, v)
		ns = append(ns, c.ns[s])
	}
	c.vals, c.ns, c.zeros = vals, ns, 0
	c.order = c.order[:live]
	for i := range c.order {
		c.order[i] = i
	}
	c.sorted = live
}

// MarshalBinary returns the encoding of c laid out in the package doc. The
// same values and counts always give the same bytes, however they were
// added.
func (c *Counts) MarshalBinary() ([]byte, error) { return c.AppendBinary(nil) }

// AppendBinary appends the encoding of c to b and returns the result.
func (c *Counts) AppendBinary(b []byte) ([]byte, error) {
	c.sort()
	b = slices.Grow(b, 2+binary.MaxVarintLen64+c.Distinct()*4)
	b = append(b, kindCounts, version1)
	b = binary.AppendUvarint(b, uint64(c.Distinct()))
	first, prev := true, int64(0)
	for _, s := range c.order {
		k := c.ns[s]
		if k == 0 {
			continue
		}
		v := c.vals[s]
		if first {
			b = binary.AppendVarint(b, v)
			first = false
		} else {
			b = binary.AppendUvarint(b, uint64(v-prev-1))
		}
		b = binary.AppendUvarint(b, k)
		prev = v
	}
	return b, nil
}

// UnmarshalBinary replaces c with the Counts encoded in b. It returns an
// error wrapping ErrVersion for an unknown version and one wrapping
// ErrCorrupt for anything else invalid; c is unchanged then. It allocates
// at most in proportion to len(b).
func (c *Counts) UnmarshalBinary(b []byte) error {
	r := decoder{name: "counts", b: b}
	r.header(kindCounts)
	d := r.uvarint("distinct values")
	// Each value takes at least two bytes: this bounds the allocation.
	if r.err == nil && d > uint64(r.remaining()/2) {
		r.fail("%d distinct values in %d bytes", d, r.remaining())
	}
	if r.err != nil {
		return r.err
	}
	vals := make([]int64, 0, d)
	ns := make([]uint64, 0, d)
	var total uint64
	var prev int64
	for i := range d {
		var v int64
		if i == 0 {
			if v = r.varint("value"); r.err == nil && (v < -MaxExactInt || v > MaxExactInt) {
				r.fail("value %d outside ±2^53", v)
			}
		} else {
			// prev ≤ MaxExactInt, so room cannot overflow.
			gap, room := r.uvarint("value gap"), uint64(MaxExactInt-prev)
			if r.err == nil && gap >= room {
				r.fail("value %d + %d + 1 over 2^53", prev, gap)
			}
			v = prev + int64(gap) + 1
		}
		k := r.uvarint("count")
		if r.err == nil && (k == 0 || k > MaxCount-total) {
			r.fail("value %d: count %d with %d before, want 1 to %d in all", v, k, total, uint64(MaxCount))
		}
		if r.err != nil {
			return r.err
		}
		vals = append(vals, v)
		ns = append(ns, k)
		total += k
		prev = v
	}
	r.end()
	if r.err != nil {
		return r.err
	}

	index := make(map[int64]int, len(vals))
	order := make([]int, len(vals))
	for s, v := range vals {
		index[v] = s
		order[s] = s
	}
	*c = Counts{index: index, vals: vals, ns: ns, order: order, sorted: len(vals), n: total}
	return nil
}
