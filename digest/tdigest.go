package digest

import (
	"encoding"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/influxdata/tdigest"
)

// Compression bounds. Higher compression keeps more centroids: smaller rank
// error, larger encodings, slower Add. See the package doc for the measured
// trade-off behind DefaultCompression.
const (
	DefaultCompression = 1000
	MinCompression     = 10
	MaxCompression     = 10000
)

// Option configures NewTDigest.
type Option interface{ apply(*config) }

type config struct {
	compression float64
}

type compressionOption float64

func (o compressionOption) apply(c *config) { c.compression = float64(o) }

// WithCompression sets the compression, in [MinCompression, MaxCompression].
func WithCompression(c float64) Option { return compressionOption(c) }

// TDigest is a mergeable sketch of float64 values that answers quantile
// queries with a small rank error. The zero value is an empty digest with
// DefaultCompression.
//
// A TDigest is not safe for concurrent use: Add, Quantile and the encoders
// all reorganise its buffers. Build one per goroutine and merge them. Merge
// only reads its argument, so one digest may be merged into several others
// at once, as long as nothing writes to it meanwhile.
type TDigest struct {
	compression float64 // 0 in the zero value, meaning DefaultCompression
	n           uint64
	min, max    float64 // exact; meaningless while n == 0

	// cents are the compacted centroids, sorted by mean, with integer
	// weights. It is our own copy: reading another digest's centroids
	// through the library would compact that digest, a write.
	cents tdigest.CentroidList
	cum   []uint64 // cum[i] = weight of cents[:i+1]; rebuilt when stale
	// pending holds the values added since the last compaction, as sort
	// keys (see key). The library buffers too, but its buffer can only be
	// read by compacting.
	pending []uint64
	// fractional is set once a value that is not an integer is added.
	fractional bool
	counts     []uint32 // scratch of sortPending
	// spare is the centroids' other buffer: cluster reads cents while it
	// writes the new ones.
	spare tdigest.CentroidList
}

var (
	_ encoding.BinaryMarshaler   = (*TDigest)(nil)
	_ encoding.BinaryAppender    = (*TDigest)(nil)
	_ encoding.BinaryUnmarshaler = (*TDigest)(nil)
)

// NewTDigest returns an empty digest. It returns an error wrapping
// ErrInvalidOption for a compression outside [MinCompression,
// MaxCompression].
func NewTDigest(opts ...Option) (*TDigest, error) {
	cfg := config{compression: DefaultCompression}
	for _, o := range opts {
		o.apply(&cfg)
	}
	if !validCompression(cfg.compression) {
		return nil, fmt.Errorf("digest: compression %v outside [%d, %d]: %w",
			cfg.compression, MinCompression, MaxCompression, ErrInvalidOption)
	}
	return &TDigest{compression: cfg.compression}, nil
}

func validCompression(c float64) bool {
	return c >= MinCompression && c <= MaxCompression // false for NaN
}

// Compression returns the digest's compression.
func (d *TDigest) Compression() float64 {
	if d.compression == 0 {
		return DefaultCompression
	}
	return d.compression
}

// Count returns the number of values added.
func (d *TDigest) Count() uint64 { return d.n }

// Min returns the smallest value added, exactly, or NaN if d is empty.
func (d *TDigest) Min() float64 {
	if d.n == 0 {
		return math.NaN()
	}
	return d.min
}

// Max returns the largest value added, exactly, or NaN if d is empty.
func (d *TDigest) Max() float64 {
	if d.n == 0 {
		return math.NaN()
	}
	return d.max
}

// Reset empties d, keeping its compression and its buffers.
func (d *TDigest) Reset() {
	d.n = 0
	d.cents = d.cents[:0]
	d.cum = d.cum[:0]
	d.pending = d.pending[:0]
	d.fractional = false
}

