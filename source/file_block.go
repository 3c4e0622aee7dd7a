package source

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/sluicehq/sluice/stream"
)

// blockSize is the size of the blocks a file is read in.
const blockSize = 256 << 10

// blockLines splits File's input into lines: it reads the input in blocks
// straight into the memory the lines then point into, so that a line is
// not copied once read, and finds the lines with one search for '\n' each.
// A block is never written again once lines point into it; the start of a
// line that goes on past a block is copied to the next one.
type blockLines struct {
	r       io.Reader
	name    string
	parts   int
	maxLine int

	line  int64  // lines split
	part  int32  // the partition of the next line: lines go to the partitions in turn
	read  int64  // bytes split, up to the end of the last line
	block []byte // read so far into the current block, up to its cap
	start int    // the first byte of block not split yet
	cut   []byte // of a line over maxLine: its first maxLine+1 bytes, while the rest of it is skipped
	eof   bool
	done  <-chan struct{} // if set, split stops between reads once it is closed
}

// errSplitStopped is split's error when done was closed.
var errSplitStopped = errors.New("source: split stopped")

// split fills recs with the next lines. It returns io.EOF with the last
// line, and a read's error (a deadline's too) wrapped, after the lines
// before it; after a deadline, the next split goes on where it stopped.
func (b *blockLines) split(recs []stream.Record[[]byte]) (int, error) {
	n := 0
	for n < len(recs) {
		rest := b.block[b.start:]
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			b.start += i + 1
			b.read += int64(i + 1)
			line, cut := rest[:i:i], b.cut != nil
			if cut {
				line, b.cut = b.cut, nil
			}
			b.emit(recs, n, line, cut)
			n++
			continue
		}
		if b.eof {
			b.start = len(b.block)
			b.read += int64(len(rest))
			cut := b.cut != nil
			if cut {
				rest, b.cut = b.cut, nil
			} else if len(rest) == 0 {
				return n, io.EOF
			}
			b.emit(recs, n, rest, cut)
			return n + 1, io.EOF
		}
		// No end of line in what is read: a line that goes on. Past
		// maxLine+1 bytes (one more for a "\r" before its '\n'), keep its
		// cut and skip the rest.
		if b.cut == nil && len(rest) > b.maxLine+1 {
			b.cut = rest[: b.maxLine+1 : b.maxLine+1]
		}
		if b.cut != nil {
			b.start = len(b.block)
			b.read += int64(len(rest))
		}
		if b.done != nil {
			select {
			case <-b.done:
				return n, errSplitStopped
			default:
			}
		}
		if err := b.fill(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// emit makes recs[n] the record of a line without its line ending, or of
// the cut of an over-long one (cut). A '\r' that ends a line is removed,
// so that a line of maxLine bytes and "\r\n" is yielded whole; a cut
// keeps its maxLine+1 bytes whatever the last one is, so that it is
// always seen as over-long.
func (b *blockLines) emit(recs []stream.Record[[]byte], n int, line []byte, cut bool) {
	b.line++
	part := b.part
	if b.part++; int(b.part) == b.parts {
		b.part = 0
	}
	if k := len(line); k > 0 && line[k-1] == '\r' && !cut {
		line = line[: k-1 : k-1]
	}
	if len(line) > b.maxLine {
		line = line[: b.maxLine+1 : b.maxLine+1]
	}
	recs[n] = stream.Record[[]byte]{Value: line, Origin: stream.Origin{
		Source: b.name, Partition: part, Offset: b.line,
	}}
}

// fill reads more of the file, into a new block when the current one is
// full, with the start of the line not split yet copied to its start.
func (b *blockLines) fill() error {
	if len(b.block) == cap(b.block) {
		rest := b.block[b.start:]
		next := make([]byte, len(rest), max(blockSize, 2*len(rest)))
		copy(next, rest)
		b.block, b.start = next, 0
	}
	k, err := b.r.Read(b.block[len(b.block):cap(b.block)])
	b.block = b.block[:len(b.block)+k]
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		return fmt.Errorf("source: read %s after line %d: %w", b.name, b.line, err)
	}
	return nil
}
