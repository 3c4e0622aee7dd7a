package stream

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/bits"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unsafe"
)

// WindowOption configures Window and ReduceByKeyAndWindow.
type WindowOption interface{ applyWindow(*windowConfig) }

type windowConfig struct {
	codec      any // Codec[T] of Window, set by WindowCodec
	keyCodec   any // Codec[K] of ReduceByKeyAndWindow, set by WindowCodecs
	valueCodec any // Codec[V]
}

type windowOptionFunc func(*windowConfig)

func (f windowOptionFunc) applyWindow(c *windowConfig) { f(c) }

// WindowCodec sets how Window encodes its values for the pipeline's
// Store. Without it, integer, float64 and string types use a compact
// binary form and other types JSON (see CodecFor). With a Store, Run fails
// at start when JSON would not give back the values it stores: a struct
// with an unexported field or a field tagged json:"-", or an interface
// (types with an UnmarshalJSON method are trusted). Give such types a
// codec. The window encodes the partitions of a batch in parallel: the
// codec is called from several goroutines at once, and must be safe for
// that.
func WindowCodec[T any](c Codec[T]) WindowOption {
	return windowOptionFunc(func(w *windowConfig) { w.codec = c })
}

// WindowCodecs sets how ReduceByKeyAndWindow encodes the keys and values
// of the per-batch results it keeps in the pipeline's Store. The defaults,
// and what Run refuses, are those of Codecs for UpdateStateByKey. As for
// WindowCodec, the codecs are called from several goroutines at once.
func WindowCodecs[K, V any](key Codec[K], value Codec[V]) WindowOption {
	return windowOptionFunc(func(w *windowConfig) { w.keyCodec, w.valueCodec = key, value })
}

// windowRing holds the batches a window needs for its next slides: the
// last length-1 that entered, their partitions' values copied (the next
// batch to enter makes length). With a Store, it keeps them there too, as
// entries of the window's operator name: a batch's partition is encoded
// once, as it enters, written by the next checkpoint, and deleted by the
// checkpoint after it leaves; and each partition's position, the count
// of batches that entered, so that a restore puts every batch back where
// it was, and the slide goes on in step after a restart. An empty
// partition is not kept (an Assigner source's every partition enters
// every batch, idle or not): a batch missing from the Store is empty.
type windowRing[T any] struct {
	p         *Pipeline
	nameOf    func() string // of the operator's output, which keys its entries
	length    int
	hashParts int // of the windowed stream (see Stream.hashParts)
	placed    int // of the windowed stream (see Stream.placed)
	// bucket returns the partition of n that PartitionByKey gives v, for
	// values that are Pairs; nil for others.
	bucket  func(v T, n int) int
	codec   Codec[T]
	durable bool

	slots []windowSlot[T] // oldest first, of consecutive seqs up to seen
	seen  int64           // batches that entered: the slide's phase
	// shift is what the keys of a partition's batches in the Store add to
	// their seq in the ring, for every partition the ring holds with a
	// Store: 0, but for a partition restored from a count other than this
	// ring's (a rebalance, from another process). Keys then go on from
	// where they were, and a restored batch keeps its key.
	shift map[int32]int64
	gone  []Entry // deletes of batches that left, for the next checkpoint
	// restoring are the entries of a restore in progress, by partition.
	restoring map[int32]*windowRestore[T]
	// rewrites says the next checkpoint writes keys it also deletes (a
	// restore moved the batches of every partition), and must write them
	// only.
	rewrites bool
	// onRestore is told of each partition a restore puts in the ring,
	// oldest first, or nil.
	onRestore func(p *Partition[T]) error
	// onDrop is told of the partitions dropped, or nil.
	onDrop func(lost []int32)
}

// windowSlot is one batch in a window.
type windowSlot[T any] struct {
	seq   int64
	batch Batch[T]
	// enc are, by partition of batch, the values encoded for the Store
	// and not yet written by a checkpoint; nil once written, or restored,
	// and for an empty partition, which is not stored.
	enc [][]byte
}

