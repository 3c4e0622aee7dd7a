//go:build race

package digest

// raceEnabled lets the slowest tests do less under the race detector,
// which slows this package's loops tenfold.
const raceEnabled = true
