// Package checkpoint keeps the state of a stream.Pipeline in a local
// directory, so that a pipeline restarted after a crash resumes with the
// state and the input offsets of its last checkpoint.
//
// # Layout
//
// The directory holds a chain of files: a snapshot (the whole state) and
// the deltas written after it (what each checkpoint changed), and a
// MANIFEST naming the chain. A checkpoint writes its delta to a temporary
// file, syncs it, renames it into place and syncs the directory; then it
// does the same for a new MANIFEST. The rename of MANIFEST is the commit
// point: a crash at any moment leaves the previous checkpoint or the new
// one, never a mix.
//
// A checkpoint merges the chain into a new snapshot when, once its delta
// is committed, the deltas' bytes pass three times the snapshot's (or 3
// MiB, while the snapshot is under 1 MiB), or the chain passes 256 files.
// So restoring reads about four times the state at most, in 256 files at
// most; a state whose keys all change every batch is rewritten whole only
// every third checkpoint or so, and a state whose deltas are small,
// whatever its size, every 256th.
//
// # Format
//
// Every file starts with the magic "SLCK", a format version (1) and a
// kind byte, and ends with a CRC-32C of all bytes before it. A file with a
// wrong checksum, an unknown version or a bad structure is an error naming
// the file: the state is never silently reset. Remove the directory (or
// call Discard) to start from nothing on purpose.
//
// # One pipeline a directory
//
// Open locks the directory (a LOCK file, flock'd, on Unix) until Close: a
// second Open of it, by this process or another, fails with ErrInUse
// instead of writing over the first one's files. The kernel releases the
// lock of a process that dies, so a restarted process opens the directory
// at once. Elsewhere than on Unix, and on Solaris and AIX (no flock), there
// is no lock.
//
// Numbers are varints; byte strings are a uvarint length and the bytes.
//
//	offsets: count, then per offset: source, partition, next
//	entries: count, then per entry: operator, partition, flags (1: deleted), key, value
//	snapshot ('S') and delta ('D'): batch, offsets, entries
//	manifest ('M'): sequence, file count, file names
package checkpoint

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/progress"
	"github.com/sluicehq/sluice/internal/wire"
	"github.com/sluicehq/sluice/stream"
)

// Version is the format version this package writes and reads.
const Version = 1

const (
	magic        = "SLCK"
	manifestName = "MANIFEST"
	lockName     = "LOCK"
	kindSnapshot = 'S'
	kindDelta    = 'D'
	kindManifest = 'M'
	// compactRatio is how many times the snapshot's size (or
	// compactFloor, if more) the deltas may grow to before they are
	// merged into a new snapshot: restoring reads at most about
	// compactRatio+1 times the state, and a state whose keys all change
	// every batch is rewritten whole every compactRatio checkpoints or so.
	compactRatio = 3
	compactFloor = 1 << 20
	// maxChain is how many files (the snapshot and the deltas) the chain
	// may hold: one more, and they are merged, however small the deltas.
	// Every file costs a restore an open and a read, and every checkpoint
	// rewrites the MANIFEST, which names them all in about 24 bytes each:
	// at 256, a restore opens 256 files at most, and the MANIFEST stays
	// about 6 KiB, two pages. Without it, deltas of 200 bytes would pile
	// up to over 15,000 files before compactRatio merged them. The merge
	// this bound adds rewrites the state at most every 256th checkpoint,
	// against every third that compactRatio allows.
	maxChain = 256
	// maxFile bounds what is read of one file, so that a hostile length
	// cannot make a read allocate without bound.
	maxFile = 1 << 34
)

// ErrCorrupt is returned (wrapped, with the file's path) by Restore and
// Open when a checkpoint file fails its checksum or its structure is bad.
var ErrCorrupt = errors.New("checkpoint: corrupt")

// ErrInUse is returned (wrapped, with the directory) by Open and Discard
// when another Dir holds the directory.
var ErrInUse = errors.New("checkpoint: directory in use")

// ErrClosed is returned by a Dir's methods after Close.
var ErrClosed = errors.New("checkpoint: closed")

