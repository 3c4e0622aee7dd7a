package source_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// drain polls src until io.EOF with small buffers.
func drain(t *testing.T, src stream.Source[[]byte], bufLen int) []stream.Record[[]byte] {
	t.Helper()
	var out []stream.Record[[]byte]
	buf := make([]stream.Record[[]byte], bufLen)
	for range 100000 {
		n, err := src.Poll(context.Background(), buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
	}
	t.Fatal("no EOF")
	return nil
}

func lines(recs []stream.Record[[]byte]) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Value)
	}
	return out
}

func TestFileLines(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"plain", "a\nbb\nccc\n", []string{"a", "bb", "ccc"}},
		{"no final newline", "a\nbb", []string{"a", "bb"}},
		{"crlf", "a\r\nb\r\n", []string{"a", "b"}},
		{"empty lines kept", "a\n\n\nb\n", []string{"a", "", "", "b"}},
		{"empty file", "", []string{}},
		{"only newline", "\n", []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, bufLen := range []int{1, 2, 100} {
				f, err := source.NewFile("in.txt", strings.NewReader(tc.in))
				require.NoError(t, err)
				recs := drain(t, f, bufLen)
				assert.Equal(t, tc.want, append([]string{}, lines(recs)...))
				for i, r := range recs {
					assert.Equal(t, stream.Origin{Source: "in.txt", Partition: 0, Offset: int64(i + 1)}, r.Origin, "origin is the 1-based line")
				}
			}
		})
	}
}

func TestFileLongLinesAreCut(t *testing.T) {
	long := strings.Repeat("x", 600<<10) // longer than the read buffer
	in := "short\n" + long + "\nafter\n" + strings.Repeat("y", 100) + "\n"
	f, err := source.NewFile("in", strings.NewReader(in), source.MaxLine(50))
	require.NoError(t, err)
	got := lines(drain(t, f, 10))
	require.Len(t, got, 4, "a long line is one record, and reading goes on")
	assert.Equal(t, "short", got[0])
	assert.Equal(t, strings.Repeat("x", 51), got[1], "cut to max+1 bytes")
	assert.Equal(t, "after", got[2])
	assert.Equal(t, strings.Repeat("y", 51), got[3])

	f, err = source.NewFile("in", strings.NewReader(in))
	require.NoError(t, err)
	got = lines(drain(t, f, 10))
	assert.Equal(t, long, got[1], "under the default maximum, long lines come whole")
}

// A line cut for being over-long stays max+1 bytes long, so that it is
// told from a line of max bytes, even when its byte max+1 is a '\r': the
// '\r' of a line ending is removed, not one inside a line.
func TestFileLongLineCutAtCarriageReturn(t *testing.T) {
	const max = 50
	x := strings.Repeat("x", max)
	for name, in := range map[string]string{
		"past a block":   x + "\r" + strings.Repeat("z", 600<<10) + "\r\nafter\r\n",
		"within a block": x + "\rzz\r\nafter\r\n",
		"at the end":     x + "\r" + strings.Repeat("z", 600<<10),
	} {
		t.Run(name, func(t *testing.T) {
			f, err := source.NewFile("in", strings.NewReader(in), source.MaxLine(max))
			require.NoError(t, err)
			got := lines(drain(t, f, 10))
			require.NotEmpty(t, got)
			assert.Equal(t, x+"\r", got[0], "cut to max+1 bytes, the '\\r' kept")
			if len(got) > 1 {
				assert.Equal(t, []string{"after"}, got[1:])
			}
		})
	}
	f, err := source.NewFile("in", strings.NewReader(x+"\r\n"+x+"y\r\n"), source.MaxLine(max))
	require.NoError(t, err)
	assert.Equal(t, []string{x, x + "y"}, lines(drain(t, f, 10)), "a line of max bytes and \"\\r\\n\" is whole; one more byte is over")
}

func TestFilePartitions(t *testing.T) {
	f, err := source.NewFile("in", strings.NewReader("1\n2\n3\n4\n5\n"), source.Partitions(3))
	require.NoError(t, err)
	recs := drain(t, f, 100)
	var parts []int32
	for _, r := range recs {
		parts = append(parts, r.Origin.Partition)
	}
	assert.Equal(t, []int32{0, 1, 2, 0, 1}, parts)
	assert.Equal(t, int64(5), f.Lines())
}

