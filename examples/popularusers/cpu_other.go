//go:build !unix

package main

import "time"

// processCPU returns 0 where getrusage is not available: the bench's
// cores are then 0.
func processCPU() time.Duration { return 0 }
