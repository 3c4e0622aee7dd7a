// Package progress formats how far long work is, for the progress lines
// of restores and of large input files.
package progress

import (
	"fmt"
	"time"
)

// Attrs returns the log attributes of work done share (in (0, 1]) of the
// way after elapsed: "done", a percentage, and "eta", the time left at the
// rate so far. With nothing done yet, it says "done" alone.
func Attrs(share float64, elapsed time.Duration) []any {
	done := fmt.Sprintf("%.1f%%", 100*share)
	if share <= 0 {
		return []any{"done", done}
	}
	eta := time.Duration(float64(elapsed) * (1 - share) / share)
	return []any{"done", done, "eta", eta.Round(100 * time.Millisecond)}
}
