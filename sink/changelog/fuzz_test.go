package changelog

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/sluicehq/sluice/stream"
)

// FuzzDecodeKey feeds arbitrary bytes as a record key: decodeKey must
// fail cleanly or return what encodes back to an equal key.
func FuzzDecodeKey(f *testing.F) {
	f.Add(appendEntryKey(nil, "totals", []byte{4, 2}))
	f.Add(appendEntryKey(nil, "", nil))
	f.Add(markerKey)
	f.Add([]byte{1, 0, 0x80, 0x80, 0x01})
	f.Add([]byte{2, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		op, key, isMarker, err := decodeKey(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error %v is neither ErrCorrupt nor ErrVersion", err)
			}
			return
		}
		if isMarker {
			if !bytes.Equal(b, markerKey) {
				t.Fatalf("%x decodes as the marker key", b)
			}
			return
		}
		op2, key2, isMarker2, err := decodeKey(appendEntryKey(nil, op, key))
		if err != nil || isMarker2 || op2 != op || !bytes.Equal(key2, key) {
			t.Fatalf("%x: %q %x re-encoded decodes as %q %x (marker %v, %v)", b, op, key, op2, key2, isMarker2, err)
		}
	})
}

// FuzzDecodeMarker feeds arbitrary bytes as a marker's value: decodeMarker
// must fail cleanly or return what encodes back to an equal marker.
func FuzzDecodeMarker(f *testing.F) {
	f.Add(appendMarker(nil, &marker{seq: 3, batch: 7, prev: 41, parts: []int32{0, 2}, offsets: []stream.Offset{{Source: "messages", Partition: 2, Next: 1042}}}))
	f.Add(appendMarker(nil, &marker{repair: true, seq: 9, prev: -1, parts: []int32{1}, revokes: []uint64{8}}))
	f.Add([]byte{1, 0, 1, 0, 1, 0, 0, 0})
	f.Add([]byte{1, 1, 1, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMarker(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error %v is neither ErrCorrupt nor ErrVersion", err)
			}
			return
		}
		m2, err := decodeMarker(appendMarker(nil, &m))
		if err != nil {
			t.Fatalf("%x decodes as %+v, which re-encoded does not decode: %v", b, m, err)
		}
		assert.Equal(t, m, m2)
		for _, p := range m.parts {
			if p < 0 {
				t.Fatalf("negative partition %d", p)
			}
		}
	})
}
