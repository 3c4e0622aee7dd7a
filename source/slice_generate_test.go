package source_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

func TestSlice(t *testing.T) {
	s := source.NewSlice("s", []string{"a", "b", "c", "d", "e"}, 2)
	buf := make([]stream.Record[string], 2)
	var got []stream.Record[string]
	for {
		n, err := s.Poll(context.Background(), buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	require.Len(t, got, 5)
	assert.Equal(t, stream.Origin{Source: "s", Partition: 0, Offset: 2}, got[4].Origin)
	assert.Equal(t, stream.Origin{Source: "s", Partition: 1, Offset: 1}, got[3].Origin)
	require.NoError(t, s.Commit(context.Background(), []stream.Offset{{Source: "s", Partition: 1, Next: 2}, {Source: "s", Partition: 0, Next: 1}}))
	require.NoError(t, s.Commit(context.Background(), []stream.Offset{{Source: "s", Partition: 0, Next: 3}}))
	assert.Equal(t, []stream.Offset{{Source: "s", Partition: 0, Next: 3}, {Source: "s", Partition: 1, Next: 2}}, s.Committed())
}

func poll(t *testing.T, g *source.Generator, n int) []stream.Record[score.Event] {
	t.Helper()
	buf := make([]stream.Record[score.Event], n)
	k, err := g.Poll(context.Background(), buf)
	if err != io.EOF {
		require.NoError(t, err)
	}
	return buf[:k]
}

func TestGeneratorIsRepeatableAndInRange(t *testing.T) {
	cfg := source.GeneratorConfig{Seed: 42, Start: 1000, Users: 9000, Partitions: 4}
	a, err := source.NewGenerator(cfg)
	require.NoError(t, err)
	b, err := source.NewGenerator(cfg)
	require.NoError(t, err)
	ra, rb := poll(t, a, 20000), poll(t, b, 20000)
	assert.Equal(t, ra, rb, "same seed, same events")
	users := map[int64]bool{}
	acts := map[string]int{}
	next := map[int32]int64{}
	for _, r := range ra {
		e := r.Value
		require.GreaterOrEqual(t, e.UserID, int64(1000))
		require.LessOrEqual(t, e.UserID, int64(10000))
		users[e.UserID] = true
		acts[e.Activity]++
		assert.Equal(t, int32(e.UserID%4), r.Origin.Partition, "keyed by user")
		assert.Equal(t, next[r.Origin.Partition], r.Origin.Offset, "offsets count per partition")
		next[r.Origin.Partition]++
	}
	assert.True(t, users[1000] || users[10000], "both ends are included")
	assert.Greater(t, len(users), 8000)
	require.Len(t, acts, 3)
	for a, n := range acts {
		assert.InDelta(t, 20000/3, n, 500, a)
	}
	c, err := source.NewGenerator(source.GeneratorConfig{Seed: 43, Start: 1000, Users: 9000, Partitions: 4})
	require.NoError(t, err)
	assert.NotEqual(t, ra, poll(t, c, 20000), "another seed, other events")
}

// Start and Users default each on its own, and the IDs are Start to
// Start+Users, both included.
func TestGeneratorUserRange(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    source.GeneratorConfig
		lo, hi int64
	}{
		{"defaults", source.GeneratorConfig{}, 1000, 10000},
		{"the original's range", source.GeneratorConfig{Start: 1000, Users: 9000}, 1000, 10000},
		{"users alone", source.GeneratorConfig{Users: 100}, 1000, 1100},
		{"start alone", source.GeneratorConfig{Start: 5}, 5, 5},
		{"both", source.GeneratorConfig{Start: 1, Users: 9}, 1, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Seed = 1
			g, err := source.NewGenerator(tc.cfg)
			require.NoError(t, err)
			seen := map[int64]bool{}
			for range 200_000 {
				seen[g.Next().UserID] = true
			}
			assert.Len(t, seen, int(tc.hi-tc.lo+1), "every ID of the range")
			for id := range seen {
				require.True(t, id >= tc.lo && id <= tc.hi, "user %d outside %d..%d", id, tc.lo, tc.hi)
			}
		})
	}
}

func TestGeneratorCountEnds(t *testing.T) {
	g, err := source.NewGenerator(source.GeneratorConfig{Seed: 1, Count: 25})
	require.NoError(t, err)
	n, err := g.Poll(context.Background(), nil)
	require.NoError(t, err, "a Poll with no room is not the end")
	require.Zero(t, n)
	buf := make([]stream.Record[score.Event], 10)
	total := 0
	for i := 0; ; i++ {
		n, err := g.Poll(context.Background(), buf)
		total += n
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		require.Less(t, i, 10)
	}
	assert.Equal(t, 25, total)
	n, err = g.Poll(context.Background(), buf)
	assert.Zero(t, n)
	assert.ErrorIs(t, err, io.EOF)
}

func TestGeneratorRate(t *testing.T) {
	g, err := source.NewGenerator(source.GeneratorConfig{Seed: 1, Rate: 1000})
	require.NoError(t, err)
	buf := make([]stream.Record[score.Event], 100000)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	total := 0
	start := time.Now()
	for ctx.Err() == nil {
		n, _ := g.Poll(ctx, buf)
		total += n
	}
	elapsed := time.Since(start).Seconds()
	assert.LessOrEqual(t, float64(total), 1000*elapsed+1, "never ahead of the rate")
	assert.Greater(t, total, 100, "and not far behind it")
}

func TestGeneratorValidates(t *testing.T) {
	for _, cfg := range []source.GeneratorConfig{
		{Start: -1, Users: 10},
		{Start: 1, Users: -5},
		{Count: -1},
		{Rate: -1},
		{Partitions: -2},
	} {
		_, err := source.NewGenerator(cfg)
		assert.Error(t, err, "%+v", cfg)
	}
}
