package progress

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestAttrs(t *testing.T) {
	assert.Equal(t, []any{"done", "25.0%", "eta", 30 * time.Second}, Attrs(0.25, 10*time.Second))
	assert.Equal(t, []any{"done", "100.0%", "eta", time.Duration(0)}, Attrs(1, time.Minute))
	assert.Equal(t, []any{"done", "0.0%"}, Attrs(0, time.Second), "no rate yet: no ETA")
	assert.Equal(t, []any{"done", "99.9%", "eta", 100 * time.Millisecond}, Attrs(0.999, 100*time.Second))
}
