package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/stream"
)

// fakeFile is an input whose progress the test sets.
type fakeFile struct{ read, size int64 }

func (f *fakeFile) Progress() (int64, int64) { return f.read, f.size }

func TestProgressLine(t *testing.T) {
	var log buffer
	f := &fakeFile{size: 1000}
	p := newFileProgress(f, testLogger(&log))
	p.every = 0 // a line per batch
	p.start = time.Now().Add(-10 * time.Second)

	f.read = 250
	p.BatchDone(stream.BatchStats{Info: stream.Info{Records: 5000}})
	lines := log.lines()
	require.Len(t, lines, 1)
	assert.Contains(t, lines[0], "msg=progress records=5000")
	assert.Contains(t, lines[0], "done=25.0%")
	assert.Contains(t, lines[0], "eta=30s", "a quarter in 10s: three quarters in 30s more")
	assert.Regexp(t, `records/s=(499|500) `, lines[0])

	f.size = -1 // standard input: no size, no ETA
	p.BatchDone(stream.BatchStats{Info: stream.Info{Records: 5000}})
	lines = log.lines()
	require.Len(t, lines, 2)
	assert.Contains(t, lines[1], "records=10000")
	assert.False(t, strings.Contains(lines[1], "eta="), lines[1])

	p.every = time.Hour
	p.BatchDone(stream.BatchStats{Info: stream.Info{Records: 1}})
	assert.Len(t, log.lines(), 2, "at most one line per interval")
}
