// Package digest holds mergeable quantile sketches, for finding a
// percentile of values spread over partitions: each partition fills its own
// sketch, the sketches are merged, and the merged one answers. The popular
// users pipeline does this with the running totals of every user to find the
// 0.95 quantile, then keeps the users whose total is strictly greater.
//
// Two sketches share the Sketch interface, so a pipeline can take either:
//
//   - TDigest estimates quantiles of any float64 values in bounded space
//     (1.2 to 1.4·compression centroids, 13 KB encoded at the default), on
//     github.com/influxdata/tdigest. It keeps the exact minimum and maximum
//     beside the library's centroids, rejects NaN and ±Inf, merges without
//     touching its argument and has a binary encoding: the library has none
//     of these.
//   - Counts is exact for integer values: a count per distinct value, so its
//     size grows with the number of distinct values. Values can be removed
//     or moved, so a running total that changes from 40 to 43 moves in the
//     sketch (Move(40, 43)) instead of it being rebuilt each batch.
//
// # Quantile definition
//
// For n values sorted as x₁ ≤ x₂ ≤ … ≤ xₙ, the q-quantile is xᵣ with
// r = ⌈q·n⌉ clamped to [1, n]: the smallest value v such that at least q·n
// of the values are ≤ v. So Quantile(0) is the minimum, Quantile(1) the
// maximum, and the 0.95-quantile of 1..100 is 95. Before rounding up, q·n
// is snapped to an integer within a relative 1e-12 of it, so that decimal
// fractions with no exact binary form pick the rank a reader expects
// (0.07·100 is 7.000000000000001 in float64; the rank is 7, not 8).
// Quantile returns NaN for an empty sketch, and for q outside [0, 1] or NaN.
//
// Counts answers exactly this. TDigest estimates it: exactly while each
// value still has a centroid of its own (up to about 1.2·compression
// values), and within the bound below otherwise, with Quantile(0) and
// Quantile(1) always exact.
//
// # Ties
//
// With v = Quantile(q), the rule "keep x > v" never keeps a value equal to
// v, however many share it. It keeps n − #{x ≤ v} values: at most (1−q)·n,
// and fewer when many values tie at v, possibly none. If 90 users have 10
// and 10 users have 20, Quantile(0.95) is 20 and nobody is strictly above
// it; if 96 have 10 and 4 have 20, it is 10 and the 4 are kept. With
// TDigest, the same holds within its rank error: at most (1−q+ε)·n kept,
// but for two heavily tied values far apart (see below).
//
// # Accuracy of TDigest
//
// The rank error of an estimate v is how far q lies outside the ranks v
// holds among the values, [#{x < v}/n, #{x ≤ v}/n]; it is 0 if v is a
// correct answer. At compression c, on n values, the rank error stays
// (but for the ties below) within
//
//	ε(q) = π·√(q·(1−q)) / (4·c) + 2/n
//
// a quarter of the ranks a centroid holds near q, plus two values. At the
// default compression this is 393 ppm (parts per million of n) at the
// median, 236 at 0.9, 171 at 0.95, 78 at 0.99 and 25 at 0.999, plus 2/n.
// Over uniform, exponential and heavy-tailed integer data (running totals
// of 1-3 point scores over a Pareto number of events), n = 1,000,000, 3
// seeds each, for one digest and for 8 merged digests of disjoint parts,
// the worst error measured was 20% of ε at the default compression, and
// 97% of it at compression 100. The worst errors, in ppm:
//
//	compression   q=0.5   0.9  0.95  0.99  0.999   encoded
//	        100    1024   226   232   427    242    1.4 KB
//	        200     129   198   156    79     49    2.8 KB
//	        500      69    59    68    33     13    6.9 KB
//	       1000      63    47    23    14      4   13.9 KB
//	       2000      52    53    29    16      4   27.3 KB
//
// DefaultCompression is 1000: an order of magnitude below compression 100
// at the 0.95 the pipeline asks for (23 ppm, 23 users in a million), for a
// cost that matters little there. Add barely slows down with compression
// (measured on uniform floats: 69 ns at 100, 84 ns at 1000, 91 ns at 2000;
// sorting the buffer dominates, and larger buffers are sorted less often;
// 16 to 24 ns on running totals, integers with many ties), merging 8
// decoded digests takes 0.3 ms, and 13 KB per partition per batch is small
// for a Kafka record. Beyond 1000 the gains are uneven for twice the space.
//
// The clustering is the library's (Dunning's merging t-digest with its
// arcsine scale function), done by this package in one pass over the
// sorted values and centroids, with the whole count known: the library
// takes values one at a time, in chunks of its buffer. A run of equal
// values is taken at once wherever it falls within one centroid, so
// clustering costs in proportion to the distinct values and the centroids
// rather than to the values; the centroids are the ones that adding the
// values one at a time in a single library pass makes (tested).
//
// The bound does not hold where q falls at the step between two heavily
// tied values far apart, such as 95% of the totals at 1 and 5% at 1000: a
// centroid there mixes the two, and the estimate lands between them, on a
// value that holds no rank (987 for 94,930 values of 1 and 5,070 of 1000,
// at q = 0.95). In sweeps of such two-value data, in order and shuffled,
// the rank error stays under 4·ε(q) at the default compression, and
// reaches 5 to 7·ε(q) at compression 100. The rule "keep x > v" may then
// keep all the values of the upper step. Counts is exact there.
//
// When every value added is an integer, Quantile rounds its estimate to an
// integer: the true answer is one, and where a centroid mixes two heavily
// tied values, interpolation would land between them, on a value holding
// no rank at all (measured on the integer totals without rounding: 852 ppm
// at 0.9 at every compression up to 1000, 2,600 ppm at 0.95 at 100 and
// 200; with it, the errors in the table above). The rounding helps only
// when the values are integers one apart, as totals of 1-3 point scores
// are: totals that are all multiples of 10 (scores of 10, 20 and 30) land
// between two of them as well, at 2.3 to 2.5·ε(q) at q = 0.98 to 0.99 in
// one measured case. Divide such values by their common step before
// adding them.
//
// The bound also assumes a compression of 50 or more (at MinCompression,
// 10, the error at the extreme quantiles reaches about 5·ε(q) on uniform
// data, as the library's does), and values of a range that float64
// means can average without losing the small ones: on values spread over
// hundreds of orders of magnitude (10^-290 to 10^290), the error reaches
// about 3.4·ε(q).
//
// # Concurrency
//
// Neither sketch is safe for concurrent use: even Quantile and the encoders
// reorganise internal buffers. A lock would be paid on every Add and buy
// nothing in the use they are built for: one sketch per partition, filled
// by that partition's goroutine, then merged. Merge only reads its
// argument, so one sketch may be merged into several at once, as long as
// nothing writes to it meanwhile.
//
// # Encoding
//
// MarshalBinary, AppendBinary and UnmarshalBinary use a compact binary
// form meant for exchange between processes, as the partial sketches are
// over Kafka. It begins with a kind byte and a version byte; varints are
// those of encoding/binary, floats are little-endian IEEE 754 float64.
// TDigest, version 1:
//
//	'T' 0x01
//	compression  float64
//	flags        byte: bit 0 set if some value is not an integer; 0 if count is 0
//	count        uvarint
//	if count > 0:
//	  min, max   float64 each, exact
//	  k          uvarint: centroids, 1 ≤ k ≤ count, k ≤ 2·⌈compression⌉+16
//	  k times:   mean float64, weight uvarint ≥ 1
//
// Means are non-decreasing within [min, max], and weights sum to count.
// Counts, version 1:
//
//	'C' 0x01
//	d            uvarint: distinct values
//	d times, by increasing value:
//	  value      the first as a zigzag varint, the next ones as the
//	             uvarint value − previous − 1
//	  count      uvarint ≥ 1
//
// Values are within ±MaxExactInt, and counts sum to at most MaxCount.
//
// The encoding is a function of the sketch's state, so the same state
// always gives the same bytes, and it is canonical: anything UnmarshalBinary
// accepts re-encodes to the same bytes. A Counts' state is its values and
// their counts, however they came; a TDigest's also depends on the order
// values came in, and on floating-point rounding in the clustering, so the
// same values added in another order, or on another CPU, may give another
// (equally accurate) encoding.
//
// UnmarshalBinary rejects truncated or trailing bytes, fields out of range
// (a NaN, a count over MaxCount, unsorted values, weights that do not add
// up), non-shortest varints and the other sketch's encoding with an error
// wrapping ErrCorrupt, and unknown versions with ErrVersion, leaving the
// receiver unchanged. It never allocates more than in proportion to the
// input's length, and TDigest centroids are also capped by the compression.
package digest