// windowRestore is what a restore gave of one partition of a window.
type windowRestore[T any] struct {
	pos         int64 // the ring's seen as of the checkpoint, plus the shift
	parallelism int   // the pipeline's, as of the checkpoint
	hasPos      bool
	batches     map[int64][]T // by key
}

// Keys of a window's entries: the partition's position, or a batch.
const (
	windowPosKey   = 0
	windowBatchKey = 1
)

func windowBatch(k int64) []byte { return binary.AppendVarint([]byte{windowBatchKey}, k) }

func newWindowRing[T any](s *Stream[T], length int, codec Codec[T]) *windowRing[T] {
	w := &windowRing[T]{p: s.p, length: length, hashParts: s.hashParts, placed: s.placed, codec: codec}
	if b, ok := any(*new(T)).(bucketer); ok && isPair(reflect.TypeFor[T]()) {
		w.bucket = b.bucketFunc().(func(T, int) int)
	}
	return w
}

// bucketer is a Pair, placed by a hash of its key as by PartitionByKey.
type bucketer interface {
	// bucketFunc returns a func(Pair[K, V], n int) int that returns the
	// partition of n of a pair: one hasher for all, and no pair boxed.
	bucketFunc() any
}

func (Pair[K, V]) bucketFunc() any {
	hash := hasher[K]()
	return func(kv Pair[K, V], n int) int { return bucketOf(hash(kv.Key), n) }
}

// isPair reports whether t is a Pair, not a type that embeds one.
func isPair(t reflect.Type) bool {
	pair := reflect.TypeFor[Pair[int, int]]()
	return t.PkgPath() == pair.PkgPath() && strings.HasPrefix(t.Name(), "Pair[")
}

// enter adds a batch to the ring, encoding its partitions for the Store.
func (w *windowRing[T]) enter(bc *batchCtx, in *Batch[T]) error {
	w.seen++
	sl := windowSlot[T]{seq: w.seen, batch: copyBatch(in)}
	if w.durable {
		sl.enc = make([][]byte, len(in.Partitions))
		err := bc.parallel(len(in.Partitions), func(i int) error {
			p := &in.Partitions[i]
			if len(p.Values) == 0 {
				return nil // not stored
			}
			var b []byte
			err := recovered(func() (err error) {
				b, err = encodeValues(w.codec, p.Values)
				return err
			})
			if err != nil { // of the codec, the user's, a panic included
				return &PartitionError{Partition: p.ID, Err: fmt.Errorf("encode the window's values: %w", err)}
			}
			sl.enc[i] = b
			return nil
		})
		if err != nil {
			return err
		}
		for _, p := range in.Partitions {
			if _, ok := w.shift[p.ID]; !ok {
				w.shift[p.ID] = 0
			}
		}
	}
	w.slots = append(w.slots, sl)
	return nil
}

// trim removes the oldest batch once the ring holds length, which no later
// window holds, and returns its partitions (nil if none left).
func (w *windowRing[T]) trim() []Partition[T] {
	if len(w.slots) < w.length {
		return nil
	}
	old := &w.slots[0]
	left := old.batch.Partitions
	if w.durable {
		for i, p := range old.batch.Partitions {
			if old.enc[i] == nil && len(p.Values) > 0 { // written: deleted by the next checkpoint
				w.gone = append(w.gone, Entry{Op: w.name(), Partition: p.ID, Key: windowBatch(old.seq + w.shift[p.ID]), Deleted: true})
			}
		}
	}
	w.slots[0] = windowSlot[T]{}
	w.slots = slices.Delete(w.slots, 0, 1)
	return left
}

// slot returns the slot of seq, which is at most seen, adding empty ones
// before the oldest as needed.
func (w *windowRing[T]) slot(seq int64) *windowSlot[T] {
	first := w.seen + 1 - int64(len(w.slots))
	if seq < first {
		pre := make([]windowSlot[T], first-seq)
		for i := range pre {
			pre[i].seq = seq + int64(i)
		}
		w.slots = append(pre, w.slots...)
		first = seq
	}
	return &w.slots[seq-first]
}

