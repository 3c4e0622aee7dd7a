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
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// mixedLines is a file of many lines, with CRLF endings, empty lines,
// lines over maxLine and no newline at the end.
func mixedLines(lines, maxLine int) []byte {
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

// What Poll yields, and Progress and Lines after every Poll, are what a
// plain split of the input on '\n' gives, whatever the buffer sizes and
// however the reads of the input fall: a file opened by OpenFile, and a
// reader that returns half of what is asked.
func TestFileLinesMatchASplit(t *testing.T) {
	const maxLine = 100
	for _, in := range []struct {
		name  string
		data  []byte
		lines int
	}{
		{"mixed", mixedLines(30_000, maxLine), 30_001},
		{"empty", nil, 0},
		{"one block, exactly", bytes.Repeat([]byte("1,a\n"), 256<<10/4), 256 << 10 / 4},
		{"two, exactly", bytes.Repeat([]byte("1,a\n"), 2*256<<10/4), 2 * 256 << 10 / 4},
	} {
		t.Run(in.name, func(t *testing.T) {
			testLines(t, in.data, in.lines, maxLine)
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
		testLines(t, b.Bytes(), 2*len(sizes)+2, max)
	})
}

// testLines checks a File's lines of data against splitLines, over both
// readers and several buffer sizes.
func testLines(t *testing.T, data []byte, lines, maxLine int) {
	path := filepath.Join(t.TempDir(), "events.csv")
	require.NoError(t, os.WriteFile(path, data, 0o644))
	want, ends := splitLines(data, maxLine)
	require.Len(t, want, lines)
	for _, bufLen := range []int{1, 7, 4096, 10_000} {
		for _, reader := range []string{"OpenFile", "half reads"} {
			t.Run(fmt.Sprint(reader, " ", bufLen), func(t *testing.T) {
				var f *source.File
				var err error
				if reader == "OpenFile" {
					f, err = source.OpenFile(path, source.MaxLine(maxLine), source.Partitions(3))
				} else {
					f, err = source.NewFile(path, iotest.HalfReader(bytes.NewReader(data)), source.MaxLine(maxLine), source.Partitions(3))
				}
				require.NoError(t, err)
				defer f.Close()

				buf := make([]stream.Record[[]byte], bufLen)
				total := 0
				for polls := 0; ; polls++ {
					require.Less(t, polls, 2*len(data)+2, "no EOF")
					n, err := f.Poll(context.Background(), buf)
					for i, r := range buf[:n] {
						line := total + i
						require.Less(t, line, len(want), "more lines than the input has")
						require.Equal(t, want[line], string(r.Value), "line %d", line+1)
						require.Equal(t, stream.Origin{Source: path, Partition: int32(line % 3), Offset: int64(line + 1)}, r.Origin, "line %d", line+1)
					}
					total += n
					read, size := f.Progress()
					if total > 0 {
						require.Equal(t, ends[total-1], read, "after line %d", total)
					}
					require.Equal(t, int64(total), f.Lines())
					if reader == "OpenFile" {
						require.Equal(t, int64(len(data)), size)
					}
					if err == io.EOF {
						break
					}
					require.NoError(t, err)
				}
				assert.Equal(t, lines, total)
				n, err := f.Poll(context.Background(), buf)
				assert.Zero(t, n)
				assert.Equal(t, io.EOF, err, "after the end, still the end")
			})
		}
	}
}

// splitLines is what a File must yield of data: its lines split on '\n',
// less a '\r' at their end, a line over maxLine bytes cut to its first
// maxLine+1; and the bytes up to the end of each.
func splitLines(data []byte, maxLine int) (lines []string, ends []int64) {
	end := int64(0)
	for i, line := range bytes.Split(data, []byte("\n")) {
		last := i == bytes.Count(data, []byte("\n"))
		if last && len(line) == 0 {
			break
		}
		end += int64(len(line))
		if !last {
			end++
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > maxLine {
			line = line[:maxLine+1]
		}
		lines, ends = append(lines, string(line)), append(ends, end)
	}
	return lines, ends
}

// A Poll after Close fails at once.
func TestFilePollAfterCloseFails(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	path := filepath.Join(t.TempDir(), "events.csv")
	require.NoError(t, os.WriteFile(path, mixedLines(100_000, 100), 0o644))
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

// A Poll whose context has ended leaves the File as it was, or yields
// lines: the next Poll goes on from there, and no line is lost. (With an
// interval, each of the engine's Polls has a deadline.)
func TestFileCancelledPollsLoseNoLine(t *testing.T) {
	const total = 200_000
	f := openRows(t, total)

	buf := make([]stream.Record[[]byte], 4096)
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

// A Poll whose context has ended returns the lines it has, if any.
func TestFileCancelledPoll(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.csv")
	require.NoError(t, os.WriteFile(path, mixedLines(1000, 100), 0o644))
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

// A Close from another goroutine ends a Poll reading a file, whether it
// comes before the Poll, while it reads, or after the end.
func TestFileCloseWhilePolling(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	path := filepath.Join(t.TempDir(), "events.csv")
	require.NoError(t, os.WriteFile(path, mixedLines(50_000, 100), 0o644))
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