// ErrVersion is returned (wrapped) when a file has a format version this
// package does not read.
var ErrVersion = errors.New("checkpoint: unsupported format version")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Dir is a stream.Store in a local directory, which it holds from Open
// to Close. It is safe for concurrent use, by one pipeline at a time.
type Dir struct {
	path   string
	logger *slog.Logger
	reset  bool
	lock   *os.File // nil once closed, or where there is no lock

	mu        sync.Mutex
	closed    bool
	seq       uint64   // sequence of the last file written
	chain     []string // snapshot first, then deltas
	snapBytes int64
	deltaSize int64
}

var _ stream.Store = (*Dir)(nil)

// Option configures a Dir.
type Option func(*Dir)

// Logger sets where the directory logs compactions (default: discard).
func Logger(l *slog.Logger) Option { return func(d *Dir) { d.logger = l } }

// Reset makes Open discard every checkpoint in the directory, once it
// holds it, to start from an empty state on purpose. Unlike Discard
// before Open, no other Dir can open the directory in between.
func Reset() Option { return func(d *Dir) { d.reset = true } }

// Open returns the store in dir, creating the directory if needed, and
// locks it until Close. It fails with ErrInUse if another Dir holds it.
// It reads the MANIFEST, and fails if it is corrupt or of another
// version, or missing beside checkpoint files that only a MANIFEST could
// have committed. It removes the files a crash left behind: temporary
// files, and checkpoint files the MANIFEST does not name.
func Open(dir string, opts ...Option) (*Dir, error) {
	d := &Dir{path: dir, logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(d)
	}
	if err := makeDir(dir); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	d.lock = lock
	if err := d.open(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Close releases the directory. The Dir's methods fail after it.
func (d *Dir) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if d.lock == nil {
		return nil
	}
	err := d.lock.Close() // and with it the lock
	d.lock = nil
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// open reads the directory d holds, after removing its checkpoints if
// d.reset.
func (d *Dir) open() error {
	dir := d.path
	if d.reset {
		if err := discard(dir); err != nil {
			return err
		}
	}
	files, err := checkpointFiles(dir)
	if err != nil {
		return err
	}
	body, err := readFile(filepath.Join(dir, manifestName), kindManifest)
	if errors.Is(err, fs.ErrNotExist) {
		// Only the first checkpoint's delta is written before a
		// MANIFEST exists: any other file needs one.
		for _, name := range files {
			if name != firstDelta && name != firstDelta+".tmp" && name != manifestName+".tmp" {
				return fmt.Errorf("%w: %s is missing, yet %s holds %s: restore the MANIFEST, or discard the checkpoint (Discard)",
					ErrCorrupt, filepath.Join(dir, manifestName), dir, name)
			}
		}
		d.removeAllBut(files, nil)
		return nil
	}
	if err != nil {
		return err
	}
	r := newReader(body, filepath.Join(dir, manifestName))
	d.seq = r.Uvarint()
	n := r.Count(1)
	for range n {
		d.chain = append(d.chain, string(r.Bytes()))
	}
	if err := r.end(); err != nil {
		return err
	}
	for i, name := range d.chain {
		if name != filepath.Base(name) || !strings.HasSuffix(name, ".ckpt") {
			return fmt.Errorf("%w: %s names file %q", ErrCorrupt, r.name, name)
		}
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("checkpoint: %s names a file that is missing: %w", r.name, err)
		}
		if i == 0 {
			d.snapBytes = fi.Size()
		} else {
			d.deltaSize += fi.Size()
		}
	}
	d.removeAllBut(files, d.chain)
	return nil
}

// firstDelta is the name of the first checkpoint's delta.
const firstDelta = "delta-000000000001.ckpt"

// checkpointFiles returns the names of the checkpoint files in dir, and of
// their temporary files.
func checkpointFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".ckpt") || strings.HasSuffix(n, ".ckpt.tmp") || n == manifestName+".tmp" {
			names = append(names, n)
		}
	}
	return names, nil
}

