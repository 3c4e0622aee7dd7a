package main

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/digest"
	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// FuzzPipelineDecode feeds random records through the whole pipeline (decode,
// TryMap, totals, threshold, outputs): it never panics nor fails, and every
// record is either counted in the totals or dead-lettered whole, never both
// and never neither.
func FuzzPipelineDecode(f *testing.F) {
	f.Add([]byte("1,profile.view\n2,message.private\n\n-3,x\n1,profile.picture.like"), false)
	f.Add([]byte(`{"user_id":1,"activity":"profile.view"}`+"\n"+`{"user_id":9223372036854775808,"activity":"profile.view"}`+"\n\xff"), true)
	f.Add([]byte("user_id,activity\n0,profile.view\n1,\"profile.view\"\n1,profile.view,\r\n"), false)
	f.Add([]byte(`{"activity":"message.private","user_id":12,"extra":[1,{"a":null}]}`+"\n{"), true)
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		format := score.FormatCSV
		if isJSON {
			format = score.FormatJSON
		}
		dec, err := score.NewDecoder(format)
		require.NoError(t, err)
		records := bytes.Split(data, []byte("\n"))

		// What the pipeline must find: each record decoded alone.
		totals := map[int64]int64{}
		var bad [][]byte
		for _, r := range records {
			user, points, err := dec.Score(r)
			if err != nil {
				bad = append(bad, r)
				continue
			}
			totals[user] += points
		}

		p := stream.NewPipeline(stream.MaxRecords(7), stream.Interval(0))
		dead := sink.NewMemory[deadLetter]()
		var report bytes.Buffer
		out := &outputs{
			report:      newReporter(&report, true, false, slog.New(slog.DiscardHandler)),
			deadLetters: dead,
		}
		popularUsers(stream.From(p, source.NewSlice("fuzz", records, 3)), func(r []byte) []byte { return r }, false, dec,
			func() (*digest.Counts, error) { return digest.NewCounts(), nil }, 0.5, out)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.NoError(t, p.Run(ctx))

		lines := parseLines(t, report.String())
		read, badSeen := 0, 0
		for _, l := range lines {
			read += l.Records
			badSeen += l.Bad
		}
		assert.Equal(t, len(records), read, "every record read")
		assert.Equal(t, len(bad), badSeen, "every bad record counted")

		var deadRecs [][]byte
		for _, d := range dead.Values() {
			rec := d.RecordBase64
			if d.Record != nil {
				rec = []byte(*d.Record)
			}
			assert.Equal(t, d.raw, rec, "a dead letter holds its record whole")
			assert.NotEmpty(t, d.Error)
			assert.NotEqual(t, "other", d.Kind, "a bad record has a decoding kind")
			deadRecs = append(deadRecs, rec)
		}
		sortBytes := func(s [][]byte) { slices.SortFunc(s, bytes.Compare) }
		sortBytes(deadRecs)
		sortBytes(bad)
		assert.Equal(t, len(bad), len(deadRecs), "every bad record dead-lettered, once")
		if len(bad) == len(deadRecs) {
			for i := range bad {
				assert.Equal(t, bad[i], deadRecs[i])
			}
		}

		require.NotEmpty(t, lines)
		last := lines[len(lines)-1]
		assert.Equal(t, len(totals), last.Users, "every good record's user, and no other")
		if len(totals) > 0 {
			ref := &reference{totals: totals}
			threshold := ref.quantile(1, 2)
			require.NotNil(t, last.Threshold)
			assert.Equal(t, float64(threshold), *last.Threshold)
			assert.Equal(t, ref.above(float64(threshold)), popularOf(last), "the totals of the good records, exactly")
		}
	})
}