func TestFileOptionsAreValidated(t *testing.T) {
	_, err := source.NewFile("in", strings.NewReader(""), source.Partitions(0))
	assert.ErrorContains(t, err, "in: 0 partitions")
	_, err = source.NewFile("in", strings.NewReader(""), source.MaxLine(0))
	assert.Error(t, err)
	_, err = source.OpenFile(filepath.Join(t.TempDir(), "missing.csv"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestOpenFileAndClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.csv")
	require.NoError(t, os.WriteFile(path, []byte("1,a\n2,b\n"), 0o644))
	f, err := source.OpenFile(path)
	require.NoError(t, err)
	recs := drain(t, f, 10)
	assert.Equal(t, []string{"1,a", "2,b"}, lines(recs))
	assert.Equal(t, path, recs[0].Origin.Source)
	require.NoError(t, f.Close())
	require.NoError(t, f.Close(), "Close twice")
}

func TestFileOnAPipeHonoursTheDeadline(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	f, err := source.NewFile("pipe", r)
	require.NoError(t, err)
	buf := make([]stream.Record[[]byte], 10)

	_, err = w.Write([]byte("one\ntw"))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	n, err := f.Poll(ctx, buf)
	cancel()
	require.NoError(t, err)
	assert.Equal(t, []string{"one"}, lines(buf[:n]))

	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	n, err = f.Poll(ctx, buf)
	cancel()
	assert.Zero(t, n)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "a Poll waiting for input returns at its deadline")
	assert.Less(t, time.Since(start), 5*time.Second)

	_, err = w.Write([]byte("o\nthree\n"))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	recs := drain(t, f, 10)
	assert.Equal(t, []string{"two", "three"}, lines(recs), "the line cut by the deadline is whole")
	assert.Equal(t, int64(3), recs[1].Origin.Offset)
}

func TestFilePeek(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		first    string
		want     []string
	}{
		{"header and rows", "user_id,activity\n1,a\n2,b\n", "user_id,activity", []string{"user_id,activity", "1,a", "2,b"}},
		{"one line without newline", "1,a", "1,a", []string{"1,a"}},
		{"one line", "1,a\n", "1,a", []string{"1,a"}},
		{"empty first line", "\n1,a\n", "", []string{"", "1,a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, bufLen := range []int{1, 3} {
				f, err := source.NewFile("in.csv", strings.NewReader(tc.in), source.Partitions(2))
				require.NoError(t, err)
				for range 2 {
					line, err := f.Peek(context.Background())
					require.NoError(t, err)
					assert.Equal(t, tc.first, string(line), "Peek does not consume")
				}
				recs := drain(t, f, bufLen)
				assert.Equal(t, tc.want, lines(recs), "the peeked line comes first, once")
				for i, r := range recs {
					assert.Equal(t, stream.Origin{Source: "in.csv", Partition: int32(i % 2), Offset: int64(i + 1)}, r.Origin)
				}
			}
		})
	}
}

// A peeked line counts in Lines and Progress once Poll yields it, not
// before, whether the file is read ahead or not.
func TestFilePeekIsNotCounted(t *testing.T) {
	const in = "1,a\n2,b\n"
	path := filepath.Join(t.TempDir(), "in.csv")
	require.NoError(t, os.WriteFile(path, []byte(in), 0o644))
	reader, err := source.NewFile("in.csv", strings.NewReader(in))
	require.NoError(t, err)
	ahead, err := source.OpenFile(path)
	require.NoError(t, err)
	defer ahead.Close()
	for name, f := range map[string]*source.File{"NewFile": reader, "OpenFile": ahead} {
		_, err := f.Peek(context.Background())
		require.NoError(t, err)
		read, _ := f.Progress()
		assert.Equal(t, [2]int64{0, 0}, [2]int64{f.Lines(), read}, "%s: lines and bytes after a Peek", name)
		buf := make([]stream.Record[[]byte], 1)
		_, err = f.Poll(context.Background(), buf)
		require.NoError(t, err)
		read, _ = f.Progress()
		assert.Equal(t, [2]int64{1, 4}, [2]int64{f.Lines(), read}, "%s: after the Poll that yields it", name)
		drain(t, f, 10)
		read, _ = f.Progress()
		assert.Equal(t, [2]int64{2, int64(len(in))}, [2]int64{f.Lines(), read}, "%s: at the end", name)
	}
}