// Add records x. It returns an error wrapping ErrInvalidValue for NaN, ±Inf
// or a magnitude over MaxAbsValue, and one wrapping ErrFull when d already
// holds MaxCount values; d is unchanged then.
func (d *TDigest) Add(x float64) error {
	if !(math.Abs(x) <= MaxAbsValue) { // also catches NaN
		return fmt.Errorf("digest: add %v: %w", x, ErrInvalidValue)
	}
	if d.n >= MaxCount {
		return fmt.Errorf("digest: add %v: %w", x, ErrFull)
	}
	if x != math.Trunc(x) {
		d.fractional = true
	}
	d.include(x, x, 1)
	d.pending = append(d.pending, key(x))
	if len(d.pending)+len(d.cents) >= d.bufferCap() {
		d.compact()
	}
	return nil
}

// bufferCap is the library's buffer size. Keeping pending values plus
// centroids within it lets one compaction cluster them in a single pass.
func (d *TDigest) bufferCap() int { return 8 * int(math.Ceil(d.Compression())) }

// include accounts for n values spanning [lo, hi].
func (d *TDigest) include(lo, hi float64, n uint64) {
	if d.n == 0 {
		d.min, d.max = lo, hi
	} else {
		d.min, d.max = min(d.min, lo), max(d.max, hi)
	}
	d.n += n
}

// Merge adds every value of other to d. It only reads other, which may be d
// itself (doubling every count). The merged digest keeps d's compression.
// It returns an error wrapping ErrFull, leaving d unchanged, when the result
// would hold more than MaxCount values. A nil other is empty.
func (d *TDigest) Merge(other *TDigest) error {
	if other == nil || other.n == 0 {
		return nil
	}
	if d.n > MaxCount-other.n {
		return fmt.Errorf("digest: merge %d values into %d: %w", other.n, d.n, ErrFull)
	}
	// other's pending values are copied before sorting: other is read-only.
	d.pending = append(d.pending, other.pending...)
	d.fractional = d.fractional || other.fractional
	d.include(other.min, other.max, other.n)
	d.cluster(other.cents)
	return nil
}

// key maps a float64 to a uint64 with the same order, so that pending
// values sort as integers: no NaN handling in every comparison, and about a
// third faster (measured), sorting being most of Add's cost.
func key(x float64) uint64 {
	b := math.Float64bits(x)
	if b>>63 == 1 {
		return ^b
	}
	return b | 1<<63
}

func unkey(k uint64) float64 {
	if k>>63 == 1 {
		return math.Float64frombits(k &^ (1 << 63))
	}
	return math.Float64frombits(^k)
}

// compact folds the pending values into the centroids.
func (d *TDigest) compact() {
	if len(d.pending) > 0 {
		d.cluster(nil)
	}
}

// cluster replaces d's centroids by a clustering of d's centroids, extra
// and d's pending values. It is the library's clustering (its process:
// Dunning's merging t-digest with the arcsine scale), done in one pass over
// the three in order of mean, with d's whole count as the total: the
// library does it in chunks of its buffer, value by value. A run of equal
// pending values is taken at once, split only where a centroid ends, so
// that the cost grows with the distinct values and the centroids, not with
// the values: running totals are integers with many ties (BenchmarkAdd on
// such totals: 16 to 24 ns an Add, against 51 to 56 through the library).
// The centroids come out as adding the values one at a time in one
// library pass would make them, so a centroid in the tails still holds
// few values, and Quantile's interpolation between ties holds.
func (d *TDigest) cluster(extra tdigest.CentroidList) {
	d.sortPending()
	c := clustering{
		total: float64(d.n),
		cos:   math.Cos(math.Pi / d.Compression()),
		sin:   math.Sin(math.Pi / d.Compression()),
		out:   d.spare[:0],
	}
	a, b, p := d.cents, extra, d.pending
	for len(a)+len(b)+len(p) > 0 {
		// Take the smallest head of the three; among equal means, d's
		// centroids, then extra's, then the pending run.
		switch {
		case len(p) > 0 && (len(a) == 0 || unkey(p[0]) < a[0].Mean) && (len(b) == 0 || unkey(p[0]) < b[0].Mean):
			n := 1
			for n < len(p) && p[n] == p[0] {
				n++
			}
			c.addRun(unkey(p[0]), n)
			p = p[n:]
		case len(a) > 0 && (len(b) == 0 || b[0].Mean >= a[0].Mean):
			c.add(a[0])
			a = a[1:]
		default:
			c.add(b[0])
			b = b[1:]
		}
	}
	d.pending = d.pending[:0]
	d.spare, d.cents = d.cents[:0], c.out
	d.cum = d.cum[:0]
}

