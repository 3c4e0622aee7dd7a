//go:build unix

package source_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// Opening a named pipe waits for a writer: OpenFileContext gives up when
// its context is done, and otherwise reads what the writer writes.
func TestOpenFileContextOfANamedPipe(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "events")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	f, err := source.OpenFileContext(ctx, fifo)
	assert.Nil(t, f)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "source: open "+fifo)
	assert.Less(t, time.Since(start), 5*time.Second, "no writer came, yet the open returned")

	wrote := make(chan error, 1)
	go func() {
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			_, err = w.WriteString("1001,profile.view\n")
			err = errors.Join(err, w.Close())
		}
		wrote <- err
	}()
	f, err = source.OpenFileContext(context.Background(), fifo)
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, []string{"1001,profile.view"}, readToEnd(t, f))
	require.NoError(t, <-wrote)
}

// readToEnd returns the lines f yields up to io.EOF.
func readToEnd(t *testing.T, f *source.File) []string {
	t.Helper()
	var lines []string
	buf := make([]stream.Record[[]byte], 4)
	for {
		n, err := f.Poll(context.Background(), buf)
		for _, r := range buf[:n] {
			lines = append(lines, string(r.Value))
		}
		if errors.Is(err, io.EOF) {
			return lines
		}
		require.NoError(t, err)
	}
}

// endless reads 'x' forever, never a line ending, and never waits: as
// /dev/zero does.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// A Poll of an input whose reads never wait but bring no line ending
// returns when its context is done, instead of reading on for good; the
// line, over the maximum, is still cut and its rest skipped.
func TestPollOfALineWithoutEndReturnsOnCancel(t *testing.T) {
	f, err := source.NewFile("zero", endless{}, source.MaxLine(1<<10))
	require.NoError(t, err)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := f.Poll(ctx, make([]stream.Record[[]byte], 4))
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(10 * time.Second):
		t.Fatal("Poll still reading 10s after its context was done")
	}
}

// Standard input that is a socket (inetd, a socket-activated service) is
// read through a pollable duplicate: a Poll waiting for input returns when
// its context is done, then reads what comes, and the end of the input.
func TestOpenFileStdinSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("standard input is opened anew on Linux alone")
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	require.NoError(t, err)
	in, out := os.NewFile(uintptr(fds[0]), "in"), os.NewFile(uintptr(fds[1]), "out")
	defer in.Close()
	old := os.Stdin
	os.Stdin = in
	defer func() { os.Stdin = old }()
	f, err := source.OpenFile("-")
	require.NoError(t, err)
	defer f.Close()

	buf := make([]stream.Record[[]byte], 4)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := f.Poll(ctx, buf)
		done <- err
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(10 * time.Second):
		out.Close() // lets the Poll end
		t.Fatal("Poll still waiting 10s after its context was done")
	}

	_, err = out.WriteString("1001,profile.view\n")
	require.NoError(t, err)
	require.NoError(t, out.Close())
	assert.Equal(t, []string{"1001,profile.view"}, readToEnd(t, f))
}
