package digest

import (
	"errors"
	"math"
)

// Sketch is what a pipeline needs from a quantile sketch: fill one per
// partition, merge them, read a quantile. S is the concrete sketch type, so
// that Merge stays typed:
//
//	func threshold[S digest.Sketch[S]](total S, parts []S, q float64) (float64, error)
//
// Both sketches also implement encoding.BinaryMarshaler,
// encoding.BinaryAppender and encoding.BinaryUnmarshaler, for sending
// partial sketches between processes.
type Sketch[S any] interface {
	// Add records one value.
	Add(x float64) error
	// Merge adds every value of other, leaving other unchanged.
	Merge(other S) error
	// Quantile returns the q-quantile, or NaN when the sketch is empty or q
	// is outside [0, 1].
	Quantile(q float64) float64
}

var (
	_ Sketch[*TDigest] = (*TDigest)(nil)
	_ Sketch[*Counts]  = (*Counts)(nil)
)

// Errors returned by the sketches, always wrapped with context; test them
// with errors.Is.
var (
	// ErrInvalidValue is returned by Add, and by Counts.AddInt and
	// Counts.Move, for a value the sketch cannot hold: NaN, ±Inf, a
	// magnitude over MaxAbsValue (TDigest), a fraction or a magnitude over
	// MaxExactInt (Counts).
	ErrInvalidValue = errors.New("invalid value")
	// ErrFull is returned by Add, Merge and Counts.AddInt when the sketch
	// would hold more than MaxCount values.
	ErrFull = errors.New("sketch full")
	// ErrNotFound is returned by Counts.Remove and Counts.Move when the
	// value to remove is not in the sketch.
	ErrNotFound = errors.New("value not found")
	// ErrInvalidOption is returned by NewTDigest for an option out of range.
	ErrInvalidOption = errors.New("invalid option")
	// ErrCorrupt is returned by UnmarshalBinary for bytes that are not a
	// valid encoding of that sketch: truncated, trailing data, fields out
	// of range, or the other sketch's encoding.
	ErrCorrupt = errors.New("corrupt encoding")
	// ErrVersion is returned by UnmarshalBinary for an encoding of a
	// version this package does not know, such as one written by a newer
	// release.
	ErrVersion = errors.New("unsupported encoding version")
)

const (
	// MaxCount is the most values a sketch holds. Counts and ranks stay
	// exact in float64 up to it.
	MaxCount = 1 << 53
	// MaxExactInt is the largest magnitude Counts accepts: every integer up
	// to it has an exact float64, so Quantile's result compares exactly
	// with the values it was built from.
	MaxExactInt = 1 << 53
	// MaxAbsValue is the largest magnitude TDigest accepts. The centroid
	// arithmetic multiplies values by weights up to MaxCount; beyond this
	// it would overflow to ±Inf and turn later quantiles into NaN.
	MaxAbsValue = 1e290
)

// rankTolerance is how close q·n must be to an integer to count as that
// integer: 0.07·100 is 7.000000000000001 in float64, and a reader means 7.
const rankTolerance = 1e-12

// rank returns the 1-based rank that q selects among n values: ⌈q·n⌉,
// clamped to [1, n], with q·n snapped to a nearby integer first (see
// rankTolerance). n must be at least 1 and q in [0, 1].
func rank(q float64, n uint64) uint64 {
	x := q * float64(n)
	if r := math.Round(x); math.Abs(x-r) <= rankTolerance*r {
		x = r
	}
	k := uint64(math.Ceil(x))
	return min(max(k, 1), n)
}
