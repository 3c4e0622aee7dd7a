package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream"
)

// sortTop puts the same first n in front as a sort of all of them does.
func TestSortTopMatchesASort(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for trial := range 200 {
		ts := make([]total, rng.IntN(300))
		for i := range ts {
			ts[i] = stream.KV(int64(rng.IntN(1000)), int64(rng.IntN(50))) // ties in score
		}
		n := rng.IntN(15)
		want := slices.Clone(ts)
		slices.SortFunc(want, byScore)
		sortTop(ts, n)
		k := min(n, len(ts))
		require.Equal(t, want[:k], ts[:k], "trial %d: top %d of %d", trial, n, len(ts))
		slices.SortFunc(ts, byScore)
		require.Equal(t, want, ts, "trial %d: the others kept", trial)
	}
}

func popularBatch(parts ...[]total) *stream.Batch[total] {
	b := &stream.Batch[total]{Info: stream.Info{ID: 1, Time: time.Now(), Records: 100}}
	for i, p := range parts {
		b.Partitions = append(b.Partitions, stream.Partition[total]{ID: int32(i), Values: p})
	}
	return b
}

// The summary lists the topN highest scores, and how many more there are.
func TestReportSummaryShowsTheTop(t *testing.T) {
	var out bytes.Buffer
	r := newReporter(&out, false, true, slog.New(slog.DiscardHandler))
	var a, b []total
	for u := range int64(30) {
		a = append(a, stream.KV(100+u, u))      // scores 0..29
		b = append(b, stream.KV(200+u, 30+u%3)) // scores 30..32
	}
	require.NoError(t, r.report(context.Background(), popularBatch(a, b)))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2+topN+1)
	var want []string
	for _, kv := range [][2]int64{{202, 32}, {205, 32}, {208, 32}, {211, 32}, {214, 32}, {217, 32}, {220, 32}, {223, 32}, {226, 32}, {229, 32}} {
		want = append(want, fmt.Sprintf("  %8d  %8d", kv[0], kv[1]))
	}
	assert.Equal(t, want, lines[2:2+topN], "the highest, ties by user id")
	assert.Equal(t, "  (and 50 more)", lines[len(lines)-1])
}

// A user popular in two partitions means the input is not keyed by user
// id: the report says so, once.
func TestReportWarnsOfASplitUser(t *testing.T) {
	var logs bytes.Buffer
	r := newReporter(&bytes.Buffer{}, false, true, slog.New(slog.NewTextHandler(&logs, nil)))
	require.NoError(t, r.report(context.Background(), popularBatch([]total{stream.KV(int64(1), int64(5))}, []total{stream.KV(int64(2), int64(5))})))
	assert.Empty(t, logs.String(), "no user in two partitions")
	split := popularBatch([]total{stream.KV(int64(1), int64(5)), stream.KV(int64(7), int64(3))}, []total{stream.KV(int64(7), int64(4))})
	require.NoError(t, r.report(context.Background(), split))
	require.NoError(t, r.report(context.Background(), split))
	assert.Equal(t, 1, strings.Count(logs.String(), "not keyed by user id"), logs.String())
	assert.Contains(t, logs.String(), "user=7")
}
