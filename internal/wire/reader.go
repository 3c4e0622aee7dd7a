// Package wire decodes the varint-framed binary formats of the state
// stores (stream/checkpoint and sink/changelog): numbers and
// length-prefixed byte strings from untrusted bytes, with every length
// checked against what is left, so that corrupt or hostile input is an
// error and never a panic or an allocation without bound.
package wire

import "encoding/binary"

// Reader reads from B. The first failure sticks: later reads return zero
// values, and Err returns the error that Corrupt made of it.
type Reader struct {
	B []byte
	// Corrupt makes the error of a failure, given what was bad ("number",
	// "count", "length", or a caller's word).
	Corrupt func(what string) error
	err     error
}

// Fail records a failure, if none was before, and stops the reading.
func (r *Reader) Fail(what string) {
	if r.err == nil {
		r.err = r.Corrupt(what)
	}
	r.B = nil
}

// Err returns the first failure's error, or nil.
func (r *Reader) Err() error { return r.err }

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	v, n := binary.Uvarint(r.B)
	if n <= 0 {
		r.Fail("number")
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Varint reads a signed varint.
func (r *Reader) Varint() int64 {
	v, n := binary.Varint(r.B)
	if n <= 0 {
		r.Fail("number")
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Count reads a count of items of at least min bytes each, and rejects one
// larger than the bytes left could hold.
func (r *Reader) Count(min int) int {
	n := r.Uvarint()
	if n > uint64(len(r.B)/min) {
		r.Fail("count")
		return 0
	}
	return int(n)
}

// Bytes reads a length-prefixed byte string. It shares memory with B.
func (r *Reader) Bytes() []byte {
	n := r.Uvarint()
	if n > uint64(len(r.B)) {
		r.Fail("length")
		return nil
	}
	s := r.B[:n:n]
	r.B = r.B[n:]
	return s
}
