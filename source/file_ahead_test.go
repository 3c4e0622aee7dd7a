package source_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// aheadInput is a file of many lines, with CRLF endings, empty lines,
// lines over maxLine and no newline at the end.
func aheadInput(lines, maxLine int) []byte {
	rng := rand.New(rand.NewPCG(7, 8))
	var b bytes.Buffer
	for i := range lines {
		switch rng.IntN(20) {
		case 0:
			b.WriteString(strings.Repeat("x", maxLine+rng.IntN(3*maxLine)))
		case 1: // empty
		default:
			fmt.Fprintf(&b, "%d,profile.view", 1000+i)
		}
		if rng.IntN(5) == 0 {
			b.WriteByte('\r')
		}
		b.WriteByte('\n')
	}
	b.WriteString("last,no newline")
	return b.Bytes()
}

// A regular file is read ahead, by another goroutine: what Poll yields,
// and Progress and Lines after every Poll, are what reading the same bytes
// in the polling goroutine gives, whatever the buffer sizes.
func TestFileReadAheadMatchesReading(t *testing.T) {
	const maxLine = 100
	for _, in := range []struct {
		name  string
		data  []byte
		lines int
	}{
		{"mixed", aheadInput(30_000, maxLine), 30_001},
		{"empty", nil, 0},
		{"one buffer read ahead, exactly", bytes.Repeat([]byte("1,a\n"), 4096), 4096},
		{"two, exactly", bytes.Repeat([]byte("1,a\n"), 2*4096), 2 * 4096},
	} {
		t.Run(in.name, func(t *testing.T) {
			testReadAhead(t, in.data, in.lines, maxLine)
		})
	}
	t.Run("lines longer than a block, and than the maximum", func(t *testing.T) {
		const max = source.DefaultMaxLine
		var b bytes.Buffer
		sizes := []int{300 << 10, max - 1, max, max + 1, max + 2, 2*max + 5, 10, 700 << 10}
		for i, size := range sizes {
			b.WriteString("1,")
			b.Write(bytes.Repeat([]byte{'a' + byte(i)}, size-2))
			if i%2 == 1 {
				b.WriteByte('\r')
			}
			b.WriteString("\n2,b\n")
		}
		// The maximum and "\r\n", where the line is held past the
		// maximum, is a line of the maximum.
		b.Write(bytes.Repeat([]byte("m"), max))
		b.WriteString("\r\n")
		b.Write(bytes.Repeat([]byte("z"), max+7)) // over the maximum, at the end
		testReadAhead(t, b.Bytes(), 2*len(sizes)+2, max)
	})
}

func testReadAhead(t *testing.T, data []byte, lines, maxLine int) {
	path := filepath.Join(t.TempDir(), "events.csv")
	require.NoError(t, os.WriteFile(path, data, 0o644))
	for _, bufLen := range []int{1, 7, 4096, 10_000} {
		t.Run(fmt.Sprint(bufLen), func(t *testing.T) {
			ahead, err := source.OpenFile(path, source.MaxLine(maxLine), source.Partitions(3))
			require.NoError(t, err)
			defer ahead.Close()
			inPlace, err := source.NewFile(path, bytes.NewReader(data), source.MaxLine(maxLine), source.Partitions(3))
			require.NoError(t, err)

			a, b := make([]stream.Record[[]byte], bufLen), make([]stream.Record[[]byte], bufLen)
			total := 0
			for polls := 0; ; polls++ {
				require.Less(t, polls, 100_000, "no EOF")
				na, errA := ahead.Poll(context.Background(), a)
				nb, errB := inPlace.Poll(context.Background(), b)
				require.Equal(t, nb, na, "poll %d", polls)
				require.Equal(t, errB, errA, "poll %d", polls)
				for i := range na {
					require.Equal(t, string(b[i].Value), string(a[i].Value), "line %d", total+i+1)
					require.Equal(t, b[i].Origin, a[i].Origin, "line %d", total+i+1)
				}
				total += na
				readA, sizeA := ahead.Progress()
				readB, _ := inPlace.Progress()
				require.Equal(t, readB, readA, "after line %d", total)
				require.Equal(t, int64(len(data)), sizeA)
				require.Equal(t, inPlace.Lines(), ahead.Lines())
				if errA == io.EOF {
					break
				}
			}
			assert.Equal(t, lines, total)
			n, err := ahead.Poll(context.Background(), a)
			assert.Zero(t, n)
			assert.Equal(t, io.EOF, err, "after the end, still the end")
		})
	}
}

// Close stops the goroutine that reads ahead, however far it got, and a
// Poll after it fails at once.
func TestFileCloseStopsReadingAhead(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	path := filepath.Join(t.TempDir(), "events.csv")
	require.NoError(t, os.WriteFile(path, aheadInput(100_000, 100), 0o644))
	f, err := source.OpenFile(path)
	require.NoError(t, err)
	buf := make([]stream.Record[[]byte], 10)
	n, err := f.Poll(context.Background(), buf)
	require.NoError(t, err)
	require.Equal(t, 10, n)
	require.NoError(t, f.Close())
	n, err = f.Poll(context.Background(), buf)
	assert.Zero(t, n)
	assert.True(t, errors.Is(err, os.ErrClosed), "%v", err)
}