// removeAllBut removes the files of names not in keep: what a crash left
// behind, none of it committed or still named by the MANIFEST.
func (d *Dir) removeAllBut(names, keep []string) {
	kept := make(map[string]bool, len(keep))
	for _, n := range keep {
		kept[n] = true
	}
	for _, n := range names {
		if kept[n] {
			continue
		}
		if err := os.Remove(filepath.Join(d.path, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.logger.Warn("checkpoint: cannot remove a file left behind", "file", n, "err", err)
		}
	}
}

// Discard removes every checkpoint file in dir, to start from an empty
// state on purpose. It fails with ErrInUse while a Dir holds dir. Open
// with Reset does the same with the directory held.
func Discard(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	if lock != nil {
		defer lock.Close()
	}
	return discard(dir)
}

// discard removes every checkpoint file in dir, which exists.
func discard(dir string) error {
	names, err := checkpointFiles(dir)
	if err != nil {
		return err
	}
	// The MANIFEST first, its removal made durable before the others: a
	// Discard cut short, by a crash or a power loss, leaves no MANIFEST
	// naming files that are gone.
	for i, n := range append([]string{manifestName}, names...) {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("checkpoint: %w", err)
		}
		if i == 0 {
			if err := syncDir(dir); err != nil {
				return fmt.Errorf("checkpoint: %w", err)
			}
		}
	}
	return nil
}

// Path returns the directory.
func (d *Dir) Path() string { return d.path }

// Restore implements stream.Store: it reads the chain in order and calls
// put for the last value of every key of the given partitions.
func (d *Dir) Restore(ctx context.Context, partitions []int32, put func(stream.Entry) error) ([]stream.Offset, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	state, offsets, err := d.load(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range state {
		if partitions != nil && !slices.Contains(partitions, e.Partition) {
			continue
		}
		if err := put(e); err != nil {
			return nil, err
		}
	}
	return offsets, nil
}

// load merges the chain into one entry per key, in a stable order.
func (d *Dir) load(ctx context.Context) ([]stream.Entry, []stream.Offset, error) {
	merged := map[string]stream.Entry{}
	var order []string
	var offsets []stream.Offset
	prog := newLoadProgress(d)
	for _, name := range d.chain {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		path := filepath.Join(d.path, name)
		kind := byte(kindDelta)
		if strings.HasPrefix(name, "snap-") {
			kind = kindSnapshot
		}
		body, err := readFile(path, kind)
		if err != nil {
			return nil, nil, err
		}
		r := newReader(body, path)
		r.Varint() // batch
		offsets = mergeOffsets(offsets, r.offsets())
		n := r.Count(4)
		for i := range n {
			e := r.entry()
			if r.Err() != nil {
				break
			}
			if i%65536 == 65535 {
				prog.log(len(body), float64(i)/float64(n), len(merged))
			}
			k := entryKey(e)
			if _, ok := merged[k]; !ok {
				order = append(order, k)
			}
			merged[k] = e
		}
		if err := r.end(); err != nil {
			return nil, nil, err
		}
		prog.fileDone(len(body))
	}
	out := make([]stream.Entry, 0, len(merged))
	for _, k := range order {
		if e := merged[k]; !e.Deleted {
			out = append(out, e)
		}
	}
	return out, offsets, nil
}

// loadProgressEvery is how often a long load logs its progress (a
// variable for the tests).
var loadProgressEvery = time.Second

// loadProgress logs how far a load of the chain is: the share of its
// bytes read, the entries so far, and an ETA.
type loadProgress struct {
	d           *Dir
	total, done int64 // bytes of the chain, and of the files read
	start, last time.Time
}

func newLoadProgress(d *Dir) *loadProgress {
	p := &loadProgress{d: d, start: time.Now()}
	p.last = p.start
	for _, name := range d.chain {
		if fi, err := os.Stat(filepath.Join(d.path, name)); err == nil {
			p.total += fi.Size()
		}
	}
	return p
}

// log logs the progress when it is time, partway (share) through a file
// whose body is size bytes.
func (p *loadProgress) log(size int, share float64, entries int) {
	now := time.Now()
	if now.Sub(p.last) < loadProgressEvery || p.total <= 0 {
		return
	}
	p.last = now
	done := min((float64(p.done)+share*float64(size))/float64(p.total), 0.999)
	elapsed := now.Sub(p.start)
	attrs := []any{"dir", p.d.path, "entries", entries, "elapsed", elapsed.Round(time.Millisecond)}
	p.d.logger.Info("reading checkpoint", append(attrs, progress.Attrs(done, elapsed)...)...)
}

func (p *loadProgress) fileDone(size int) { p.done += int64(size) }

func entryKey(e stream.Entry) string {
	return e.Op + "\x00" + strconv.FormatInt(int64(e.Partition), 10) + "\x00" + string(e.Key)
}

// Checkpoint implements stream.Store: it writes c as a delta and commits
// it in the MANIFEST, then compacts the chain when its deltas outgrow its
// snapshot or it passes maxChain files.
func (d *Dir) Checkpoint(ctx context.Context, c *stream.Changes) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	body := appendBody(nil, c.Batch.ID, c.Offsets, c.Entries)
	d.seq++
	name := fmt.Sprintf("delta-%012d.ckpt", d.seq)
	size, err := d.writeFile(name, kindDelta, body)
	if err != nil {
		return err
	}
	// The append may fill d.chain's spare capacity, which only a commit
	// makes part of the chain: no copy of the chain per checkpoint.
	if err := d.commit(append(d.chain, name), nil); err != nil {
		return err
	}
	d.deltaSize += size
	if d.deltaSize > compactRatio*max(d.snapBytes, compactFloor) || len(d.chain) > maxChain {
		// The checkpoint is committed: a compaction that fails leaves
		// the chain as it was, to be compacted by a later checkpoint.
		if err := d.compact(ctx, c.Batch.ID); err != nil {
			d.logger.Warn("checkpoint: compaction failed; the chain stays as it is", "dir", d.path, "err", err)
		}
	}
	return nil
}

