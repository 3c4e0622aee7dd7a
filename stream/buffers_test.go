package stream

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// Reused buffers are cleared for the garbage collector only when their
// values may hold pointers: a type that holds one must never be taken for
// one that does not.
func TestHoldsPointers(t *testing.T) {
	type flat struct {
		A int64
		B [2]float64
		C bool
	}
	type nested struct {
		F flat
		S string
	}
	assert.False(t, holdsPointers[int64]())
	assert.False(t, holdsPointers[Pair[int64, int64]]())
	assert.False(t, holdsPointers[flat]())
	assert.False(t, holdsPointers[[0]*int]())
	assert.False(t, holdsPointers[complex128]())

	assert.True(t, holdsPointers[string]())
	assert.True(t, holdsPointers[*int]())
	assert.True(t, holdsPointers[[]int]())
	assert.True(t, holdsPointers[map[int]int]())
	assert.True(t, holdsPointers[any]())
	assert.True(t, holdsPointers[func()]())
	assert.True(t, holdsPointers[chan int]())
	assert.True(t, holdsPointers[nested]())
	assert.True(t, holdsPointers[[3]nested]())
	assert.True(t, holdsPointers[Pair[string, int64]]())
	assert.True(t, holdsPointers[Failure[int]]())
}
