package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/stream"
)

// topN is how many users the summary lists.
const topN = 10

// reporter prints one line (-json) or one summary per batch on stdout.
// Its methods run on the pipeline's run loop, one batch at a time: the
// outputs before the report note what they saw of the batch, and report
// prints it.
type reporter struct {
	w     io.Writer
	json  bool
	log   *slog.Logger
	keyed bool // the input is keyed by user id: check that it is
	// deadLetters says where the dead letters go, for the logs.
	deadLetters string
	mon         *monitor // -metrics-addr; nil: none
	// kafka, with a Kafka input, holds the batches back until the source
	// has reached the brokers; nil: none.
	kafka *kafkaWait

	// noted by earlier outputs of the batch
	badBatch int64
	bad      badCount
	cut      cut

	// over the run
	batches, records, badRecords int64
	badKinds                     [score.NumKinds]int64
	prev                         time.Time // the previous batch's cut, for the rate
	split                        bool      // a split user has been reported

	popular []total // this batch's, sorted (with neither -json nor a monitor, the first topN)
	seen    map[int64]struct{}
	buf     []byte
}

func newReporter(w io.Writer, json, keyed bool, log *slog.Logger) *reporter {
	return &reporter{w: w, json: json, keyed: keyed, log: log, prev: time.Now()}
}

// logBadPerBatch is how many bad records of a batch are logged one by
// one; the rest are only counted in the batch's log line. The dead letters
// hold them all.
const logBadPerBatch = 5

// badCount counts a batch's bad records by kind, and keeps the first few
// to log.
type badCount struct {
	n       int
	kinds   [score.NumKinds]int
	samples []badSample
}

// badSample is a bad record to log: where it came from and why it is bad.
type badSample struct {
	origin string
	err    error
}

func (c *badCount) add(origin string, err error) {
	if c.n < logBadPerBatch {
		c.samples = append(c.samples, badSample{origin, err})
	}
	c.n++
	k, _ := score.KindOf(err) // 0 for an error that is not a decoding one
	c.kinds[k]++
}

// String lists the counts by kind: "unknown activity: 2, malformed record: 1".
func (c *badCount) String() string { return kindCounts(c.kinds[:]) }

// kindCounts lists counts indexed by score.Kind, 0 for other errors.
func kindCounts[N int | int64](kinds []N) string {
	var parts []string
	for k, n := range kinds {
		if n == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %d", kindLabel(k), n))
	}
	return strings.Join(parts, ", ")
}

func (r *reporter) setBad(batch int64, c badCount) {
	r.badBatch, r.bad = batch, c
	if c.n == 0 {
		return
	}
	// Counted here, as they go to the dead letters, not as the batch is
	// reported: a batch that -max-bad-ratio fails is never reported.
	r.badRecords += int64(c.n)
	for k, n := range c.kinds {
		r.badKinds[k] += int64(n)
	}
	if r.mon != nil {
		r.mon.addBad(c.kinds[:])
	}
	for _, s := range c.samples {
		r.log.Warn("bad record", "batch", batch, "origin", s.origin, "kind", kindName(s.err), "err", s.err)
	}
	r.log.Warn("bad records sent to the dead letters", "to", r.deadLetters,
		"batch", batch, "count", c.n, "kinds", c.String(), "not logged", c.n-len(c.samples))
}

func (r *reporter) setCut(c cut) { r.cut = c }