// A File dropped without Close, its goroutine waiting to hand over the
// lines it read ahead, is collected, and the goroutine stopped.
func TestFileDroppedStopsReadingAhead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.csv")
	require.NoError(t, os.WriteFile(path, aheadInput(100_000, 100), 0o644))
	before := goleak.IgnoreCurrent()
	func() {
		f, err := source.OpenFile(path)
		require.NoError(t, err)
		n, err := f.Poll(context.Background(), make([]stream.Record[[]byte], 10))
		require.NoError(t, err)
		require.Equal(t, 10, n)
	}()
	var err error
	for range 5 { // a collection may miss the File, if a register still held it
		runtime.GC() // collects the File; its cleanup runs after
		if err = goleak.Find(before); err == nil {
			return
		}
	}
	t.Fatalf("a dropped File still reads ahead: %v", err)
}

// openRows opens a file of n CSV rows with OpenFile, closed at the end of
// the test.
func openRows(t *testing.T, n int) *source.File {
	t.Helper()
	var in bytes.Buffer
	for i := range n {
		fmt.Fprintf(&in, "%d,profile.view\n", i+1)
	}
	path := filepath.Join(t.TempDir(), "events.csv")
	require.NoError(t, os.WriteFile(path, in.Bytes(), 0o644))
	f, err := source.OpenFile(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

// A Poll whose context ends as it waits for the next buffer read ahead,
// having used up the one before, leaves the File as it was: the next Poll
// goes on from there. (The engine polls with buffers of the read-ahead's
// size, so its Polls end on a buffer's end, and with an interval each has
// a deadline.)
func TestFileReadAheadCancelledAtTheEndOfABuffer(t *testing.T) {
	const total = 200_000
	f := openRows(t, total)

	buf := make([]stream.Record[[]byte], 4096) // a buffer read ahead
	var got []stream.Record[[]byte]
	n, err := f.Poll(context.Background(), buf)
	require.NoError(t, err)
	got = append(got, buf[:n]...)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		n, err := f.Poll(cancelled, buf)
		got = append(got, buf[:n]...)
		if errors.Is(err, context.Canceled) {
			break
		}
		require.NoError(t, err)
	}
	for {
		n, err := f.Poll(context.Background(), buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	require.Len(t, got, total)
	for i, r := range got {
		if r.Origin.Offset != int64(i+1) {
			t.Fatalf("record %d is line %d", i, r.Origin.Offset)
		}
	}
}

// A pipeline cutting batches on an interval over a regular file reads it
// whole: its Polls end on deadlines, at buffer ends among others.
func TestPipelineWithAnIntervalReadsAFileWhole(t *testing.T) {
	const total = 500_000
	f := openRows(t, total)
	p := stream.NewPipeline(stream.Interval(100 * time.Microsecond))
	got := 0
	stream.ForEachBatch(stream.From(p, f), func(_ context.Context, b *stream.Batch[[]byte]) error {
		got += b.Len()
		return nil
	})
	require.NoError(t, p.Run(context.Background()))
	assert.Equal(t, total, got)
}

// A Poll whose context ends while it waits for lines returns those it has.
func TestFileReadAheadCancelled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.csv")
	require.NoError(t, os.WriteFile(path, aheadInput(1000, 100), 0o644))
	f, err := source.OpenFile(path)
	require.NoError(t, err)
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := f.Poll(ctx, make([]stream.Record[[]byte], 10))
	if n == 0 {
		assert.ErrorIs(t, err, context.Canceled)
	}
	recs := drain(t, f, 100)
	assert.Equal(t, 1001, n+len(recs), "no line lost to the cancelled Poll")
}

// A Close from another goroutine ends a Poll waiting for lines read ahead,
// whether it comes before the Poll, while it waits, or after the end.
func TestFileCloseWhilePolling(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	path := filepath.Join(t.TempDir(), "events.csv")
	require.NoError(t, os.WriteFile(path, aheadInput(50_000, 100), 0o644))
	for i := range 40 {
		f, err := source.OpenFile(path)
		require.NoError(t, err)
		_, err = f.Poll(context.Background(), make([]stream.Record[[]byte], 1))
		require.NoError(t, err)
		done := make(chan error)
		go func() {
			// More than the file holds: only the end or Close returns it.
			_, err := f.Poll(context.Background(), make([]stream.Record[[]byte], 100_000))
			done <- err
		}()
		time.Sleep(time.Duration(i) * 100 * time.Microsecond)
		require.NoError(t, f.Close())
		select {
		case err := <-done:
			if err != io.EOF { // the whole file may have come first
				assert.ErrorIs(t, err, os.ErrClosed)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Poll still waiting after Close, %d µs after it began", i*100)
		}
	}
}
