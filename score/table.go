package score

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"os"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Limits of a Table.
const (
	// MaxScore is the largest score an activity may have. It keeps running
	// totals far from overflow: an int64 total holds over 9*10^12 events at
	// MaxScore each.
	MaxScore = 1_000_000
	// MaxActivityLen is the longest activity name, in bytes.
	MaxActivityLen = 256
)

// ErrInvalidTable is returned (wrapped, with the file and the position when
// there is one) by NewTable, ParseTable and LoadTable when the table itself
// is wrong: empty, a score out of 0..MaxScore, an activity name that a CSV
// row cannot hold, a duplicate activity, or a file that is not a JSON object
// of integers.
var ErrInvalidTable = errors.New("invalid score table")

// linearMax is the size up to which a lookup scans the activities instead of
// hashing: for a handful of names, comparing lengths first rejects most of
// them in a cycle, and beats the map (see BenchmarkTable).
const linearMax = 8

// Table maps each activity to its score. It is immutable once built, so a
// Table is safe for concurrent use, and one Table may be shared by all
// decoders. The zero Table is empty: every lookup misses.
type Table struct {
	names  []string // sorted
	scores []int64  // scores[i] is the score of names[i]
	index  map[string]int32
}

var defaultTable = mustTable(map[string]int64{
	"profile.picture.like": 2,
	"profile.view":         1,
	"message.private":      3,
})

func mustTable(scores map[string]int64) *Table {
	t, err := NewTable(scores)
	if err != nil {
		panic(err) // only for tables written in this package
	}
	return t
}

// Default returns the table of the original pipeline:
//
//	profile.picture.like  2
//	profile.view          1
//	message.private       3
//
// Every call returns the same Table; it is immutable.
func Default() *Table { return defaultTable }

// NewTable returns a Table with the given scores, which it copies. It
// returns an error wrapping ErrInvalidTable when scores is empty, when a
// score is outside 0..MaxScore, or when an activity name is empty, longer
// than MaxActivityLen, not valid UTF-8, starts or ends with a space, or
// holds a comma, a double quote or a control character (a CSV row could not
// carry it).
func NewTable(scores map[string]int64) (*Table, error) {
	if len(scores) == 0 {
		return nil, &tableError{msg: "no activities"}
	}
	names := slices.Sorted(maps.Keys(scores))
	for _, name := range names {
		if msg := checkEntry(name, scores[name]); msg != "" {
			return nil, &tableError{msg: msg}
		}
	}
	t := &Table{names: names, scores: make([]int64, len(names))}
	for i, name := range names {
		t.scores[i] = scores[name]
	}
	if len(names) > linearMax {
		t.index = make(map[string]int32, len(names))
		for i, name := range names {
			t.index[name] = int32(i)
		}
	}
	return t, nil
}

// checkEntry returns what is wrong with an entry of a table, or "".
func checkEntry(name string, score int64) string {
	if msg := checkName(name); msg != "" {
		return msg
	}
	if score < 0 || score > MaxScore {
		return fmt.Sprintf("activity %s: score %d is outside 0..%d", quote([]byte(name)), score, MaxScore)
	}
	return ""
}

func checkName(name string) string {
	q := quote([]byte(name))
	switch {
	case name == "":
		return "empty activity name"
	case len(name) > MaxActivityLen:
		return fmt.Sprintf("activity %s is %d bytes long, over the limit of %d", q, len(name), MaxActivityLen)
	case !utf8.ValidString(name):
		return fmt.Sprintf("activity %s is not valid UTF-8", q)
	case name[0] == ' ' || name[len(name)-1] == ' ':
		return fmt.Sprintf("activity %s starts or ends with a space", q)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == ',' || c == '"' || c < 0x20 || c == 0x7f {
			return fmt.Sprintf("activity %s holds %q, which a CSV row cannot carry", q, c)
		}
	}
	return ""
}

// ParseTable parses a table from JSON: one object whose keys are activities
// and whose values are integer scores, as in
//
//	{"profile.picture.like": 2, "profile.view": 1, "message.private": 3}
//
// Besides what NewTable rejects, it rejects a duplicate activity, a score
// that is not an integer (1.5, 1e3, "2", null), anything that is not one
// JSON object, and bytes that are not UTF-8; a leading byte order mark is
// skipped. Errors wrap ErrInvalidTable and start with name (a file name, or
// anything that tells the reader where the data came from) and the line and
// column of the problem.
func ParseTable(name string, data []byte) (*Table, error) {
	scores, err := parseTable(data)
	if err != nil {
		err.name = name
		err.line, err.col = position(data, err.off)
		return nil, err
	}
	t, nerr := NewTable(scores)
	if nerr != nil {
		var te *tableError
		if errors.As(nerr, &te) {
			te.name = name
		}
		return nil, nerr
	}
	return t, nil
}

// LoadTable reads the file at path and parses it with ParseTable.
func LoadTable(path string) (*Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load score table: %w", err)
	}
	return ParseTable(path, data)
}