// clustering is one pass of cluster: values and centroids come in order of
// mean, and each is merged into the last centroid while that stays within
// the size the scale function allows where it ends, as the library's
// process does.
type clustering struct {
	total    float64 // the weight of everything the pass takes
	cos, sin float64 // of π/compression
	out      tdigest.CentroidList
	soFar    float64 // the weight taken so far
	limit    float64 // the weight up to which the last centroid may grow
}

// add takes a centroid, whole.
func (c *clustering) add(x tdigest.Centroid) {
	if len(c.out) > 0 && c.soFar+x.Weight <= c.limit {
		c.soFar += x.Weight
		c.merge(x.Mean, x.Weight)
		return
	}
	c.start(x)
}

// addRun takes n values equal to v, as n centroids of weight 1 but at once
// for those that go into the same centroid.
func (c *clustering) addRun(v float64, n int) {
	for n > 0 {
		if len(c.out) == 0 || c.soFar+1 > c.limit {
			c.start(tdigest.Centroid{Mean: v, Weight: 1})
			n--
			continue
		}
		fit := min(float64(n), math.Floor(c.limit-c.soFar))
		for fit > 1 && c.soFar+fit > c.limit { // rounding in the subtraction
			fit--
		}
		c.soFar += fit
		c.merge(v, fit)
		n -= int(fit)
	}
}

// start begins a centroid with x, and sets the limit of its growth: the
// library's integratedQ(integratedLocation(q)+1) at the quantile q where
// the previous centroid ends. With θ = integratedLocation(q)·π/c =
// acos(1−2q), that is (1 − cos(θ+π/c))/2, expanded here so as to need a
// square root instead of an arcsine and a sine (the library's way took
// most of the time of a pass over centroids).
func (c *clustering) start(x tdigest.Centroid) {
	switch q := c.soFar / c.total; {
	case len(c.out) == 0:
		c.limit = c.total * (1 - c.cos) / 2
	case 1-2*q <= -c.cos: // θ+π/c ≥ π: the scale's end
		c.limit = c.total
	default:
		c.limit = c.total * (1 - (1-2*q)*c.cos + 2*math.Sqrt(q*(1-q))*c.sin) / 2
	}
	c.soFar += x.Weight
	c.out = append(c.out, x)
}

// merge adds weight w at mean v to the last centroid, as the library's
// Centroid.Add does.
func (c *clustering) merge(v, w float64) {
	last := &c.out[len(c.out)-1]
	last.Weight += w
	last.Mean += w * (v - last.Mean) / last.Weight
}

var negZeroKey = key(math.Copysign(0, -1))

// sortPending sorts the pending values. Integers within a range not much
// wider than their number, such as running totals, are sorted by counting
// them (two passes): the sort is otherwise about a quarter of Add's time.
func (d *TDigest) sortPending() {
	p := d.pending
	if d.fractional || len(p) < 64 {
		slices.Sort(p)
		return
	}
	lo, hi := unkey(p[0]), unkey(p[0])
	negZero := false // counted, -0 would come back as 0
	for _, k := range p {
		v := unkey(k)
		lo, hi = min(lo, v), max(hi, v)
		negZero = negZero || k == negZeroKey
	}
	if negZero || hi-lo >= float64(2*len(p)) {
		slices.Sort(p)
		return
	}
	n := int(hi-lo) + 1
	if cap(d.counts) < n {
		d.counts = make([]uint32, n)
	}
	counts := d.counts[:n]
	clear(counts)
	for _, k := range p {
		counts[int(unkey(k)-lo)]++
	}
	i := 0
	for v, c := range counts {
		k := key(lo + float64(v))
		for range c {
			p[i] = k
			i++
		}
	}
}

