package score

import (
	"bytes"
	"errors"
	"fmt"
)

// DefaultMaxLen is the default limit on the length of a record, in bytes. A
// real event is under 100 bytes; the limit keeps a corrupt or hostile
// record from costing more than a moment.
const DefaultMaxLen = 64 << 10

// DecodeJSON decodes a JSON event, as Decoder does but without a table: it
// accepts any activity, and allocates its string. Records are limited to
// DefaultMaxLen bytes. Errors are *Error, described by Kind.
func DecodeJSON(rec []byte) (Event, error) {
	f, err := parseJSON(rec, DefaultMaxLen)
	if err != nil {
		return Event{}, err
	}
	act := f.act
	if f.esc {
		act = appendUnescaped(nil, act)
	}
	return Event{UserID: f.userID, Activity: string(act)}, nil
}

// DecodeCSV decodes a CSV row, as Decoder does but without a table: it
// accepts any activity a row can hold, the empty one included, and
// allocates its string. Records are limited to DefaultMaxLen bytes. Errors
// are *Error, described by Kind.
func DecodeCSV(rec []byte) (Event, error) {
	id, act, off, err := parseCSV(rec, DefaultMaxLen)
	if err != nil {
		return Event{}, err
	}
	if err := checkCSVActivity(rec, act, off); err != nil {
		return Event{}, err
	}
	return Event{UserID: id, Activity: string(act)}, nil
}

// Decoder decodes event records of one format and scores them with a
// Table. Make one with NewDecoder. It is immutable, so it is safe for
// concurrent use.
type Decoder struct {
	format Format
	table  *Table
	maxLen int
}

type config struct {
	table  *Table
	maxLen int
}

// Option configures a Decoder.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithTable sets the score table; the default is Default().
func WithTable(t *Table) Option { return optionFunc(func(c *config) { c.table = t }) }

// WithMaxLen sets the limit on the length of a record, in bytes; the
// default is DefaultMaxLen. Longer records are rejected with ErrTooLong
// before they are looked at.
func WithMaxLen(n int) Option { return optionFunc(func(c *config) { c.maxLen = n }) }

// NewDecoder returns a Decoder of records in format f, FormatJSON or
// FormatCSV.
func NewDecoder(f Format, opts ...Option) (*Decoder, error) {
	c := config{table: Default(), maxLen: DefaultMaxLen}
	for _, o := range opts {
		o.apply(&c)
	}
	switch {
	case f != FormatJSON && f != FormatCSV:
		return nil, fmt.Errorf("score: cannot decode format %s", f)
	case c.table == nil || c.table.Len() == 0:
		return nil, errors.New("score: the score table is nil or empty")
	case c.maxLen < 1:
		return nil, fmt.Errorf("score: max record length %d is less than 1", c.maxLen)
	}
	return &Decoder{format: f, table: c.table, maxLen: c.maxLen}, nil
}

// Format returns the format d decodes.
func (d *Decoder) Format() Format { return d.format }

// Table returns the table d scores with.
func (d *Decoder) Table() *Table { return d.table }

// Decode decodes the record rec, a line without its line ending (a trailing
// "\n" or "\r\n" is allowed) or a Kafka message value. The event's Activity
// is the table's own string, so Decode does not allocate unless it fails.
//
// Errors are *Error, described by Kind; an activity missing from the table
// is ErrUnknownActivity. The caller adds where rec came from:
// fmt.Errorf("%s:%d: %w", path, line, err).
func (d *Decoder) Decode(rec []byte) (Event, error) {
	id, i, err := d.decode(rec)
	if err != nil {
		return Event{}, err
	}
	return Event{UserID: id, Activity: d.table.names[i]}, nil
}

// Score decodes rec as Decode does and returns the user id and the score of
// the activity: what a pipeline needs from a record, at the lowest cost.
func (d *Decoder) Score(rec []byte) (userID, score int64, err error) {
	id, i, err := d.decode(rec)
	if err != nil {
		return 0, 0, err
	}
	return id, d.table.scores[i], nil
}