func (w *windowRing[T]) name() string { return w.nameOf() }

// dropPartitions drops the batches' partitions of ids: an Assigner source
// lost them, and their new owner restores them from the Store.
func (w *windowRing[T]) dropPartitions(ids []int32) error {
	for i := range w.slots {
		sl := &w.slots[i]
		n := 0
		for j, p := range sl.batch.Partitions {
			if slices.Contains(ids, p.ID) {
				continue
			}
			sl.batch.Partitions[n] = p
			if sl.enc != nil {
				sl.enc[n] = sl.enc[j]
			}
			n++
		}
		clear(sl.batch.Partitions[n:])
		sl.batch.Partitions = sl.batch.Partitions[:n]
		if sl.enc != nil {
			clear(sl.enc[n:])
			sl.enc = sl.enc[:n]
		}
	}
	// What the Store holds of them is their new owner's now.
	w.gone = slices.DeleteFunc(w.gone, func(e Entry) bool { return slices.Contains(ids, e.Partition) })
	for _, id := range ids {
		delete(w.shift, id)
		delete(w.restoring, id)
	}
	if w.onDrop != nil {
		w.onDrop(ids)
	}
	return nil
}

// setDurable makes the ring keep its batches in the Store, once it is
// sure that the default JSON codec, if it is used, gives back the values
// (of ReduceByKeyAndWindow's pairs: their keys and values).
func (w *windowRing[T]) setDurable() error {
	err := jsonKeeps(w.codec, false, "values", "WindowCodec")
	if pc, ok := w.codec.(interface{ lossy() error }); ok {
		err = pc.lossy()
	}
	if err != nil {
		return fmt.Errorf("stream: %s: %w", w.name(), err)
	}
	w.durable = true
	w.shift = map[int32]int64{}
	return nil
}

// size counts the values of the batches the ring holds.
func (w *windowRing[T]) size() StateStats {
	st := StateStats{Name: w.name()}
	for _, sl := range w.slots {
		n := sl.batch.Len()
		st.Keys += n
		st.Bytes += int64(n) * int64(unsafe.Sizeof(*new(T)))
	}
	return st
}

// hashed is false: a window of partitions that are not the source's is
// refused under an Assigner source by its own check (movedWindows).
func (w *windowRing[T]) hashed() bool { return false }

// changes appends the deletes of the batches that left since the last
// checkpoint, the batches that entered, and the position of every
// partition.
func (w *windowRing[T]) changes(dst []Entry, _ int64) ([]Entry, error) {
	if !w.durable {
		return dst, nil
	}
	name := w.name()
	if !w.p.assigned() {
		w.forgetIdle()
	}
	start := len(dst)
	dst = append(dst, w.gone...)
	clear(w.gone)
	w.gone = w.gone[:0]
	deletes := len(dst) - start
	for i := range w.slots {
		sl := &w.slots[i]
		for j, p := range sl.batch.Partitions {
			if j < len(sl.enc) && sl.enc[j] != nil {
				dst = append(dst, Entry{Op: name, Partition: p.ID, Key: windowBatch(sl.seq + w.shift[p.ID]), Value: sl.enc[j]})
				sl.enc[j] = nil
			}
		}
	}
	if len(w.shift) == 0 && !w.p.assigned() {
		// No partition has entered yet (the batches were empty): the
		// position is kept under partition 0 all the same, so that the
		// slide goes on in step after a restart. (The partitions of an
		// Assigner source enter the window, empty or not; partition 0 may
		// be another process's.)
		w.shift[0] = 0
	}
	for _, id := range slices.Sorted(maps.Keys(w.shift)) {
		v := binary.AppendVarint(nil, w.seen+w.shift[id])
		v = binary.AppendUvarint(v, uint64(w.p.cfg.parallelism))
		dst = append(dst, Entry{Op: name, Partition: id, Key: []byte{windowPosKey}, Value: v})
	}
	if w.rewrites {
		w.rewrites = false
		written := map[string]bool{}
		for _, e := range dst[start+deletes:] {
			written[entryID(e)] = true
		}
		kept := slices.DeleteFunc(slices.Clone(dst[start:start+deletes]), func(e Entry) bool { return written[entryID(e)] })
		dst = append(append(dst[:start], kept...), slices.Clone(dst[start+deletes:])...)
	}
	return dst, nil
}

