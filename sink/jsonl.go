package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/sluicehq/sluice/stream"
)

// JSONLines writes values as JSON, one per line, to a file or any writer
// (standard output for a console). A batch is done when its lines are
// written, in one write, and, for a regular file it opened, synced to disk. A
// write that fails part way leaves its last line cut short; the next Write
// ends that line before its own, as AppendJSONLines does with a file.
//
// JSONLines is safe for concurrent use; Close is safe to call twice.
type JSONLines[T any] struct {
	mu     sync.Mutex
	name   string
	w      io.Writer
	file   *os.File // opened by CreateJSONLines or AppendJSONLines
	sync   bool     // file is a regular file: a device or a pipe has no Sync
	encode func(dst []byte, v T) ([]byte, error)
	buf    []byte
	// cut is set when a failed write left a line without its end: the
	// next Write ends it first, so that its own lines stay whole.
	cut    bool
	closed bool
}

var _ stream.Sink[int] = (*JSONLines[int])(nil)

// JSONOption configures a JSONLines sink.
type JSONOption[T any] func(*JSONLines[T])

// Encoder sets how a value becomes its line (without the newline); the
// default is encoding/json. It must append to dst and return it.
func Encoder[T any](f func(dst []byte, v T) ([]byte, error)) JSONOption[T] {
	return func(j *JSONLines[T]) { j.encode = f }
}

// NewJSONLines returns a sink writing to w, named name in errors. It does
// not close w.
func NewJSONLines[T any](name string, w io.Writer, opts ...JSONOption[T]) *JSONLines[T] {
	j := &JSONLines[T]{name: name, w: w, encode: appendJSON[T]}
	for _, o := range opts {
		o(j)
	}
	return j
}

// CreateJSONLines creates (or truncates) the file at path and returns a
// sink writing to it. The path may also name a device or a pipe, such as
// /dev/stdout, which is written to but not synced. Close closes the file.
func CreateJSONLines[T any](path string, opts ...JSONOption[T]) (*JSONLines[T], error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	return fileJSONLines(path, f, opts)
}

// fileJSONLines returns a sink writing to f, which it closes.
func fileJSONLines[T any](path string, f *os.File, opts []JSONOption[T]) (*JSONLines[T], error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("sink: %w", err)
	}
	j := NewJSONLines(path, f, opts...)
	j.file, j.sync = f, fi.Mode().IsRegular()
	return j, nil
}

// AppendJSONLines opens the file at path, creating it if need be, and
// returns a sink appending to it: the lines already there are kept. A last
// line left without its line ending (a write cut short) is ended first, so
// that the lines after it stay whole. Close closes the file.
func AppendJSONLines[T any](path string, opts ...JSONOption[T]) (*JSONLines[T], error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	if err := endLastLine(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("sink: %s: %w", path, err)
	}
	return fileJSONLines(path, f, opts)
}

// endLastLine writes a line ending to f, opened to append, when its last
// byte is not one.
func endLastLine(f *os.File) error {
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 || !fi.Mode().IsRegular() {
		return err
	}
	r, err := os.Open(f.Name())
	if err != nil {
		return err
	}
	defer r.Close()
	last := make([]byte, 1)
	if _, err := r.ReadAt(last, fi.Size()-1); err != nil {
		return err
	}
	if last[0] != '\n' {
		_, err = f.Write([]byte{'\n'})
	}
	return err
}

func appendJSON[T any](dst []byte, v T) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(dst, b...), err
}

// Write implements stream.Sink: the batch's lines, written in one write
// (and synced, for a regular file the sink opened) together, or none of them when a
// value does not encode.
func (j *JSONLines[T]) Write(_ context.Context, b *stream.Batch[T]) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return fmt.Errorf("sink: %s: write after close", j.name)
	}
	// The whole batch is encoded before any of it is written: a value
	// that does not encode fails the Write with nothing of the batch out.
	j.buf = j.buf[:0]
	if j.cut {
		j.buf = append(j.buf, '\n')
	}
	for i := range b.Partitions {
		p := &b.Partitions[i]
		for k, v := range p.Values {
			var err error
			j.buf, err = j.encode(j.buf, v)
			if err != nil {
				if o := p.Origin(k); o != (stream.Origin{}) {
					return fmt.Errorf("sink: %s: encode value from %s: %w", j.name, o, err)
				}
				// An aggregate's value comes from no one record.
				return fmt.Errorf("sink: %s: encode value %d of partition %d (no origin): %w", j.name, k, p.ID, err)
			}
			j.buf = append(j.buf, '\n')
		}
	}
	// One write, with no buffer in between: a buffered writer keeps its
	// first error and fails every later write with it, and would write the
	// failed batch's lines again after the next batch's.
	n, err := j.w.Write(j.buf)
	if err == nil && n < len(j.buf) {
		err = io.ErrShortWrite
	}
	if n > 0 {
		j.cut = j.buf[n-1] != '\n'
	}
	if len(j.buf) > 1<<20 {
		j.buf = nil // not kept for the next batch
	}
	if err != nil {
		return fmt.Errorf("sink: %s: %w", j.name, err)
	}
	if j.sync {
		if err := j.file.Sync(); err != nil {
			return fmt.Errorf("sink: %s: %w", j.name, err)
		}
	}
	return nil
}

// Close closes the file CreateJSONLines or AppendJSONLines opened. Write
// keeps nothing buffered, so there is nothing to flush.
func (j *JSONLines[T]) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed || j.file == nil {
		j.closed = true
		return nil
	}
	j.closed = true
	if err := j.file.Close(); err != nil {
		return fmt.Errorf("sink: %s: %w", j.name, err)
	}
	return nil
}
