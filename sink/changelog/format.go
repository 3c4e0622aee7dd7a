package changelog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/sluicehq/sluice/internal/wire"
	"github.com/sluicehq/sluice/stream"
)

// Version is the format version this package writes and reads. It is the
// first byte of every record key and value it writes.
const Version = 1

// The second byte of a key says what the record is.
const (
	kindEntry  byte = 0
	kindMarker byte = 1
)

// The kinds of marker.
const (
	markerCheckpoint byte = 0
	markerRepair     byte = 1
)

// markerKey is the key of every marker. It cannot collide with an entry
// key, whose second byte is kindEntry.
var markerKey = []byte{Version, kindMarker}

// ErrCorrupt is returned (wrapped, with the record's topic, partition and
// offset) by Restore when a record of the changelog does not decode.
var ErrCorrupt = errors.New("changelog: corrupt record")

// ErrVersion is returned (wrapped, with the record's topic, partition and
// offset) by Restore when a record has a format version this package does
// not read.
var ErrVersion = errors.New("changelog: unsupported format version")

// appendEntryKey appends the record key of a state key of operator op.
func appendEntryKey(dst []byte, op string, key []byte) []byte {
	dst = append(dst, Version, kindEntry)
	dst = binary.AppendUvarint(dst, uint64(len(op)))
	dst = append(dst, op...)
	return append(dst, key...)
}

// decodeKey decodes a record key: an entry's operator and state key, or
// marker true. The key aliases b.
func decodeKey(b []byte) (op string, key []byte, marker bool, err error) {
	if len(b) < 2 {
		return "", nil, false, fmt.Errorf("%w: key of %d bytes", ErrCorrupt, len(b))
	}
	if b[0] != Version {
		return "", nil, false, fmt.Errorf("%w %d in the key (this program reads %d)", ErrVersion, b[0], Version)
	}
	switch b[1] {
	case kindMarker:
		if len(b) != len(markerKey) {
			return "", nil, false, fmt.Errorf("%w: marker key of %d bytes", ErrCorrupt, len(b))
		}
		return "", nil, true, nil
	case kindEntry:
	default:
		return "", nil, false, fmt.Errorf("%w: key of kind %d", ErrCorrupt, b[1])
	}
	n, w := binary.Uvarint(b[2:])
	if w <= 0 || n > uint64(len(b)-2-w) {
		return "", nil, false, fmt.Errorf("%w: bad operator length in the key", ErrCorrupt)
	}
	rest := b[2+w:]
	return string(rest[:n]), rest[n:], false, nil
}

// appendEntryValue appends the record value of a state value. A deleted
// key is a tombstone (a null value), not this.
func appendEntryValue(dst, value []byte) []byte {
	return append(append(dst, Version), value...)
}

// decodeEntryValue returns the state value of an entry record, aliasing b,
// or deleted for a tombstone.
func decodeEntryValue(b []byte) (value []byte, deleted bool, err error) {
	if len(b) == 0 { // null; an empty value is never written
		return nil, true, nil
	}
	if b[0] != Version {
		return nil, false, fmt.Errorf("%w %d in the value (this program reads %d)", ErrVersion, b[0], Version)
	}
	return b[1:], false, nil
}

// marker is the value of a marker record: the changes of its partition
// before it are one finished checkpoint (or repair).
type marker struct {
	repair bool
	// seq numbers markers: in each partition, every marker has a higher
	// seq than the ones before it; the markers of one checkpoint share it.
	seq   uint64
	batch int64 // the batch ID of the checkpoint (0 for a repair)
	// prev is the offset of the partition's previous valid marker, or -1:
	// where to roll back to if this checkpoint turns out unfinished.
	prev int64
	// parts are the partitions this checkpoint writes a marker to.
	parts []int32
	// revokes are the checkpoints a repair found unfinished.
	revokes []uint64
	// offsets are the input offsets the state reflects.
	offsets []stream.Offset
}

func appendMarker(dst []byte, m *marker) []byte {
	kind := markerCheckpoint
	if m.repair {
		kind = markerRepair
	}
	dst = append(dst, Version, kind)
	dst = binary.AppendUvarint(dst, m.seq)
	dst = binary.AppendVarint(dst, m.batch)
	dst = binary.AppendVarint(dst, m.prev)
	dst = binary.AppendUvarint(dst, uint64(len(m.parts)))
	for _, p := range m.parts {
		dst = binary.AppendUvarint(dst, uint64(p))
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.revokes)))
	for _, s := range m.revokes {
		dst = binary.AppendUvarint(dst, s)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.offsets)))
	for _, o := range m.offsets {
		dst = binary.AppendUvarint(dst, uint64(len(o.Source)))
		dst = append(dst, o.Source...)
		dst = binary.AppendUvarint(dst, uint64(o.Partition))
		dst = binary.AppendVarint(dst, o.Next)
	}
	return dst
}

// decodeMarker decodes the value of a marker record.
func decodeMarker(b []byte) (marker, error) {
	var m marker
	if len(b) < 2 {
		return m, fmt.Errorf("%w: marker of %d bytes", ErrCorrupt, len(b))
	}
	if b[0] != Version {
		return m, fmt.Errorf("%w %d in a marker (this program reads %d)", ErrVersion, b[0], Version)
	}
	switch b[1] {
	case markerCheckpoint:
	case markerRepair:
		m.repair = true
	default:
		return m, fmt.Errorf("%w: marker of kind %d", ErrCorrupt, b[1])
	}
	r := &reader{wire.Reader{B: b[2:], Corrupt: func(what string) error {
		return fmt.Errorf("%w: bad %s in a marker", ErrCorrupt, what)
	}}}
	m.seq = r.Uvarint()
	m.batch = r.Varint()
	m.prev = r.Varint()
	n := r.Count(1)
	m.parts = make([]int32, 0, n)
	for range n {
		m.parts = append(m.parts, r.partition())
	}
	n = r.Count(1)
	for range n {
		m.revokes = append(m.revokes, r.Uvarint())
	}
	n = r.Count(3)
	m.offsets = make([]stream.Offset, 0, n)
	for range n {
		o := stream.Offset{Source: string(r.Bytes()), Partition: r.partition(), Next: r.Varint()}
		if o.Next < 0 {
			r.Fail("offset")
		}
		m.offsets = append(m.offsets, o)
	}
	switch {
	case r.Err() != nil:
		return marker{}, r.Err()
	case len(r.B) > 0:
		return marker{}, fmt.Errorf("%w: %d bytes after the end of a marker", ErrCorrupt, len(r.B))
	case m.seq == 0 || m.prev < -1:
		return marker{}, fmt.Errorf("%w: marker with sequence %d and previous marker at %d", ErrCorrupt, m.seq, m.prev)
	}
	return m, nil
}

// reader decodes a marker.
type reader struct{ wire.Reader }

func (r *reader) partition() int32 {
	v := r.Uvarint()
	if v > math.MaxInt32 {
		r.Fail("partition")
		return 0
	}
	return int32(v)
}
