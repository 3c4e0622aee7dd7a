package checkpoint

import "time"

// SetLoadProgressEvery sets how often a load logs its progress, and
// returns a function that sets it back.
func SetLoadProgressEvery(d time.Duration) (restore func()) {
	old := loadProgressEvery
	loadProgressEvery = d
	return func() { loadProgressEvery = old }
}

// MaxChain is how many files the chain holds at most.
const MaxChain = maxChain
