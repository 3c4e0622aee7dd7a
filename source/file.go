package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/stream"
)

// DefaultMaxLine is the longest line File yields whole.
const DefaultMaxLine = 1 << 20

// File is a source of the lines of a file or of standard input, read in
// order without loading the file whole. A record is one line without its
// line ending ("\n" or "\r\n"); its origin is the file's path, its
// partition, and its 1-based line number. Lines are spread over the
// partitions in turn, so that a pipeline can decode them in parallel.
//
// A line longer than the maximum is cut to its first max+1 bytes and the
// rest of it skipped, so that a decoder's length check rejects it as a
// record of its own instead of the reader failing.
//
// Poll reads the input in blocks of 256 KiB straight into the memory its
// lines then point into, on the polling goroutine: a regular file read in
// order is read ahead by the kernel already, and handing lines over from
// a goroutine of its own cost more CPU than the reads it took off the
// pipeline's path (BENCHMARKS.md).
//
// File ends with io.EOF after the last line. Close closes the file.
type File struct {
	name    string
	lines   *blockLines // the reader, split into lines
	closer  *os.File    // opened by OpenFile
	dl      *os.File    // read deadlines work on it
	parts   int
	maxLine int

	line   int64                  // lines Poll yielded
	read   int64                  // bytes up to the end of the last of them
	size   int64                  // of a regular file opened by OpenFile; -1: unknown
	peeked *stream.Record[[]byte] // read by Peek, handed out by the next Poll
	// peekedRead is the read of the peeked line (line is its Offset),
	// counted only once Poll hands it out.
	peekedRead int64
	closed     sync.Once
	isClosed   atomic.Bool // Close was called: Polls fail from then on
	err        error
}

var (
	_ stream.Source[[]byte]    = (*File)(nil)
	_ stream.SourceWideOffsets = (*File)(nil)
)

// FileOption configures a File.
type FileOption interface{ applyFile(*File) }

type fileOptionFunc func(*File)

func (f fileOptionFunc) applyFile(fl *File) { f(fl) }

// Partitions spreads the lines over n partitions (default 1).
func Partitions(n int) FileOption { return fileOptionFunc(func(f *File) { f.parts = n }) }

// MaxLine sets the longest line yielded whole (default DefaultMaxLine).
func MaxLine(n int) FileOption { return fileOptionFunc(func(f *File) { f.maxLine = n }) }

// OpenFile opens path for reading; "-" is standard input, named "stdin".
//
// On Linux, standard input that is a pipe or a terminal is opened anew,
// and one that is a socket duplicated, so that a Poll waiting for input
// returns when its context is done: Go's os.Stdin does not support read
// deadlines. (A socket's duplicate is non-blocking, and so is the socket
// then: read standard input through the File alone.) Elsewhere such a Poll waits
// for the next line or the end of the input.
func OpenFile(path string, opts ...FileOption) (*File, error) {
	name := path
	var f *os.File
	var err error
	if path == "-" {
		name = "stdin"
		if f = reopenStdin(); f == nil {
			return NewFile(name, os.Stdin, opts...)
		}
	} else if f, err = os.Open(path); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	src, err := NewFile(name, f, opts...)
	if err != nil {
		f.Close()
		return nil, err
	}
	src.closer = f
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		src.size = fi.Size()
	}
	return src, nil
}

// OpenFileContext is OpenFile, but an open that waits returns when ctx
// is done, with ctx's error: opening a named pipe (a FIFO) for reading
// waits for a writer to open it.
func OpenFileContext(ctx context.Context, path string, opts ...FileOption) (*File, error) {
	if path == "-" {
		return OpenFile(path, opts...)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		return OpenFile(path, opts...)
	}
	type opened struct {
		f   *File
		err error
	}
	done := make(chan opened, 1)
	go func() {
		f, err := OpenFile(path, opts...)
		done <- opened{f, err}
	}()
	select {
	case o := <-done:
		return o.f, o.err
	case <-ctx.Done():
	}
	// A writer that opens and closes the pipe ends the wait: the open for
	// reading, under way, waits for no one else.
	for {
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		select {
		case o := <-done:
			if o.f != nil {
				o.f.Close()
			}
			return nil, fmt.Errorf("source: open %s: %w", path, context.Cause(ctx))
		case <-time.After(10 * time.Millisecond): // the reader not counted yet
		}
	}
}

// NewFile returns a File reading r, named name in origins and errors. It
// does not close r. When r is an *os.File on which read deadlines work (a
// pipe, a terminal), a Poll waiting for input returns when its context is
// done.
func NewFile(name string, r io.Reader, opts ...FileOption) (*File, error) {
	f := &File{name: name, parts: 1, maxLine: DefaultMaxLine, size: -1}
	for _, o := range opts {
		o.applyFile(f)
	}
	if f.parts < 1 {
		return nil, fmt.Errorf("source: file %s: %d partitions: need at least 1", name, f.parts)
	}
	if f.maxLine < 1 {
		return nil, fmt.Errorf("source: file %s: maximum line %d: need at least 1", name, f.maxLine)
	}
	f.lines = &blockLines{r: r, name: name, parts: f.parts, maxLine: f.maxLine}
	if osf, ok := r.(*os.File); ok && osf.SetReadDeadline(time.Time{}) == nil {
		f.dl = osf
	}
	return f, nil
}

