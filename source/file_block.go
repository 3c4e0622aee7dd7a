package source

import (
	"bytes"
	"fmt"
	"io"

	"github.com/sluicehq/sluice/stream"
)

// blockSize is the size of the blocks a file read ahead is read in.
const blockSize = 256 << 10

// blockLines splits a file into lines as File's poll does, for the
// goroutine that reads a regular file ahead: it reads the file in blocks
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
	read  int64  // bytes split, up to the end of the last line
	block []byte // read so far into the current block, up to its cap
	start int    // the first byte of block not split yet
	cut   []byte // of a line over maxLine: its first maxLine+1 bytes
	skip  bool   // cut is set and the rest of its line is being skipped
	eof   bool
}

func newBlockLines(f *File) *blockLines {
	return &blockLines{r: f.r, name: f.name, parts: f.parts, maxLine: f.maxLine}
}

// split fills recs with the next lines, and ends with the bytes read up to
// the end of each, as poll does. It returns io.EOF with the last line, and
// a read's error as poll does.
func (b *blockLines) split(recs []stream.Record[[]byte], ends []int64) (int, error) {
	n := 0
	for n < len(recs) {
		rest := b.block[b.start:]
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			b.start += i + 1
			b.read += int64(i + 1)
			line := rest[:i:i]
			if b.skip {
				line, b.cut, b.skip = b.cut, nil, false
			}
			b.emit(&recs[n], &ends[n], line)
			n++
			continue
		}
		if b.eof {
			b.start = len(b.block)
			b.read += int64(len(rest))
			if b.skip {
				rest, b.cut, b.skip = b.cut, nil, false
			} else if len(rest) == 0 {
				return n, io.EOF
			}
			b.emit(&recs[n], &ends[n], rest)
			return n + 1, io.EOF
		}
		// No end of line in what is read: a line that goes on. Past
		// maxLine+1 bytes (one more for a "\r" before its '\n'), keep its
		// cut and skip the rest, as poll does.
		if !b.skip && len(rest) > b.maxLine+1 {
			b.cut, b.skip = rest[:b.maxLine+1:b.maxLine+1], true
		}
		if b.skip {
			b.start = len(b.block)
			b.read += int64(len(rest))
		}
		if err := b.fill(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// emit makes the record of a line without its line ending, or of the cut
// of an over-long one, as poll does: a '\r' that ends either is removed,
// so that a line of maxLine bytes and "\r\n" is yielded whole.
func (b *blockLines) emit(rec *stream.Record[[]byte], end *int64, line []byte) {
	b.line++
	if k := len(line); k > 0 && line[k-1] == '\r' {
		line = line[: k-1 : k-1]
	}
	if len(line) > b.maxLine {
		line = line[: b.maxLine+1 : b.maxLine+1]
	}
	*rec = stream.Record[[]byte]{Value: line, Origin: stream.Origin{
		Source: b.name, Partition: int32((b.line - 1) % int64(b.parts)), Offset: b.line,
	}}
	*end = b.read
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
