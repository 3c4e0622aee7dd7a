package checkpoint_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/checkpoint"
)

// seedFiles returns the files of a small real checkpoint.
func seedFiles(f *testing.F) (manifest, delta []byte) {
	dir := f.TempDir()
	store, err := checkpoint.Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	defer store.Close()
	err = store.Checkpoint(context.Background(), &stream.Changes{
		Batch:   stream.Info{ID: 3},
		Offsets: []stream.Offset{{Source: "messages", Partition: 2, Next: 1042}},
		Entries: []stream.Entry{{Op: "totals", Partition: 2, Key: []byte{4}, Value: []byte{80}}, {Op: "totals", Key: []byte{6}, Deleted: true}},
	})
	if err != nil {
		f.Fatal(err)
	}
	manifest, _ = os.ReadFile(filepath.Join(dir, "MANIFEST"))
	delta, _ = os.ReadFile(filepath.Join(dir, "delta-000000000001.ckpt"))
	return manifest, delta
}

// FuzzOpen feeds arbitrary bytes as a MANIFEST: Open must fail cleanly or
// succeed, never panic.
func FuzzOpen(f *testing.F) {
	manifest, _ := seedFiles(f)
	f.Add(manifest)
	f.Add([]byte("SLCK\x01M"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if store, err := checkpoint.Open(dir); err == nil { // only a panic fails
			store.Close()
		}
	})
}

// FuzzRestore feeds arbitrary bytes as the delta a valid MANIFEST names:
// Restore must fail cleanly or return entries, never panic.
func FuzzRestore(f *testing.F) {
	manifest, delta := seedFiles(f)
	f.Add(delta)
	f.Add(delta[:len(delta)-5])
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), manifest, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "delta-000000000001.ckpt"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		store, err := checkpoint.Open(dir)
		if err != nil {
			return
		}
		defer store.Close()
		store.Restore(context.Background(), nil, func(e stream.Entry) error { //nolint:errcheck // only a panic fails
			if e.Deleted && e.Value != nil {
				t.Fatal("a deleted entry with a value")
			}
			return nil
		})
	})
}