// Quantile returns an estimate of the q-quantile: the smallest value v such
// that at least q·n of the n values are ≤ v (see the package doc for the
// exact definition and the error bound). Quantile(0) and Quantile(1) are
// the exact minimum and maximum. It returns NaN if d is empty or q is
// outside [0, 1]. The first call after an Add folds the buffered values in
// (about 25 µs at the default compression); later calls take nanoseconds.
func (d *TDigest) Quantile(q float64) float64 {
	if d.n == 0 || !(q >= 0 && q <= 1) {
		return math.NaN()
	}
	switch q {
	case 0:
		return d.min
	case 1:
		return d.max
	}
	d.compact()
	if len(d.cum) != len(d.cents) {
		d.cum = d.cum[:0]
		var sum uint64
		for _, c := range d.cents {
			sum += uint64(c.Weight)
			d.cum = append(d.cum, sum)
		}
	}

	// The centroid holding the target rank. A centroid of weight 1 is one
	// of the values, exactly.
	i, _ := slices.BinarySearch(d.cum, rank(q, d.n))
	c := d.cents[i]
	if c.Weight == 1 {
		return c.Mean
	}

	// Otherwise interpolate between centroid midpoints, with the exact
	// minimum at rank 0 and the exact maximum at rank n as end points: the
	// library uses the extreme centroid means there, which are not the
	// extremes.
	x := q * float64(d.n)
	mid := d.midpoint(i)
	var v float64
	switch {
	case x < mid && i == 0:
		v = lerp(0, d.min, mid, c.Mean, x)
	case x < mid:
		v = lerp(d.midpoint(i-1), d.cents[i-1].Mean, mid, c.Mean, x)
	case i == len(d.cents)-1:
		v = lerp(mid, c.Mean, float64(d.n), d.max, x)
	default:
		v = lerp(mid, c.Mean, d.midpoint(i+1), d.cents[i+1].Mean, x)
	}
	if !d.fractional {
		// The true quantile is one of the values, so an integer. Where a
		// centroid mixes two heavily tied integers, interpolation lands
		// between them, on a value that has no rank of its own; rounding
		// puts it on the one that holds the rank, give or take a fraction
		// of a centroid (see the package doc for the measurements).
		v = min(max(math.Round(v), d.min), d.max)
	}
	return v
}

// midpoint returns the rank at the middle of centroid i.
func (d *TDigest) midpoint(i int) float64 {
	return float64(d.cum[i]) - d.cents[i].Weight/2
}

// lerp interpolates linearly between (x0, y0) and (x1, y1) at x, staying
// within [y0, y1] for any x.
func lerp(x0, y0, x1, y1, x float64) float64 {
	if x1 <= x0 {
		return y0
	}
	t := min(max((x-x0)/(x1-x0), 0), 1)
	return min(max(y0+t*(y1-y0), y0), y1)
}

// flagFractional marks, in the encoding's flags byte, a digest holding a
// value that is not an integer.
const flagFractional byte = 1

// maxCentroids bounds the centroids a decoded digest may claim. The
// clustering makes any two neighbouring centroids span more than one unit of
// its scale, which runs from 0 to the compression, so about 2·compression
// is the most it produces; the slack is for rounding.
func maxCentroids(compression float64) int {
	return 2*int(math.Ceil(compression)) + 16
}

// MarshalBinary returns the encoding of d laid out in the package doc. The
// same state always gives the same bytes.
func (d *TDigest) MarshalBinary() ([]byte, error) { return d.AppendBinary(nil) }