// decode returns the user id of rec and the index of its activity in the
// table.
func (d *Decoder) decode(rec []byte) (int64, int, error) {
	if d.format == FormatCSV {
		id, act, off, err := parseCSV(rec, d.maxLen)
		if err != nil {
			return 0, -1, err
		}
		if i := lookup(d.table, act); i >= 0 {
			return id, i, nil
		}
		if err := checkCSVActivity(rec, act, off); err != nil {
			return 0, -1, err
		}
		return 0, -1, unknownActivity(act, off)
	}
	if id, i, ok := d.plainJSON(rec); ok {
		return id, i, nil
	}
	f, err := parseJSON(rec, d.maxLen)
	if err != nil {
		return 0, -1, err
	}
	var i int
	if f.esc {
		i, err = lookupEscaped(d.table, f.act, f.actOff)
	} else if i = lookup(d.table, f.act); i < 0 {
		err = unknownActivity(f.act, f.actOff)
	}
	if err != nil {
		return 0, -1, err
	}
	return f.userID, i, nil
}

// plainJSON decodes rec when it is an event as producers write it: the
// compact form of AppendJSON, {"user_id":1234,"activity":"profile.view"},
// or with spaces after the colons and the comma, as the original
// producer wrote them, and an activity of the table written without
// escapes. That is nearly every record, and these take half of what
// parseJSON costs. Anything else, it leaves to parseJSON (ok false), which
// accepts or rejects it: what plainJSON accepts, parseJSON decodes to the
// same event (FuzzDecodeJSON checks it). The table's names hold no '"' nor
// control character and are valid UTF-8, so an activity found in the
// table is a valid JSON string without escapes.
func (d *Decoder) plainJSON(rec []byte) (id int64, act int, ok bool) {
	const idKey, actKey = `{"user_id":`, `"activity":`
	if len(rec) > d.maxLen || !bytes.HasPrefix(rec, []byte(idKey)) {
		return 0, -1, false
	}
	i := skipSpaces(rec, len(idKey))
	start := i
	for ; i < len(rec) && rec[i]-'0' <= 9; i++ {
		id = id*10 + int64(rec[i]-'0')
		if i-start == 18 { // 19 digits may overflow
			return 0, -1, false
		}
	}
	if i == start || rec[start] == '0' { // no digits, or a leading zero
		return 0, -1, false
	}
	if i = skipSpaces(rec, i); i >= len(rec) || rec[i] != ',' {
		return 0, -1, false
	}
	if i = skipSpaces(rec, i+1); !bytes.HasPrefix(rec[i:], []byte(actKey)) {
		return 0, -1, false
	}
	if i = skipSpaces(rec, i+len(actKey)); i >= len(rec) || rec[i] != '"' {
		return 0, -1, false
	}
	n := bytes.IndexByte(rec[i+1:], '"')
	// The closing quote must be followed by '}', the record's last byte.
	if n < 0 || i+n+3 != len(rec) || rec[len(rec)-1] != '}' {
		return 0, -1, false
	}
	name := rec[i+1 : i+1+n]
	if bytes.IndexByte(name, '\\') >= 0 {
		return 0, -1, false
	}
	if act = lookup(d.table, name); act < 0 {
		return 0, -1, false
	}
	return id, act, true
}

// skipSpaces returns the offset of the first byte from b[i] on that is not
// a space.
func skipSpaces(b []byte, i int) int {
	for i < len(b) && b[i] == ' ' {
		i++
	}
	return i
}

// lookupEscaped looks up an activity written with escapes.
func lookupEscaped(t *Table, raw []byte, off int) (int, error) {
	// An escape is at most 6 bytes per byte it decodes to: past that
	// length the activity is longer than any name.
	if len(raw) <= 6*MaxActivityLen {
		var buf [6 * MaxActivityLen]byte
		if i := lookup(t, appendUnescaped(buf[:0], raw)); i >= 0 {
			return i, nil
		}
	}
	return -1, unknownActivity(appendUnescaped(nil, raw), off)
}

func unknownActivity(act []byte, off int) error {
	return newError(ErrUnknownActivity, off, quote(act))
}
