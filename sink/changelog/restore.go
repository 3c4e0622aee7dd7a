package changelog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/progress"
	"github.com/sluicehq/sluice/internal/readcommitted"
	"github.com/sluicehq/sluice/stream"
)

// progressEvery is how often a long restore logs its progress (a
// variable for tests).
var progressEvery = 5 * time.Second

// Restore implements stream.Store: it reads each partition from its oldest
// record and calls put for every entry (deletes too, in order) up to the
// partition's last marker, and returns the input offsets of those markers.
// Entries after the last marker are an unfinished checkpoint: they are not
// put, and Restore repairs them before it returns (see the package doc).
//
// partitions nil restores the whole topic, as a pipeline without a
// consumer group does: a checkpoint counts only if it finished in every
// partition it wrote, and the offsets are those of the last one that did.
// A list of partitions restores each on its own, as a consumer group
// member does when it is assigned them: the state of partition p and the
// offsets of input partition p go together, which holds for a Keyed
// pipeline, whose state partitions are its input partitions.
//
// Restore holds in memory only the keys written after a partition's last
// marker. It logs its progress every few seconds, and fails when a record
// does not decode (ErrCorrupt, ErrVersion), when it cannot read a
// partition further for Config.RestoreTimeout, or when ctx is done. It
// blocks until then; put is called from the calling goroutine.
func (k *Kafka) Restore(ctx context.Context, partitions []int32, put func(e stream.Entry) error) ([]stream.Offset, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.connect(ctx); err != nil {
		return nil, err
	}
	if tx := k.cfg.Transaction; tx != nil {
		// A process this one replaces may have left a transaction open,
		// which would hold read_committed fetches back: registering the
		// transactional ID aborts it.
		if err := tx.Init(ctx); err != nil {
			return nil, fmt.Errorf("changelog %s: restore: %w", k.cfg.Topic, err)
		}
	}
	n, err := k.partitionCount()
	if err != nil {
		return nil, err
	}
	global := partitions == nil
	var want []int32
	if global {
		for p := range n {
			want = append(want, p)
		}
	} else {
		want = slices.Clone(partitions)
		slices.Sort(want)
		want = slices.Compact(want)
		if len(want) > 0 && want[0] < 0 {
			return nil, fmt.Errorf("changelog %s: restore partition %d", k.cfg.Topic, want[0])
		}
	}

	r := &restorer{k: k, put: put, start: time.Now()}
	r.lastLog = r.start
	var parts []*partRestore
	for _, p := range want {
		if p >= n {
			continue // nothing written there yet
		}
		pr, err := r.probe(ctx, p)
		if err != nil {
			return nil, err
		}
		parts = append(parts, pr)
		r.expected += pr.end - pr.oldest
	}
	var revoked []uint64
	if global {
		revoked = judge(parts)
	}
	for _, pr := range parts {
		if pr.rollback {
			if err := r.rollBack(ctx, pr); err != nil {
				return nil, err
			}
		} else {
			pr.eff, pr.effAt = pr.last, pr.lastAt
		}
		if err := r.load(ctx, pr); err != nil {
			return nil, err
		}
		k.seq = max(k.seq, pr.maxSeq)
	}
	if err := r.repair(ctx, parts, revoked); err != nil {
		k.forget()
		return nil, err
	}

	var offsets []stream.Offset
	entries := 0
	for _, pr := range parts {
		entries += pr.entries
		if pr.effAt >= 0 {
			k.lastMarker[pr.p] = pr.effAt
		} else {
			delete(k.lastMarker, pr.p)
		}
		if pr.eff == nil {
			continue
		}
		for _, o := range pr.eff.offsets {
			if global || o.Partition == pr.p {
				offsets = mergeOffsets(offsets, []stream.Offset{o})
			}
		}
	}
	if global {
		k.all = true
	}
	for _, p := range want {
		k.restored[p] = true
		if p >= n {
			delete(k.lastMarker, p)
		}
	}
	k.offsets = mergeOffsets(k.offsets, offsets)
	took := time.Since(r.start)
	k.log.Info("changelog restored", "partitions", len(parts), "records", r.records, "entries", entries,
		"took", took.Round(time.Millisecond), "rate", rate(r.records, took))
	return offsets, nil
}

// restorer is the state of one Restore.
type restorer struct {
	k       *Kafka
	put     func(stream.Entry) error
	start   time.Time
	lastLog time.Time
	records int64 // records read, for progress
	logged  int64 // records at the last progress log
	// expected is about how many records the restore reads: those of its
	// partitions, once each (the probes read some of them twice).
	expected int64
}