// reopenStdin opens the pipe or terminal of standard input again, or a
// duplicate of its socket, or returns nil. Go makes a file it opens non-blocking and polls it, which
// read deadlines need; it leaves os.Stdin blocking, because the flag
// belongs to the open file, which a terminal shares with the shell. A new
// open has a flag of its own. A regular file is not reopened: it would
// start again at offset 0, and its reads never wait anyway.
func reopenStdin() *os.File {
	if runtime.GOOS != "linux" {
		return nil
	}
	fi, err := os.Stdin.Stat()
	if err != nil || fi.Mode()&(os.ModeNamedPipe|os.ModeCharDevice|os.ModeSocket) == 0 {
		return nil
	}
	rc, err := os.Stdin.SyscallConn() // Fd would make os.Stdin blocking
	if err != nil {
		return nil
	}
	var f *os.File
	rc.Control(func(fd uintptr) {
		if fi.Mode()&os.ModeSocket != 0 {
			// A socket (inetd, a socket-activated service) cannot be
			// opened anew: a duplicate, made non-blocking, is polled.
			f, err = pollableDup(fd, "stdin")
			return
		}
		// O_NONBLOCK: opening a pipe whose writers have all gone must not
		// wait for a new one.
		f, err = os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	})
	if err != nil {
		return nil
	}
	if f.SetReadDeadline(time.Time{}) != nil { // not pollable after all
		f.Close()
		return nil
	}
	return f
}

// Poll implements stream.Source.
func (f *File) Poll(ctx context.Context, buf []stream.Record[[]byte]) (int, error) {
	if f.peeked != nil && len(buf) > 0 {
		buf[0], f.peeked = *f.peeked, nil
		f.line, f.read = buf[0].Origin.Offset, f.peekedRead
		if f.err == io.EOF { // the peeked line was the last
			return 1, io.EOF
		}
		return 1, nil
	}
	return f.poll(ctx, buf)
}

// Peek returns the next line without consuming it: the next Poll yields it
// first, with its origin. It blocks as Poll does, and returns ctx.Err()
// when ctx is done first and io.EOF when no line is left. It lets a program
// look at the first line of its input, to tell the format (see
// score.DetectFormat) or skip a header, before a pipeline reads the rest.
// The line must not be modified.
func (f *File) Peek(ctx context.Context) ([]byte, error) {
	if f.peeked == nil {
		var one [1]stream.Record[[]byte]
		line, read := f.line, f.read
		n, err := f.poll(ctx, one[:])
		if n == 0 {
			return nil, err
		}
		f.peeked, f.peekedRead = &one[0], f.read
		f.line, f.read = line, read // not yielded yet
	}
	return f.peeked.Value, nil
}

func (f *File) poll(ctx context.Context, buf []stream.Record[[]byte]) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if f.isClosed.Load() {
		f.err = fmt.Errorf("source: read %s after line %d: %w", f.name, f.line, os.ErrClosed)
		return 0, f.err
	}
	if f.dl != nil {
		if d, ok := ctx.Deadline(); ok {
			f.dl.SetReadDeadline(d)
		}
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			defer close(fired)
			f.dl.SetReadDeadline(time.Unix(1, 0))
		})
		defer func() {
			// A cancellation that came in time to start the AfterFunc
			// must be over before the deadline is cleared, or its past
			// deadline would outlive this Poll and fail the next one.
			if !stop() {
				<-fired
			}
			f.dl.SetReadDeadline(time.Time{})
		}()
	}
	// Reads that do not wait but bring no line ending (a line that goes
	// on and on, /dev/zero) look at ctx between them.
	f.lines.done = ctx.Done()
	n, err := f.lines.split(buf)
	f.lines.done = nil
	f.line, f.read = f.lines.line, f.lines.read
	switch {
	case err == nil:
		return n, nil
	case err == errSplitStopped:
		if n == 0 {
			return 0, ctx.Err()
		}
		return n, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The start of a line that goes on stays in lines, for the
		// next Poll.
		if n == 0 {
			<-ctx.Done() // due now: the read deadline is ctx's
			return 0, ctx.Err()
		}
		return n, nil
	default: // io.EOF, or the read failed
		f.err = err
		return n, err
	}
}

// SourceWideOffsets reports that a File's offsets, its line numbers, count
// across its partitions (stream.SourceWideOffsets): a state checkpointed
// by a run with some number of partitions resumes the file with another.
func (f *File) SourceWideOffsets() bool { return true }

// Lines returns the number of lines Poll has yielded so far. Like Progress, call it from the goroutine that polls (a
// pipeline's hooks run there).
func (f *File) Lines() int64 { return f.line }

// Progress returns how many bytes of the input were read so far, up to
// the end of the last line Poll yielded, and the
// size of the file when OpenFile opened a regular file (-1 otherwise):
// enough for a progress line with an ETA.
func (f *File) Progress() (read, size int64) { return f.read, f.size }

// Close closes the file opened by OpenFile; a Poll after it fails with an
// error wrapping os.ErrClosed. It is safe to call twice.
func (f *File) Close() error {
	var err error
	f.closed.Do(func() {
		f.isClosed.Store(true)
		if f.closer != nil {
			err = f.closer.Close()
		}
	})
	return err
}