func parseTable(data []byte) (map[string]int64, *tableError) {
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, size := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			off += size
		}
		return nil, &tableError{off: int64(off), msg: "not valid UTF-8"}
	}
	if bytes.HasPrefix(data, bom) {
		// Some editors start a UTF-8 file with one; RFC 8259 lets a parser
		// skip it, and the event decoders do. Blanked, it keeps offsets
		// those of the file.
		data = append([]byte("   "), data[len(bom):]...)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	fail := func(off int64, err error) *tableError {
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			// Inside a value, the decoder counts the offset from where it
			// started reading values, leaving out the separators and white
			// space it skipped: find the error again over the whole input,
			// where the offset is just past the bad byte.
			var whole *json.SyntaxError
			if errors.As(json.Unmarshal(data, new(json.RawMessage)), &whole) {
				return &tableError{off: whole.Offset - 1, msg: "invalid JSON: " + whole.Error()}
			}
			return &tableError{off: se.Offset, msg: "invalid JSON: " + se.Error()}
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return &tableError{off: int64(len(data)), msg: "unexpected end of JSON"}
		}
		return &tableError{off: off, msg: err.Error()}
	}

	tok, err := dec.Token()
	if errors.Is(err, io.EOF) {
		return nil, &tableError{msg: `empty file, want a JSON object such as {"profile.view": 1}`}
	}
	if err != nil {
		return nil, fail(0, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, &tableError{off: nextToken(data, 0), msg: fmt.Sprintf(`found %s, want a JSON object such as {"profile.view": 1}`, describeToken(tok))}
	}
	scores := make(map[string]int64)
	for dec.More() {
		keyOff := nextToken(data, dec.InputOffset())
		tok, err := dec.Token()
		if err != nil {
			return nil, fail(keyOff, err)
		}
		name := tok.(string) // the decoder only yields strings as keys
		if _, dup := scores[name]; dup {
			return nil, &tableError{off: keyOff, msg: fmt.Sprintf("activity %s appears twice", quote([]byte(name)))}
		}
		valOff := nextToken(data, dec.InputOffset())
		tok, err = dec.Token()
		if err != nil {
			return nil, fail(valOff, err)
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, &tableError{off: valOff, msg: fmt.Sprintf("activity %s: score is %s, want an integer", quote([]byte(name)), describeToken(tok))}
		}
		score, perr := strconv.ParseInt(string(num), 10, 64)
		if perr != nil {
			return nil, &tableError{off: valOff, msg: fmt.Sprintf("activity %s: score %s is not an integer in 0..%d", quote([]byte(name)), num, MaxScore)}
		}
		if msg := checkEntry(name, score); msg != "" {
			return nil, &tableError{off: keyOff, msg: msg}
		}
		scores[name] = score
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fail(dec.InputOffset(), err)
	}
	end := dec.InputOffset()
	for end < int64(len(data)) && isJSONSpace(data[end]) {
		end++
	}
	if end < int64(len(data)) { // separators too: the object must be alone
		return nil, &tableError{off: end, msg: "data after the JSON object"}
	}
	if len(scores) == 0 {
		return nil, &tableError{msg: "no activities"}
	}
	return scores, nil
}

// nextToken returns the offset of the first byte at or after off that is
// neither JSON white space nor a separator.
func nextToken(data []byte, off int64) int64 {
	for off < int64(len(data)) && (isJSONSpace(data[off]) || data[off] == ',' || data[off] == ':') {
		off++
	}
	return off
}

// isJSONSpace reports whether c is JSON white space.
func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func describeToken(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return "an array"
	case string:
		return "the string " + quote([]byte(v))
	case json.Number:
		return "the number " + string(v)
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return "null"
	}
	return fmt.Sprint(tok)
}

// position turns a byte offset into a 1-based line and column.
func position(data []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line = 1 + bytes.Count(before, []byte{'\n'})
	col = 1 + len(before) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, col
}

// tableError is what is wrong with a table, and where.
type tableError struct {
	name      string // of the file; "" when there is none
	off       int64
	line, col int // 0 when the problem is not at one place
	msg       string
}

func (e *tableError) Error() string {
	s := ErrInvalidTable.Error()
	if e.name != "" {
		s += " " + e.name
		if e.line > 0 {
			s += ":" + strconv.Itoa(e.line) + ":" + strconv.Itoa(e.col)
		}
	} else if e.line > 0 {
		s += " at line " + strconv.Itoa(e.line) + ", column " + strconv.Itoa(e.col)
	}
	return s + ": " + e.msg
}

func (e *tableError) Unwrap() error { return ErrInvalidTable }

// Score returns the score of activity, and false when the table does not
// have it. It does not allocate.
func (t *Table) Score(activity []byte) (int64, bool) {
	return scoreOf(t, activity)
}

// ScoreString is Score for a string.
func (t *Table) ScoreString(activity string) (int64, bool) {
	return scoreOf(t, activity)
}

func scoreOf[S string | []byte](t *Table, activity S) (int64, bool) {
	i := lookup(t, activity)
	if i < 0 {
		return 0, false
	}
	return t.scores[i], true
}

// lookup returns the index of activity in t.names, or -1.
func lookup[S string | []byte](t *Table, activity S) int {
	if t.index == nil {
		for i, name := range t.names {
			if name == string(activity) { // no allocation: Go compares in place
				return i
			}
		}
		return -1
	}
	if i, ok := t.index[string(activity)]; ok {
		return int(i)
	}
	return -1
}

// Len returns the number of activities in t.
func (t *Table) Len() int { return len(t.names) }

// Activities returns the activities of t, sorted. The slice is the caller's.
func (t *Table) Activities() []string { return slices.Clone(t.names) }

// All yields each activity of t and its score, sorted by activity.
func (t *Table) All() iter.Seq2[string, int64] {
	return func(yield func(string, int64) bool) {
		for i, name := range t.names {
			if !yield(name, t.scores[i]) {
				return
			}
		}
	}
}
