package exchange

import (
	"bytes"
	"testing"
	"time"
)

// Records of the exchange topic come from other processes: any key and
// value decode to a partial or an error, never a panic, and what decodes
// encodes back to the same value.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("3"), encode(Partial{Partition: 3, Value: []byte("digest"), Batch: 7, Time: time.Unix(1, 2), Member: "host/1", Kind: "tdigest", Input: "messages", Epoch: 4}))
	f.Add([]byte("3"), encodeV1(Partial{Partition: 3, Value: []byte("digest"), Batch: 7, Time: time.Unix(1, 2), Member: "host/1"}))
	f.Add([]byte("0"), []byte{headerVersion})
	f.Add([]byte("x"), []byte{2, 0})
	f.Fuzz(func(t *testing.T, key, value []byte) {
		p, err := decode(key, value)
		if err != nil {
			return
		}
		if p.Partition < 0 {
			t.Fatalf("partition %d from key %q", p.Partition, key)
		}
		if again := encode(p); !bytes.Equal(again, value) {
			// Varints have one shortest form; a longer one decodes too;
			// a value of version 1 encodes in the current one.
			q, err := decode(key, again)
			if err != nil || q.Batch != p.Batch || !q.Time.Equal(p.Time) || q.Member != p.Member || q.Kind != p.Kind || q.Input != p.Input || q.Epoch != p.Epoch || !bytes.Equal(q.Value, p.Value) {
				t.Fatalf("%+v encodes to %x, which decodes to %+v, %v", p, again, q, err)
			}
		}
	})
}
