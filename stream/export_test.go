package stream

import "hash/maphash"

// NewProcessSeed gives the hash of keys that have no fixed one (hashed
// with a seed of the process) the seed of another process, as a restart
// does, and returns a function that puts the seed back.
func NewProcessSeed() (restore func()) {
	old := processSeed
	processSeed = maphash.MakeSeed()
	return func() { processSeed = old }
}