// forgetIdle drops the positions of the partitions that no batch in the
// ring holds, which the source no longer reads (it is not an Assigner,
// whose partitions enter empty or not): every checkpoint would write them
// for ever. Their batches are deleted already, and a partition that
// enters again takes a shift of 0, as a new one. When the ring holds no
// partition, one position stays, for the slide's phase. A partition whose
// shift is not 0 (restored from another count of batches) is kept: keys
// of its own might be taken again.
func (w *windowRing[T]) forgetIdle() {
	held := map[int32]bool{}
	for _, sl := range w.slots {
		for _, p := range sl.batch.Partitions {
			held[p.ID] = true
		}
	}
	keep := len(held) == 0
	for _, id := range slices.Sorted(maps.Keys(w.shift)) {
		switch {
		case held[id] || w.shift[id] != 0:
		case keep:
			keep = false
		default:
			delete(w.shift, id)
			w.gone = append(w.gone, Entry{Op: w.name(), Partition: id, Key: []byte{windowPosKey}, Deleted: true})
		}
	}
}

// entryID is the partition and key of e.
func entryID(e Entry) string {
	return strconv.FormatInt(int64(e.Partition), 10) + "/" + string(e.Key)
}

// restore takes one entry of a restore, put in the ring once the Store has
// given them all (restored): a changelog gives a batch's write and,
// later, its delete.
func (w *windowRing[T]) restore(e Entry, _ int, _ int64) error {
	if w.restoring == nil {
		w.restoring = map[int32]*windowRestore[T]{}
	}
	r := w.restoring[e.Partition]
	if r == nil {
		r = &windowRestore[T]{batches: map[int64][]T{}}
		w.restoring[e.Partition] = r
	}
	bad := func(what string) error {
		return fmt.Errorf("window %s partition %d: bad %s in the store", e.Op, e.Partition, what)
	}
	switch {
	case len(e.Key) == 1 && e.Key[0] == windowPosKey:
		if e.Deleted {
			r.hasPos = false
			return nil
		}
		pos, n := binary.Varint(e.Value)
		if n <= 0 {
			return bad("position")
		}
		par, m := binary.Uvarint(e.Value[n:])
		if m <= 0 || n+m != len(e.Value) || par > 1<<31 {
			return bad("position")
		}
		r.pos, r.parallelism, r.hasPos = pos, int(par), true
	case len(e.Key) > 1 && e.Key[0] == windowBatchKey:
		k, n := binary.Varint(e.Key[1:])
		if n <= 0 || n != len(e.Key)-1 {
			return bad("batch key")
		}
		if e.Deleted {
			delete(r.batches, k)
			return nil
		}
		vals, err := decodeValues(w.codec, e.Value)
		if err != nil {
			return fmt.Errorf("decode the values of window %s partition %d: %w", e.Op, e.Partition, err)
		}
		r.batches[k] = vals
	default:
		return bad("key")
	}
	return nil
}