// compact merges the chain into a new snapshot.
func (d *Dir) compact(ctx context.Context, batch int64) error {
	state, offsets, err := d.load(ctx)
	if err != nil {
		return err
	}
	d.seq++
	name := fmt.Sprintf("snap-%012d.ckpt", d.seq)
	size, err := d.writeFile(name, kindSnapshot, appendBody(nil, batch, offsets, state))
	if err != nil {
		return err
	}
	if err := d.commit([]string{name}, d.chain); err != nil {
		return err
	}
	d.logger.Info("checkpoint compacted", "dir", d.path, "entries", len(state), "bytes", size)
	d.snapBytes, d.deltaSize = size, 0
	return nil
}

// commit makes chain the current one, then removes drop: files of the
// current chain that chain no longer names. The callers know which they
// are; finding them by comparing the two chains took each checkpoint a
// time in the square of the chain's length.
func (d *Dir) commit(chain, drop []string) error {
	var body []byte
	body = binary.AppendUvarint(body, d.seq)
	body = binary.AppendUvarint(body, uint64(len(chain)))
	for _, n := range chain {
		body = appendBytes(body, []byte(n))
	}
	if _, err := d.writeFile(manifestName, kindManifest, body); err != nil {
		return err
	}
	d.chain = chain
	for _, n := range drop {
		if err := os.Remove(filepath.Join(d.path, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.logger.Warn("checkpoint: cannot remove an old file", "err", err)
		}
	}
	return nil
}

// writeFile writes a framed file atomically: temporary file, sync, rename,
// sync of the directory.
func (d *Dir) writeFile(name string, kind byte, body []byte) (int64, error) {
	data := make([]byte, 0, len(body)+10)
	data = append(data, magic...)
	data = append(data, Version, kind)
	data = append(data, body...)
	data = binary.LittleEndian.AppendUint32(data, crc32.Checksum(data, castagnoli))
	path := filepath.Join(d.path, name)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, fmt.Errorf("checkpoint: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(d.path)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("checkpoint: write %s: %w", path, err)
	}
	return int64(len(data)), nil
}

// makeDir makes dir and its missing parents, and syncs the directories
// they were made in, so that a crash does not lose the directory with the
// checkpoints it will hold.
func makeDir(dir string) error {
	var made []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) || d == filepath.Dir(d) {
			break
		}
		made = append(made, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range made {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// readFile reads a framed file, checks it, and returns its body.
func readFile(path string, kind byte) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if fi.Size() > maxFile {
		return nil, fmt.Errorf("%w: %s is %d bytes", ErrCorrupt, path, fi.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return checkFrame(path, data, kind)
}

func checkFrame(path string, data []byte, kind byte) ([]byte, error) {
	if len(data) < len(magic)+2+4 || !bytes.HasPrefix(data, []byte(magic)) {
		return nil, fmt.Errorf("%w: %s is not a checkpoint file", ErrCorrupt, path)
	}
	if v := data[len(magic)]; v != Version {
		return nil, fmt.Errorf("%w: %s has version %d; this program reads version %d", ErrVersion, path, v, Version)
	}
	end := len(data) - 4
	if crc32.Checksum(data[:end], castagnoli) != binary.LittleEndian.Uint32(data[end:]) {
		return nil, fmt.Errorf("%w: %s fails its checksum", ErrCorrupt, path)
	}
	if k := data[len(magic)+1]; k != kind {
		return nil, fmt.Errorf("%w: %s is of kind %q, want %q", ErrCorrupt, path, k, kind)
	}
	return data[len(magic)+2 : end], nil
}

func appendBody(b []byte, batch int64, offsets []stream.Offset, entries []stream.Entry) []byte {
	b = binary.AppendVarint(b, batch)
	b = binary.AppendUvarint(b, uint64(len(offsets)))
	for _, o := range offsets {
		b = appendBytes(b, []byte(o.Source))
		b = binary.AppendVarint(b, int64(o.Partition))
		b = binary.AppendVarint(b, o.Next)
	}
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = appendBytes(b, []byte(e.Op))
		b = binary.AppendVarint(b, int64(e.Partition))
		flags := byte(0)
		if e.Deleted {
			flags = 1
		}
		b = append(b, flags)
		b = appendBytes(b, e.Key)
		b = appendBytes(b, e.Value)
	}
	return b
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func mergeOffsets(acc, offsets []stream.Offset) []stream.Offset {
	for _, o := range offsets {
		i := slices.IndexFunc(acc, func(x stream.Offset) bool { return x.Source == o.Source && x.Partition == o.Partition })
		if i < 0 {
			acc = append(acc, o)
		} else {
			acc[i].Next = max(acc[i].Next, o.Next)
		}
	}
	return acc
}

// reader decodes a body of the file named name.
type reader struct {
	wire.Reader
	name string
}

func newReader(b []byte, name string) *reader {
	return &reader{Reader: wire.Reader{B: b, Corrupt: func(what string) error {
		return fmt.Errorf("%w: %s: bad %s", ErrCorrupt, name, what)
	}}, name: name}
}

func (r *reader) partition() int32 {
	v := r.Varint()
	if v < -1<<31 || v > 1<<31-1 {
		r.Fail("partition")
	}
	return int32(v)
}

func (r *reader) offsets() []stream.Offset {
	n := r.Count(3)
	out := make([]stream.Offset, 0, n)
	for range n {
		o := stream.Offset{Source: string(r.Bytes()), Partition: r.partition(), Next: r.Varint()}
		if r.Err() != nil {
			return nil
		}
		out = append(out, o)
	}
	return out
}

func (r *reader) entry() stream.Entry {
	e := stream.Entry{Op: string(r.Bytes()), Partition: r.partition()}
	if len(r.B) == 0 {
		r.Fail("entry")
		return e
	}
	flags := r.B[0]
	r.B = r.B[1:]
	if flags > 1 {
		r.Fail("entry flags")
	}
	e.Deleted = flags == 1
	e.Key = r.Bytes()
	e.Value = r.Bytes()
	if e.Deleted {
		e.Value = nil
	}
	return e
}

// end reports the first error, or trailing bytes.
func (r *reader) end() error {
	if r.Err() == nil && len(r.B) > 0 {
		return fmt.Errorf("%w: %s: %d bytes after the end", ErrCorrupt, r.name, len(r.B))
	}
	return r.Err()
}