// report prints the batch of popular users b.
func (r *reporter) report(_ context.Context, b *stream.Batch[total]) error {
	info := b.Info
	if r.kafka != nil && r.kafka.holds(r.log) {
		r.prev = info.Time
		return nil
	}
	bad := 0
	if r.badBatch == info.ID {
		bad = r.bad.n
	}
	c := r.cut
	if c.Batch != info.ID { // no threshold this batch: nothing upstream of it ran
		c = cut{Batch: info.ID, Time: info.Time, Threshold: math.NaN()}
	}
	r.popular = r.popular[:0]
	for _, p := range b.Partitions {
		r.popular = append(r.popular, p.Values...)
	}
	if r.keyed {
		r.checkKeyed()
	}
	if r.json || r.mon != nil {
		slices.SortFunc(r.popular, byScore) // all of them are shown
	} else {
		sortTop(r.popular, topN) // the summary shows the first topN
	}
	if r.mon != nil {
		r.mon.setResult(info.ID, c, r.popular)
	}
	r.batches++
	r.records += int64(info.Records)
	elapsed := info.Time.Sub(r.prev)
	r.prev = info.Time

	if r.json {
		r.buf = appendJSON(r.buf[:0], info.ID, info.Records, bad, c, r.popular)
	} else {
		r.buf = appendSummary(r.buf[:0], info, bad, elapsed, c, r.popular)
	}
	if _, err := r.w.Write(r.buf); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// kafkaWait holds back the batches a Kafka input cuts before its source
// has reached the brokers: they are empty because nothing could be read,
// and a line of 0 records would read as an idle topic.
type kafkaWait struct {
	reached func() bool
	brokers []string
	timeout time.Duration
	warned  bool
}

// holds reports whether the source has yet to reach the brokers, and
// says so, once, in the log.
func (w *kafkaWait) holds(log *slog.Logger) bool {
	if w.reached() {
		return false
	}
	if !w.warned {
		w.warned = true
		log.Warn("the Kafka brokers have not answered yet: no batch is reported until they do, and the run fails if they have not within -connect-timeout",
			"brokers", fmt.Sprint(w.brokers), "connect_timeout", w.timeout)
	}
	return true
}

// checkKeyed warns, once, when a user has popular totals in two
// partitions: then the input topic is not keyed by user id, and that
// user's score is split.
func (r *reporter) checkKeyed() {
	if r.split || len(r.popular) < 2 {
		return
	}
	if r.seen == nil {
		r.seen = make(map[int64]struct{}, len(r.popular))
	}
	defer clear(r.seen)
	for _, t := range r.popular {
		if _, twice := r.seen[t.Key]; twice {
			r.split = true
			r.log.Error("a user has totals in two partitions of the input topic: it is not keyed by user id, and totals are split",
				"user", t.Key)
			return
		}
		r.seen[t.Key] = struct{}{}
	}
}

// sortTop moves the first n of ts in byScore order to its front, sorted,
// in one pass over ts rather than a sort of all of them.
func sortTop(ts []total, n int) {
	n = min(n, len(ts))
	if n == 0 {
		return
	}
	slices.SortFunc(ts[:n], byScore)
	for i := n; i < len(ts); i++ {
		if byScore(ts[i], ts[n-1]) >= 0 {
			continue
		}
		ts[i], ts[n-1] = ts[n-1], ts[i]
		for j := n - 1; j > 0 && byScore(ts[j], ts[j-1]) < 0; j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

// done logs what the run did.
func (r *reporter) done() {
	if r.badRecords == 0 {
		r.log.Info("stopped", "batches", r.batches, "records", r.records, "bad", r.badRecords)
		return
	}
	r.log.Info("stopped", "batches", r.batches, "records", r.records, "bad", r.badRecords, "bad by kind", kindCounts(r.badKinds[:]))
}

// appendJSON appends one batch as a JSON line:
// {"batch":N,"records":R,"bad":B,"users":U,"threshold":T,"popular":[{"user_id":ID,"score":S},...]}.
// The threshold is null when there are no users yet.
func appendJSON(b []byte, batch int64, records, bad int, c cut, popular []total) []byte {
	b = append(b, `{"batch":`...)
	b = strconv.AppendInt(b, batch, 10)
	b = append(b, `,"records":`...)
	b = strconv.AppendInt(b, int64(records), 10)
	b = append(b, `,"bad":`...)
	b = strconv.AppendInt(b, int64(bad), 10)
	b = append(b, `,"users":`...)
	b = strconv.AppendUint(b, c.Users, 10)
	b = append(b, `,"threshold":`...)
	b = appendNumber(b, c.Threshold)
	b = append(b, `,"popular":[`...)
	for i, t := range popular {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"user_id":`...)
		b = strconv.AppendInt(b, t.Key, 10)
		b = append(b, `,"score":`...)
		b = strconv.AppendInt(b, t.Value, 10)
		b = append(b, '}')
	}
	return append(b, "]}\n"...)
}

// appendNumber appends x as a JSON number, or null for NaN.
func appendNumber(b []byte, x float64) []byte {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, x, 'f', -1, 64)
}

// appendSummary appends a readable summary of one batch: a line of
// figures and the top users.
func appendSummary(b []byte, info stream.Info, bad int, elapsed time.Duration, c cut, popular []total) []byte {
	rate := 0.0
	if elapsed > 0 {
		rate = float64(info.Records) / elapsed.Seconds()
	}
	threshold := "none yet"
	if !math.IsNaN(c.Threshold) {
		threshold = strconv.FormatFloat(c.Threshold, 'f', -1, 64)
	}
	b = fmt.Appendf(b, "batch %d at %s: %d records (%.0f/s), %d bad; %d users; threshold %s; %d popular\n",
		info.ID, info.Time.Format(time.TimeOnly), info.Records, rate, bad, c.Users, threshold, len(popular))
	if len(popular) == 0 {
		return b
	}
	b = append(b, "      user     score\n"...)
	for _, t := range popular[:min(topN, len(popular))] {
		b = fmt.Appendf(b, "  %8d  %8d\n", t.Key, t.Value)
	}
	if len(popular) > topN {
		b = fmt.Appendf(b, "  (and %d more)\n", len(popular)-topN)
	}
	return b
}