// AppendBinary appends the encoding of d to b and returns the result.
func (d *TDigest) AppendBinary(b []byte) ([]byte, error) {
	d.compact()
	b = slices.Grow(b, 2+8+10+16+10+len(d.cents)*(8+binary.MaxVarintLen64))
	b = append(b, kindTDigest, version1)
	b = appendFloat(b, d.Compression())
	var flags byte
	if d.fractional {
		flags |= flagFractional
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, d.n)
	if d.n == 0 {
		return b, nil
	}
	b = appendFloat(b, d.min)
	b = appendFloat(b, d.max)
	b = binary.AppendUvarint(b, uint64(len(d.cents)))
	for _, c := range d.cents {
		b = appendFloat(b, c.Mean)
		b = binary.AppendUvarint(b, uint64(c.Weight))
	}
	return b, nil
}

// UnmarshalBinary replaces d with the digest encoded in b. It returns an
// error wrapping ErrVersion for an unknown version and one wrapping
// ErrCorrupt for anything else invalid; d is unchanged then. It allocates
// at most in proportion to len(b).
func (d *TDigest) UnmarshalBinary(b []byte) error {
	r := decoder{name: "t-digest", b: b}
	r.header(kindTDigest)
	comp := r.float("compression")
	if r.err == nil && !validCompression(comp) {
		r.fail("compression %v outside [%d, %d]", comp, MinCompression, MaxCompression)
	}
	flags := r.byte("flags")
	n := r.uvarint("count")
	if r.err == nil && n > MaxCount {
		r.fail("count %d over %d", n, uint64(MaxCount))
	}
	if r.err == nil && (flags&^flagFractional != 0 || n == 0 && flags != 0) {
		r.fail("flags %#02x for %d values", flags, n)
	}
	fractional := flags&flagFractional != 0
	if n == 0 {
		r.end()
		if r.err != nil {
			return r.err
		}
		d.setDecoded(comp, false, 0, 0, 0, d.cents[:0])
		return nil
	}

	lo, hi := r.float("min"), r.float("max")
	if r.err == nil && !(lo <= hi && max(-lo, hi) <= MaxAbsValue) {
		r.fail("min %v, max %v", lo, hi)
	}
	if r.err == nil && !fractional && (lo != math.Trunc(lo) || hi != math.Trunc(hi)) {
		r.fail("min %v, max %v in a digest of integers", lo, hi)
	}
	k := r.uvarint("centroid count")
	// Each centroid takes at least 9 bytes, so this bounds the allocation
	// by the input's length as well as by the compression.
	if r.err == nil && (k == 0 || k > n || k > uint64(maxCentroids(comp)) || k > uint64(r.remaining()/9)) {
		r.fail("%d centroids for %d values at compression %v in %d bytes", k, n, comp, r.remaining())
	}
	if r.err != nil {
		return r.err
	}
	cents := make(tdigest.CentroidList, 0, k)
	var sum uint64
	prev := lo
	for i := range k {
		mean := r.float("centroid mean")
		w := r.uvarint("centroid weight")
		if r.err != nil {
			return r.err
		}
		if mean < prev || mean > hi {
			r.fail("centroid %d: mean %v out of order or outside [%v, %v]", i, mean, lo, hi)
			return r.err
		}
		if w == 0 || w > n-sum {
			r.fail("centroid %d: weight %d, %d of %d left", i, w, n-sum, n)
			return r.err
		}
		if w == 1 && !fractional && mean != math.Trunc(mean) {
			r.fail("centroid %d: single value %v in a digest of integers", i, mean)
			return r.err
		}
		sum += w
		prev = mean
		cents = append(cents, tdigest.Centroid{Mean: mean, Weight: float64(w)})
	}
	if sum != n {
		r.fail("weights sum to %d, count is %d", sum, n)
	}
	r.end()
	if r.err != nil {
		return r.err
	}
	d.setDecoded(comp, fractional, n, lo, hi, cents)
	return nil
}

func (d *TDigest) setDecoded(comp float64, fractional bool, n uint64, lo, hi float64, cents tdigest.CentroidList) {
	d.compression, d.fractional = comp, fractional
	d.n, d.min, d.max = n, lo, hi
	d.cents = cents
	d.cum = d.cum[:0]
	d.pending = d.pending[:0]
}
