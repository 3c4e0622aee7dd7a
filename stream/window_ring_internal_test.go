package stream

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzWindowRestore feeds arbitrary bytes as a window's entries in a
// Store: the decoders fail cleanly or give values that encode and decode
// back to themselves, and a restore never panics.
func FuzzWindowRestore(f *testing.F) {
	ints := CodecFor[int64]()
	pairs := Codec[Pair[string, int]](pairCodec[string, int]{k: CodecFor[string](), v: CodecFor[int]()})
	for _, vals := range [][]int64{nil, {0}, {1, -5, 1 << 40}} {
		b, err := encodeValues(ints, vals)
		require.NoError(f, err)
		f.Add(b, windowBatch(3))
	}
	b, err := encodeValues(pairs, []Pair[string, int]{{"a", 1}, {"", -2}})
	require.NoError(f, err)
	f.Add(b, windowBatch(-1))
	f.Add([]byte{4, 8}, []byte{windowPosKey})
	f.Fuzz(func(t *testing.T, value, key []byte) {
		if vals, err := decodeValues(ints, value); err == nil {
			b, err := encodeValues(ints, vals)
			require.NoError(t, err)
			again, err := decodeValues(ints, b)
			require.NoError(t, err)
			require.Equal(t, vals, again)
		}
		if vals, err := decodeValues(pairs, value); err == nil {
			b, err := encodeValues(pairs, vals)
			require.NoError(t, err)
			again, err := decodeValues(pairs, b)
			require.NoError(t, err)
			require.Equal(t, vals, again)
		}
		p := NewPipeline()
		w := &windowRing[int64]{p: p, nameOf: func() string { return "w" }, length: 3, codec: ints, durable: true, shift: map[int32]int64{}}
		pos := append(append([]byte{}, value...), 1)
		for _, e := range []Entry{{Op: "w", Key: key, Value: value}, {Op: "w", Key: []byte{windowPosKey}, Value: pos}} {
			if w.restore(e, 1, 1) != nil {
				return
			}
		}
		if w.restored() == nil {
			_, err := w.changes(nil, 1)
			require.NoError(t, err)
		}
	})
}

// A batch's values encoded for the Store are kept until the checkpoint
// that writes them, beside the values: the encoding holds no room beyond
// its bytes (a small value's length takes one byte, not the ten a varint
// may take), and decodes back to the values.
func TestWindowEncodingHoldsNoSpareRoom(t *testing.T) {
	ints := CodecFor[int64]()
	for _, n := range []int{0, 1, 1000} {
		vals := make([]int64, n)
		for i := range vals {
			vals[i] = int64(i%200) << (i % 50)
		}
		b, err := encodeValues(ints, vals)
		require.NoError(t, err)
		assert.Equal(t, len(b), cap(b), "%d values", n)
		back, err := decodeValues(ints, b)
		require.NoError(t, err)
		assert.Equal(t, vals, back)
	}
}