func TestFilePeekThenSkip(t *testing.T) {
	f, err := source.NewFile("in.csv", strings.NewReader("user_id,activity\n1,a\n"))
	require.NoError(t, err)
	line, err := f.Peek(context.Background())
	require.NoError(t, err)
	require.Equal(t, "user_id,activity", string(line))
	one := make([]stream.Record[[]byte], 1)
	n, err := f.Poll(context.Background(), one)
	require.NoError(t, err)
	require.Equal(t, 1, n, "Poll consumes the peeked line")
	recs := drain(t, f, 4)
	assert.Equal(t, []string{"1,a"}, lines(recs))
	assert.Equal(t, int64(2), recs[0].Origin.Offset, "line numbers count the skipped line")
}

func TestFilePeekAtTheEnd(t *testing.T) {
	f, err := source.NewFile("empty", strings.NewReader(""))
	require.NoError(t, err)
	_, err = f.Peek(context.Background())
	assert.ErrorIs(t, err, io.EOF)
	n, err := f.Poll(context.Background(), make([]stream.Record[[]byte], 1))
	assert.Zero(t, n)
	assert.ErrorIs(t, err, io.EOF)
}

func TestFilePeekOnAPipeHonoursTheContext(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	f, err := source.NewFile("pipe", r)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = f.Peek(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "a Peek waiting for input returns when ctx is done")

	_, err = w.Write([]byte("{\"user_id\":1}\n"))
	require.NoError(t, err)
	line, err := f.Peek(context.Background())
	require.NoError(t, err)
	assert.Equal(t, `{"user_id":1}`, string(line))
}

func TestOpenFileStdinOnAPipeHonoursTheContext(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("standard input is reopened on Linux only")
	}
	for _, tc := range []struct {
		name        string
		closeBefore bool
	}{
		{"writer open", false},
		{"writer gone before the open", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A blocking pipe, as a shell gives: os.NewFile does not poll
			// it, and deadlines on it fail, as on the real os.Stdin.
			var fds [2]int
			require.NoError(t, syscall.Pipe(fds[:]))
			r, w := os.NewFile(uintptr(fds[0]), "stdin pipe"), os.NewFile(uintptr(fds[1]), "stdin pipe writer")
			defer r.Close()
			defer w.Close()
			require.Error(t, r.SetReadDeadline(time.Time{}), "the test's pipe is like os.Stdin")
			stdin := os.Stdin
			os.Stdin = r
			defer func() { os.Stdin = stdin }()
			_, err := w.Write([]byte("one\n"))
			require.NoError(t, err)
			if tc.closeBefore {
				require.NoError(t, w.Close())
			}

			f, err := source.OpenFile("-")
			require.NoError(t, err)
			defer f.Close()
			buf := make([]stream.Record[[]byte], 10)
			n, err := f.Poll(context.Background(), buf[:1])
			require.Equal(t, 1, n)
			require.True(t, err == nil || err == io.EOF, "err %v", err)
			assert.Equal(t, "one", string(buf[0].Value))
			assert.Equal(t, "stdin", buf[0].Origin.Source)
			if tc.closeBefore {
				n, err = f.Poll(context.Background(), buf)
				assert.Zero(t, n)
				assert.ErrorIs(t, err, io.EOF)
				return
			}

			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			done := make(chan struct{})
			go func() {
				defer close(done)
				n, err = f.Poll(ctx, buf)
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				w.Close() // ends the Poll
				<-done
				t.Fatal("a Poll waiting for input does not return when its context is cancelled")
			}
			assert.Zero(t, n)
			assert.ErrorIs(t, err, context.Canceled)

			_, err = w.Write([]byte("two\n"))
			require.NoError(t, err)
			require.NoError(t, w.Close())
			assert.Equal(t, []string{"two"}, lines(drain(t, f, 10)))
		})
	}
}

func TestFileProgress(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.csv")
	data := []byte("1,a\n22,bb\r\n333,ccc") // no newline at the end
	require.NoError(t, os.WriteFile(path, data, 0o644))
	f, err := source.OpenFile(path)
	require.NoError(t, err)
	defer f.Close()
	read, size := f.Progress()
	assert.Equal(t, [2]int64{0, int64(len(data))}, [2]int64{read, size})
	buf := make([]stream.Record[[]byte], 1)
	_, err = f.Poll(context.Background(), buf)
	require.NoError(t, err)
	read, _ = f.Progress()
	assert.Equal(t, int64(4), read, "the first line and its newline")
	drain(t, f, 10)
	read, _ = f.Progress()
	assert.Equal(t, int64(len(data)), read)

	r, err := source.NewFile("mem", strings.NewReader("x\n"))
	require.NoError(t, err)
	_, size = r.Progress()
	assert.Equal(t, int64(-1), size, "a reader has no known size")
}
