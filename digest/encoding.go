package digest

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The first two bytes of every encoding: which sketch, and the layout
// version. A reader rejects versions it does not know rather than guess.
const (
	kindTDigest byte = 'T'
	kindCounts  byte = 'C'
	version1    byte = 1
)

// decoder reads the fields of an encoding, remembering the first problem so
// that callers check once per section. Every read is bounds-checked; varints
// must be in their shortest form so that each value has one encoding and
// decode-then-encode gives back the same bytes.
type decoder struct {
	name string // "t-digest" or "counts", for messages
	b    []byte
	off  int
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("digest: decode %s at byte %d: %s: %w", d.name, d.off, fmt.Sprintf(format, args...), ErrCorrupt)
	}
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

// header checks the kind and version bytes.
func (d *decoder) header(kind byte) {
	if d.remaining() < 2 {
		d.fail("truncated header")
		return
	}
	if k := d.b[d.off]; k != kind {
		d.fail("kind byte %#02x, want %#02x (%q)", k, kind, kind)
		return
	}
	if v := d.b[d.off+1]; v != version1 {
		d.err = fmt.Errorf("digest: decode %s: version %d, want %d: %w", d.name, v, version1, ErrVersion)
		return
	}
	d.off += 2
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.remaining() < 1 {
		d.fail("%s: truncated", what)
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		d.fail("%s: truncated varint", what)
		return 0
	case n < 0:
		d.fail("%s: varint overflows 64 bits", what)
		return 0
	case n != uvarintLen(v):
		d.fail("%s: varint not in shortest form", what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint(what string) int64 {
	u := d.uvarint(what) // zigzag, as binary.PutVarint writes it
	return int64(u>>1) ^ -int64(u&1)
}

// float reads a little-endian float64 and rejects NaN and ±Inf.
func (d *decoder) float(what string) float64 {
	if d.err != nil {
		return 0
	}
	if d.remaining() < 8 {
		d.fail("%s: truncated float", what)
		return 0
	}
	f := math.Float64frombits(binary.LittleEndian.Uint64(d.b[d.off:]))
	if math.IsNaN(f) || math.IsInf(f, 0) {
		d.fail("%s: %v", what, f)
		return 0
	}
	d.off += 8
	return f
}

// end rejects trailing bytes: they would not survive a re-encode.
func (d *decoder) end() {
	if d.err == nil && d.remaining() != 0 {
		d.fail("%d trailing bytes", d.remaining())
	}
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func appendFloat(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}