// partRestore is the restore of one partition.
type partRestore struct {
	p           int32
	oldest, end int64
	last        *marker // the partition's last marker
	lastAt      int64   // its offset, or -1
	rollback    bool    // the last marker's checkpoint did not finish everywhere
	eff         *marker // the marker the state is restored to
	effAt       int64   // its offset, or -1
	maxSeq      uint64
	entries     int
	// repair holds the key of every entry written after the effective
	// marker, and its value as of that marker (nil: absent).
	repair map[string][]byte
}

// probe finds the partition's last marker by reading back from the end,
// in windows that grow, and notes the keys written after it.
func (r *restorer) probe(ctx context.Context, p int32) (*partRestore, error) {
	k := r.k
	oldest, err := k.client.GetOffset(k.cfg.Topic, p, sarama.OffsetOldest)
	if err != nil {
		return nil, fmt.Errorf("changelog: oldest offset of %s/%d: %w", k.cfg.Topic, p, err)
	}
	end, err := k.client.GetOffset(k.cfg.Topic, p, sarama.OffsetNewest)
	if err != nil {
		return nil, fmt.Errorf("changelog: newest offset of %s/%d: %w", k.cfg.Topic, p, err)
	}
	pr := &partRestore{p: p, oldest: oldest, end: end, lastAt: -1, effAt: -1, repair: map[string][]byte{}}
	for hi, w := end, int64(16); hi > oldest && pr.last == nil; w *= 4 {
		lo := max(oldest, hi-w)
		var after []string // keys after the last marker of the window
		err := r.scan(ctx, p, lo, hi, func(off int64, key, value []byte) error {
			_, _, isMarker, err := decodeKey(key)
			if err != nil {
				return err
			}
			if !isMarker {
				if _, _, err := decodeEntryValue(value); err != nil {
					return err
				}
				after = append(after, string(key))
				return nil
			}
			m, err := decodeMarker(value)
			if err != nil {
				return err
			}
			pr.last, pr.lastAt = &m, off
			after = after[:0]
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, key := range after {
			pr.repair[key] = nil
		}
		hi = lo
	}
	if pr.last != nil {
		pr.maxSeq = pr.last.seq
	}
	return pr, nil
}

// judge marks the partitions whose last marker belongs to a checkpoint
// that did not finish everywhere, and returns those checkpoints. A
// checkpoint n finished in partition q when q's last marker is n or
// later: a partition's markers only grow, and a writer writes after n
// only once n has finished or a restore has judged it. A repair marker
// names the checkpoints it revoked, for the partitions a crashed repair
// did not reach.
func judge(parts []*partRestore) []uint64 {
	last := make(map[int32]*marker, len(parts))
	for _, pr := range parts {
		last[pr.p] = pr.last
	}
	var revoked []uint64
	for _, pr := range parts {
		m := pr.last
		if m == nil || m.repair {
			continue
		}
		for _, q := range m.parts {
			lq := last[q]
			if q != pr.p && (lq == nil || lq.seq < m.seq || lq.repair && slices.Contains(lq.revokes, m.seq)) {
				pr.rollback = true
				break
			}
		}
		if pr.rollback && !slices.Contains(revoked, m.seq) {
			revoked = append(revoked, m.seq)
		}
	}
	return revoked
}

// rollBack makes the marker before the last one the effective one, and
// adds the keys written since it to those to repair.
func (r *restorer) rollBack(ctx context.Context, pr *partRestore) error {
	k := r.k
	prev := pr.last.prev
	from := pr.oldest
	if prev >= 0 {
		from = prev
	}
	lost := func() error {
		return fmt.Errorf("%w: %s/%d: the unfinished checkpoint ending at offset %d cannot be rolled back: the marker before it, at offset %d, is gone (compacted?); rebuild the state, or delete the topic to start anew",
			ErrCorrupt, k.cfg.Topic, pr.p, pr.lastAt, prev)
	}
	if prev >= pr.lastAt || prev >= 0 && prev < pr.oldest {
		return lost()
	}
	err := r.scan(ctx, pr.p, from, pr.lastAt, func(off int64, key, value []byte) error {
		_, _, isMarker, err := decodeKey(key)
		if err != nil {
			return err
		}
		if prev >= 0 && pr.eff == nil {
			if off != prev || !isMarker {
				return lost()
			}
			m, err := decodeMarker(value)
			if err != nil {
				return err
			}
			pr.eff, pr.effAt = &m, off
			return nil
		}
		if isMarker {
			return fmt.Errorf("%w: a marker after the one at offset %d, which the marker at %d names as the last before it", ErrCorrupt, prev, pr.lastAt)
		}
		pr.repair[string(key)] = nil
		return nil
	})
	if err != nil {
		return err
	}
	if prev >= 0 && pr.eff == nil {
		return lost()
	}
	return nil
}

// load puts every entry before the effective marker, and notes the values
// of the keys to repair.
func (r *restorer) load(ctx context.Context, pr *partRestore) error {
	if pr.effAt < 0 {
		return nil
	}
	return r.scan(ctx, pr.p, pr.oldest, pr.effAt, func(_ int64, key, value []byte) error {
		op, k, isMarker, err := decodeKey(key)
		if err != nil {
			return err
		}
		if isMarker {
			m, err := decodeMarker(value)
			if err != nil {
				return err
			}
			pr.maxSeq = max(pr.maxSeq, m.seq)
			return nil
		}
		v, deleted, err := decodeEntryValue(value)
		if err != nil {
			return err
		}
		if len(pr.repair) > 0 {
			if _, ok := pr.repair[string(key)]; ok {
				if deleted {
					value = nil
				}
				// A copy: value points into its fetch response, which
				// would be kept whole until the repair.
				pr.repair[string(key)] = bytes.Clone(value)
			}
		}
		pr.entries++
		return r.put(stream.Entry{Op: op, Partition: pr.p, Key: k, Value: v, Deleted: deleted})
	})
}

// repair writes, for every key written after a partition's effective
// marker, its value as of that marker (or a tombstone), then a repair
// marker, so that no later marker or compaction can make those writes
// count.
func (r *restorer) repair(ctx context.Context, parts []*partRestore, revoked []uint64) (err error) {
	k := r.k
	var todo []*partRestore
	var ids []int32
	var msgs []*sarama.ProducerMessage
	keys := 0
	for _, pr := range parts {
		if len(pr.repair) == 0 && !pr.rollback {
			continue
		}
		todo = append(todo, pr)
		ids = append(ids, pr.p)
		keys += len(pr.repair)
		for key, value := range pr.repair {
			m := &sarama.ProducerMessage{Topic: k.cfg.Topic, Partition: pr.p, Key: sarama.ByteEncoder(key)}
			if len(value) > 0 {
				m.Value = sarama.ByteEncoder(value)
			}
			msgs = append(msgs, m)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	if tx := k.cfg.Transaction; tx != nil {
		// A repair is a transaction of its own, between batches.
		if err := tx.Begin(ctx); err != nil {
			return fmt.Errorf("changelog: repair: %w", err)
		}
		defer func() {
			if err != nil {
				if aerr := tx.Abort(ctx); aerr != nil {
					k.log.Warn("changelog: abort the repair", "err", aerr)
				}
			} else if cerr := tx.Commit(ctx); cerr != nil {
				err = fmt.Errorf("changelog: repair: %w", cerr)
			}
		}()
	}
	if err := k.write(ctx, msgs); err != nil {
		return fmt.Errorf("changelog: repair: %w", err)
	}
	k.seq++
	markers := make([]*sarama.ProducerMessage, len(todo))
	for i, pr := range todo {
		m := &marker{repair: true, seq: k.seq, prev: pr.effAt, parts: ids, revokes: revoked}
		if pr.eff != nil {
			m.offsets = pr.eff.offsets
		}
		markers[i] = &sarama.ProducerMessage{Topic: k.cfg.Topic, Partition: pr.p, Key: sarama.ByteEncoder(markerKey), Value: sarama.ByteEncoder(appendMarker(nil, m))}
	}
	if err := k.write(ctx, markers); err != nil {
		return fmt.Errorf("changelog: repair: markers: %w", err)
	}
	for i, pr := range todo {
		pr.effAt = markers[i].Offset
	}
	k.log.Warn("changelog: an unfinished checkpoint was found and repaired", "partitions", ids, "keys", keys, "revoked", revoked)
	return nil
}

// scan reads the records of partition p from offset from to offset to
// (excluded) and calls fn for each. It sends plain fetch requests to the
// partition's leader: a sarama consumer waits to batch new partitions and
// keeps polling past the end, which would cost every range read a good
// part of a second.
func (r *restorer) scan(ctx context.Context, p int32, from, to int64, fn func(off int64, key, value []byte) error) error {
	k := r.k
	off := from
	size := k.sarama.Consumer.Fetch.Default
	moved := time.Now() // when off last moved
	wait := 10 * time.Millisecond
	for off < to {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("changelog: restore %s/%d at offset %d: %w", k.cfg.Topic, p, off, context.Cause(ctx))
		}
		r.progress(p)
		block, err := k.fetch(p, off, size)
		if errors.Is(err, sarama.ErrOffsetOutOfRange) {
			return fmt.Errorf("changelog: read %s/%d at offset %d: %w", k.cfg.Topic, p, off, err)
		}
		start, partial := off, false
		if err == nil {
			// Read committed with a Transaction or without: a changelog
			// written in transactions may be restored by a store without.
			committed := readcommitted.New(block)
			for _, rs := range block.RecordsSet {
				b := rs.RecordBatch
				if b == nil {
					if rs.MsgSet != nil {
						return fmt.Errorf("changelog: read %s/%d at offset %d: a message set older than Kafka 0.11's record batches", k.cfg.Topic, p, off)
					}
					continue
				}
				if committed.Skip(b) {
					if b.FirstOffset >= to {
						return nil
					}
					off = max(off, b.FirstOffset+int64(b.LastOffsetDelta)+1)
					continue
				}
				for _, rec := range b.Records {
					o := b.FirstOffset + rec.OffsetDelta
					if o < off {
						continue
					}
					if o >= to {
						return nil
					}
					off = o + 1
					if b.Control {
						continue
					}
					r.records++
					if err := fn(o, rec.Key, rec.Value); err != nil {
						return fmt.Errorf("changelog: record at %s/%d@%d: %w", k.cfg.Topic, p, o, err)
					}
				}
				if b.PartialTrailingRecord {
					partial = true
					break
				}
				// Compaction may have removed the last records of a batch.
				off = max(off, b.FirstOffset+int64(b.LastOffsetDelta)+1)
			}
		}
		if off > start {
			moved, wait = time.Now(), 10*time.Millisecond
			continue
		}
		if partial && err == nil && size < math.MaxInt32/2 {
			size *= 2 // a batch larger than a fetch
			continue
		}
		if err == nil {
			// Read committed: a transaction left open by a process that
			// died holds the fetches back until the brokers abort it.
			err = fmt.Errorf("no record below the end at %d (a transaction still open?)", to)
		}
		if time.Since(moved) >= k.cfg.RestoreTimeout {
			return fmt.Errorf("changelog: read %s/%d: stuck at offset %d for %v: %w", k.cfg.Topic, p, off, k.cfg.RestoreTimeout, err)
		}
		k.log.Debug("changelog: fetch again", "partition", p, "offset", off, "err", err)
		if err := k.client.RefreshMetadata(k.cfg.Topic); err != nil {
			k.log.Debug("changelog: metadata", "err", err)
		}
		select {
		case <-time.After(wait):
			wait = min(2*wait, time.Second)
		case <-ctx.Done():
		}
	}
	return nil
}

// progress logs how far the restore is, every progressEvery.
func (r *restorer) progress(p int32) {
	now := time.Now()
	if now.Sub(r.lastLog) < progressEvery {
		return
	}
	attrs := []any{"partition", p, "records", r.records, "rate", rate(r.records-r.logged, now.Sub(r.lastLog))}
	if r.expected > 0 {
		attrs = append(attrs, "of", r.expected)
		attrs = append(attrs, progress.Attrs(min(float64(r.records)/float64(r.expected), 0.999), now.Sub(r.start))...)
	}
	r.k.log.Info("restoring changelog", attrs...)
	r.lastLog, r.logged = now, r.records
}

// rate formats n records over d as records per second.
func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f/s", float64(n)/d.Seconds())
}

// fetch reads from offset off of partition p, up to size bytes.
func (k *Kafka) fetch(p int32, off int64, size int32) (*sarama.FetchResponseBlock, error) {
	b, err := k.client.Leader(k.cfg.Topic, p)
	if err != nil {
		return nil, err
	}
	// The records of aborted transactions are skipped by scan.
	req := &sarama.FetchRequest{Version: k.fetchVersion, MinBytes: 1, MaxBytes: k.sarama.Consumer.Fetch.MaxBytes, Isolation: sarama.ReadCommitted}
	if req.Version >= 7 {
		req.SessionEpoch = -1 // no fetch session
	}
	req.AddBlock(k.cfg.Topic, p, off, size, -1)
	resp, err := b.Fetch(req)
	if err != nil {
		return nil, err
	}
	block := resp.GetBlock(k.cfg.Topic, p)
	if block == nil {
		return nil, sarama.ErrIncompleteResponse
	}
	if !errors.Is(block.Err, sarama.ErrNoError) {
		return nil, block.Err
	}
	return block, nil
}
