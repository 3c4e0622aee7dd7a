package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/digest"
)

// A kept sketch follows the changes it is told, stops at the first it
// cannot hold, and is copied, never written, to be merged into.
func TestKeptSketch(t *testing.T) {
	k := &keptSketches[*digest.Counts]{newSketch: func() (*digest.Counts, error) { return digest.NewCounts(), nil }, parts: map[int32]*keptSketch[*digest.Counts]{}}
	obs := k.observer(3)
	ks := k.of(3)
	require.NotNil(t, ks)
	obs.Changed(1, 0, false, 5, true) // new user
	obs.Changed(2, 0, false, 5, true) // new user
	obs.Changed(1, 5, true, 9, true)  // update
	obs.Changed(2, 5, true, 5, true)  // update to the same total
	obs.Changed(3, 0, false, 2, true) // new user
	obs.Changed(3, 2, true, 0, false) // removed
	require.NoError(t, ks.err)
	assert.Equal(t, uint64(2), ks.sketch.Count())
	assert.Equal(t, uint64(1), ks.sketch.CountOf(5))
	assert.Equal(t, uint64(1), ks.sketch.CountOf(9))

	own, err := ownSketch(partial[*digest.Counts]{sketch: ks.sketch, kept: true}, k.newSketch)
	require.NoError(t, err)
	require.NoError(t, own.AddInt(100))
	assert.Equal(t, uint64(2), ks.sketch.Count(), "the kept sketch is not merged into")
	assert.Equal(t, uint64(3), own.Count())

	obs.Changed(4, 0, false, digest.MaxExactInt+1, true)
	require.ErrorIs(t, ks.err, digest.ErrInvalidValue)
	assert.Contains(t, ks.err.Error(), "user 4")
	obs.Changed(1, 9, true, 10, true)
	assert.Equal(t, uint64(1), ks.sketch.CountOf(9), "nothing more is kept after an error")
}