// restored puts the batches restored in the ring, each partition's where
// it was as of the checkpoint: its last batch the last to have entered
// the ring. A ring that holds no partition yet takes the position of the
// checkpoint, so that the slide goes on in step: that of a restart, also
// when an Assigner source owned no partition for its first batches (a
// consumer group's member before it joins), which were in no run that did
// not stop.
func (w *windowRing[T]) restored() error {
	if len(w.restoring) == 0 {
		return nil
	}
	defer func() { w.restoring = nil }()
	ids := slices.Sorted(maps.Keys(w.restoring))
	for _, id := range ids {
		if r := w.restoring[id]; !r.hasPos && len(r.batches) > 0 {
			return fmt.Errorf("window %s partition %d: %d batches in the store but no position: the store is corrupt", w.name(), id, len(r.batches))
		}
	}
	if len(w.shift) == 0 { // every partition that enters has a shift
		adopt := false
		var seen int64
		for _, id := range ids {
			if r := w.restoring[id]; r.hasPos && (!adopt || r.pos > seen) {
				adopt, seen = true, r.pos
			}
		}
		if adopt {
			clear(w.slots) // of no partition
			w.slots, w.seen = w.slots[:0], seen
		}
	}
	if w.placed != 0 && w.misplaced() {
		return w.replace(ids)
	}
	name := w.name()
	for _, id := range ids {
		r := w.restoring[id]
		if !r.hasPos { // nothing stored (checked by restored)
			continue
		}
		shift := r.pos - w.seen
		w.shift[id] = shift
		for _, k := range slices.Sorted(maps.Keys(r.batches)) {
			seq := k - shift
			if seq <= w.seen-int64(w.length)+1 || seq > w.seen || len(r.batches[k]) == 0 {
				// Out of the window (its length shrank since), or empty:
				// stored by an earlier version, it would not be deleted
				// as it leaves.
				w.gone = append(w.gone, Entry{Op: name, Partition: id, Key: windowBatch(k), Deleted: true})
				continue
			}
			sl := w.slot(seq)
			sl.batch.Partitions = append(sl.batch.Partitions, Partition[T]{ID: id, Values: r.batches[k]})
			sl.enc = append(sl.enc, nil)
			if w.onRestore != nil {
				if err := w.onRestore(&sl.batch.Partitions[len(sl.batch.Partitions)-1]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// misplaced reports whether the batches restored are not where the
// pipeline places their values now: pairs placed by a hash of their keys
// that hash elsewhere (a new process seeds the hash of keys that have no
// fixed one; the count of partitions changed), or values placed by a hash
// over the parallelism, which changed.
func (w *windowRing[T]) misplaced() bool {
	n := w.keyParts()
	for id, r := range w.restoring {
		if w.placed < 0 && r.hasPos && r.parallelism != w.p.cfg.parallelism {
			return true
		}
		if n == 0 {
			continue
		}
		for _, vals := range r.batches {
			for _, v := range vals {
				if w.bucket(v, n) != int(id) {
					return true
				}
			}
		}
	}
	return false
}

// keyParts returns the count of partitions the window's values are
// placed over by a hash of their keys, or 0 if they are not pairs placed
// by the keys they hold.
func (w *windowRing[T]) keyParts() int {
	switch {
	case w.hashParts == 0 || w.bucket == nil:
		return 0
	case w.hashParts < 0:
		return w.p.cfg.parallelism
	}
	return w.hashParts
}

// replace puts the batches restored, placed elsewhere (see misplaced), in
// the partitions the keys of their values hash to now: the next
// checkpoint writes them there, and deletes them where they were, with
// the positions of the partitions they were in.
func (w *windowRing[T]) replace(ids []int32) error {
	name := w.name()
	par, n := w.p.cfg.parallelism, w.keyParts()
	type at struct {
		seq int64
		id  int32
	}
	moved := map[at][]T{}
	for _, id := range ids {
		r := w.restoring[id]
		if !r.hasPos { // nothing stored (checked by restored)
			continue
		}
		shift := r.pos - w.seen
		w.gone = append(w.gone, Entry{Op: name, Partition: id, Key: []byte{windowPosKey}, Deleted: true})
		for _, k := range slices.Sorted(maps.Keys(r.batches)) {
			w.gone = append(w.gone, Entry{Op: name, Partition: id, Key: windowBatch(k), Deleted: true})
			seq := k - shift
			if seq <= w.seen-int64(w.length)+1 || seq > w.seen {
				continue
			}
			if n == 0 {
				// The values are placed by keys they no longer hold.
				return fmt.Errorf("window %s holds values placed by a hash over %d partitions (the parallelism), which cannot be placed again under a parallelism of %d: run with Parallelism(%d) until the window has passed, or window the values while they are pairs placed by their keys", name, r.parallelism, par, r.parallelism)
			}
			for _, v := range r.batches[k] {
				a := at{seq, int32(w.bucket(v, n))}
				moved[a] = append(moved[a], v)
			}
		}
	}
	ats := slices.SortedFunc(maps.Keys(moved), func(a, b at) int { return cmp.Or(cmp.Compare(a.seq, b.seq), cmp.Compare(a.id, b.id)) })
	for _, a := range ats {
		vals := moved[a]
		enc, err := encodeValues(w.codec, vals)
		if err != nil {
			return fmt.Errorf("encode the values of window %s partition %d: %w", name, a.id, err)
		}
		sl := w.slot(a.seq)
		sl.batch.Partitions = append(sl.batch.Partitions, Partition[T]{ID: a.id, Values: vals})
		sl.enc = append(sl.enc, enc)
		w.shift[a.id] = 0
		if w.onRestore != nil {
			if err := w.onRestore(&sl.batch.Partitions[len(sl.batch.Partitions)-1]); err != nil {
				return err
			}
		}
	}
	w.rewrites = true
	return nil
}

// encodeValues encodes vals as their count, the length of each encoding,
// then the encodings.
func encodeValues[T any](c Codec[T], vals []T) ([]byte, error) {
	var (
		data []byte
		ends = make([]int, len(vals))
	)
	for i, v := range vals {
		var err error
		if data, err = appendEncoded(data, c, v); err != nil {
			return nil, err
		}
		ends[i] = len(data)
	}
	// Sized exactly: the encoding is kept until the checkpoint that
	// writes it, beside the values.
	size, prev := uvarintLen(uint64(len(vals)))+len(data), 0
	for _, e := range ends {
		size += uvarintLen(uint64(e - prev))
		prev = e
	}
	out := make([]byte, 0, size)
	out = binary.AppendUvarint(out, uint64(len(vals)))
	prev = 0
	for _, e := range ends {
		out = binary.AppendUvarint(out, uint64(e-prev))
		prev = e
	}
	return append(out, data...), nil
}

// uvarintLen is the length of x's encoding by binary.AppendUvarint.
func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// appendEncoded appends the encoding of v by c to dst. The codec appends
// to the free end of dst; bytes it returns elsewhere (grown, or a slice
// of its own) are copied in.
func appendEncoded[T any](dst []byte, c Codec[T], v T) ([]byte, error) {
	start := len(dst)
	if cap(dst) == start {
		dst = slices.Grow(dst, max(64, start))
	}
	b, err := c.Append(dst[start:], v)
	if err != nil {
		return dst, err
	}
	if len(b) > 0 && &dst[:start+1][start] != &b[0] {
		return append(dst, b...), nil
	}
	return dst[:start+len(b)], nil
}

// decodeValues decodes what encodeValues encoded.
func decodeValues[T any](c Codec[T], b []byte) ([]T, error) {
	errBad := errors.New("bad encoding of a batch's values")
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, errBad
	}
	b = b[k:]
	lens := make([]int, n)
	total := 0
	for i := range lens {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)) {
			return nil, errBad
		}
		lens[i], total = int(l), total+int(l)
		b = b[k:]
	}
	if total != len(b) {
		return nil, errBad
	}
	vals := make([]T, n)
	for i, l := range lens {
		v, err := c.Decode(b[:l:l])
		if err != nil {
			return nil, err
		}
		vals[i], b = v, b[l:]
	}
	return vals, nil
}
