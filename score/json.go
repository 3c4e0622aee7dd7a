package score

import (
	"bytes"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth is how deeply arrays and objects may nest, the record's own
// object included: encoding/json's limit, so that both accept the same.
const maxDepth = 10000

// jsonFields is what parseJSON finds in a record.
type jsonFields struct {
	userID int64
	act    []byte // the activity between its quotes, still escaped when esc
	esc    bool
	actOff int // of the activity's opening quote
}

// parseJSON decodes a JSON event by hand, because encoding/json costs over
// a microsecond and several allocations per record. It accepts what
// encoding/json accepts when decoding the record into an Event, with these
// differences, all deliberate:
//
//   - field names match exactly, not case-insensitively;
//   - a repeated user_id or activity is an error, not "last one wins";
//   - a missing field, or null, is an error, not a zero value;
//   - invalid UTF-8 is an error, not replaced by U+FFFD;
//   - a leading UTF-8 byte order mark is skipped (RFC 8259 allows that).
//
// Unknown fields are checked for syntax and skipped, since producers add
// fields over time.
func parseJSON(rec []byte, maxLen int) (f jsonFields, err error) {
	if len(rec) > maxLen {
		return f, tooLong(rec, maxLen)
	}
	s := scanner{b: rec}
	if bytes.HasPrefix(rec, bom) {
		s.i = len(bom)
	}
	s.skipSpace()
	if s.i == len(rec) {
		return f, newError(ErrEmpty, -1, "")
	}
	if err := s.object(&f); err != nil {
		if off := invalidUTF8At(rec); off >= 0 {
			return f, newError(ErrInvalidUTF8, off, "")
		}
		return f, err
	}
	return f, nil
}

type scanner struct {
	b []byte
	i int
}

func (s *scanner) skipSpace() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// Which field a key names.
const (
	fieldOther = iota
	fieldUserID
	fieldActivity
)

// object scans the record's object and fills f. It reports syntax errors
// first, wherever they are, and only then what is wrong with the fields, so
// that the kind of error does not depend on the order of the fields.
func (s *scanner) object(f *jsonFields) error {
	b := s.b
	if b[s.i] != '{' {
		return s.malformed(s.i, "found %s, want a JSON object", s.describe(s.i))
	}
	s.i++
	var (
		haveID, haveAct bool
		idStart, idEnd  int
		actStart        int
		actIsString     bool
	)
	s.skipSpace()
	if s.i < len(b) && b[s.i] == '}' {
		s.i++
	} else {
		for {
			keyStart := s.i
			if s.i >= len(b) || b[s.i] != '"' {
				return s.malformed(s.i, "found %s, want a field name", s.describe(s.i))
			}
			end, esc, err := s.str(s.i)
			if err != nil {
				return err
			}
			field := matchField(b[s.i+1:end-1], esc)
			s.i = end
			s.skipSpace()
			if s.i >= len(b) || b[s.i] != ':' {
				return s.malformed(s.i, "found %s after a field name, want ':'", s.describe(s.i))
			}
			s.i++
			s.skipSpace()
			valStart := s.i
			switch field {
			case fieldUserID:
				if haveID {
					return s.malformed(keyStart, "user_id appears twice")
				}
				haveID = true
			case fieldActivity:
				if haveAct {
					return s.malformed(keyStart, "activity appears twice")
				}
				haveAct = true
			}
			if field == fieldActivity && s.i < len(b) && b[s.i] == '"' {
				end, esc, err := s.str(s.i)
				if err != nil {
					return err
				}
				actStart, actIsString = valStart, true
				f.act, f.esc, f.actOff = b[valStart+1:end-1], esc, valStart
				s.i = end
			} else if err := s.value(2); err != nil {
				return err
			}
			if field == fieldUserID {
				idStart, idEnd = valStart, s.i
			} else if field == fieldActivity && !actIsString {
				actStart = valStart
			}
			s.skipSpace()
			if s.i >= len(b) {
				return s.unexpectedEnd()
			}
			if b[s.i] == ',' {
				s.i++
				s.skipSpace()
				continue
			}
			if b[s.i] == '}' {
				s.i++
				break
			}
			return s.malformed(s.i, "found %s after a field, want ',' or '}'", s.describe(s.i))
		}
	}
	s.skipSpace()
	if s.i < len(b) {
		return s.malformed(s.i, "data after the JSON object")
	}

	switch {
	case !haveID:
		return newError(ErrMalformed, -1, "missing field user_id")
	case !haveAct:
		return newError(ErrMalformed, -1, "missing field activity")
	case !actIsString:
		return newError(ErrMalformed, actStart, "activity is "+s.describeValue(actStart)+", want a string")
	}
	id, err := jsonUserID(b, idStart, idEnd)
	if err != nil {
		return err
	}
	f.userID = id
	return nil
}

const longestField = len("activity")

// matchField tells which field the key between quotes names.
func matchField(key []byte, esc bool) int {
	if esc {
		// An escape takes at most 6 bytes per character of our names, so a
		// longer key cannot be one of them.
		if len(key) > 6*longestField {
			return fieldOther
		}
		var buf [6 * longestField]byte
		key = appendUnescaped(buf[:0], key)
	}
	switch string(key) {
	case "user_id":
		return fieldUserID
	case "activity":
		return fieldActivity
	}
	return fieldOther
}

// jsonUserID checks the syntactically valid value in b[start:end] as a user
// id.
func jsonUserID(b []byte, start, end int) (int64, error) {
	v := b[start:end]
	if c := v[0]; c != '-' && (c < '0' || c > '9') {
		return 0, newError(ErrBadUserID, start, "user_id is "+describeValue(v)+", want an integer")
	}
	if bytes.ContainsAny(v, ".eE") {
		return 0, newError(ErrBadUserID, start, "user_id "+string(v)+" is not an integer")
	}
	if v[0] == '-' {
		return 0, newError(ErrBadUserID, start, "user_id "+string(v)+" is not positive")
	}
	return userID(v, start)
}

// userID parses the digits in v as a user id, v starting at byte off of the
// record.
func userID(v []byte, off int) (int64, error) {
	if len(v) == 0 {
		return 0, newError(ErrBadUserID, off, "empty user id")
	}
	var n uint64
	for i, c := range v {
		if c < '0' || c > '9' {
			what := " is not an integer"
			if i == 0 && c == '-' && len(v) > 1 {
				what = " is negative"
			}
			return 0, newError(ErrBadUserID, off+i, "user id "+quote(v)+what)
		}
		if n > (1<<63-1)/10 {
			return 0, newError(ErrBadUserID, off, "user id "+quote(v)+" is out of range")
		}
		n = n*10 + uint64(c-'0')
	}
	if n > 1<<63-1 {
		return 0, newError(ErrBadUserID, off, "user id "+quote(v)+" is out of range")
	}
	if n == 0 {
		return 0, newError(ErrBadUserID, off, "user id "+quote(v)+" is not positive")
	}
	return int64(n), nil
}

// value scans any JSON value at s.i, at nesting depth depth (the record's
// object is depth 1).
func (s *scanner) value(depth int) error {
	b := s.b
	if s.i >= len(b) {
		return s.unexpectedEnd()
	}
	switch c := b[s.i]; {
	case c == '"':
		end, _, err := s.str(s.i)
		s.i = end
		return err
	case c == '{' || c == '[':
		return s.container(depth)
	case c == '-' || '0' <= c && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.malformed(s.i, "found %s, want a value", s.describe(s.i))
}

// container scans the array or object at s.i, at nesting depth depth,
// without recursion: a hostile record cannot grow the stack.
func (s *scanner) container(depth int) error {
	b := s.b
	var isObject [maxDepth/64 + 1]uint64 // a bit per open container
	open := 0                            // containers open in this call
	push := func() error {
		if depth+open > maxDepth {
			return s.malformed(s.i, "nested deeper than %d", maxDepth)
		}
		if b[s.i] == '{' {
			isObject[open/64] |= 1 << (open % 64)
		} else {
			isObject[open/64] &^= 1 << (open % 64)
		}
		open++
		s.i++
		return nil
	}
	inObject := func() bool { return isObject[(open-1)/64]&(1<<((open-1)%64)) != 0 }
	closer := func() byte {
		if inObject() {
			return '}'
		}
		return ']'
	}

	const (
		opened = iota // just after '{' or '['
		element
		after // after an element or a closed container
	)
	if err := push(); err != nil {
		return err
	}
	state := opened
	for {
		switch state {
		case opened:
			s.skipSpace()
			if s.i < len(b) && b[s.i] == closer() {
				s.i++
				open--
				state = after
				continue
			}
			state = element
		case element:
			if inObject() {
				if s.i >= len(b) || b[s.i] != '"' {
					return s.malformed(s.i, "found %s, want a field name", s.describe(s.i))
				}
				end, _, err := s.str(s.i)
				if err != nil {
					return err
				}
				s.i = end
				s.skipSpace()
				if s.i >= len(b) || b[s.i] != ':' {
					return s.malformed(s.i, "found %s after a field name, want ':'", s.describe(s.i))
				}
				s.i++
				s.skipSpace()
			}
			if s.i < len(b) && (b[s.i] == '{' || b[s.i] == '[') {
				if err := push(); err != nil {
					return err
				}
				state = opened
				continue
			}
			if err := s.value(depth + open); err != nil {
				return err
			}
			state = after
		case after:
			if open == 0 {
				return nil
			}
			s.skipSpace()
			if s.i >= len(b) {
				return s.unexpectedEnd()
			}
			switch b[s.i] {
			case ',':
				s.i++
				s.skipSpace()
				state = element
			case closer():
				s.i++
				open--
			default:
				return s.malformed(s.i, "found %s after a value, want ',' or %q", s.describe(s.i), closer())
			}
		}
	}
}

// str scans the string whose opening quote is at b[i], and returns the
// offset just past its closing quote and whether it holds escapes.
func (s *scanner) str(i int) (end int, esc bool, err error) {
	b := s.b
	j := i + 1
	for {
		for j < len(b) && strPlain[b[j]] {
			j++
		}
		if j >= len(b) {
			return j, esc, s.unexpectedEnd()
		}
		switch c := b[j]; {
		case c == '"':
			return j + 1, esc, nil
		case c == '\\':
			esc = true
			if j+1 >= len(b) {
				return j, esc, s.unexpectedEnd()
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) {
					if isHex(b[j+2:]) {
						return j, esc, s.unexpectedEnd()
					}
				} else if isHex(b[j+2 : j+6]) {
					j += 6
					continue
				}
				return j, esc, s.malformed(j, "invalid escape %s in string", quote(b[j:min(j+6, len(b))]))
			default:
				return j, esc, s.malformed(j, "invalid escape %s in string", quote(b[j:j+2]))
			}
		case c < 0x20:
			return j, esc, s.malformed(j, "control character %q in string", c)
		default: // a byte of a multi-byte character
			r, size := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && size == 1 {
				return j, esc, newError(ErrInvalidUTF8, j, "")
			}
			j += size
		}
	}
}

// strPlain[c] is true for the bytes a JSON string holds as they are, and
// that need no check: ASCII but for controls, the quote and the backslash.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// number scans a JSON number at s.i.
func (s *scanner) number() error {
	b := s.b
	start := s.i
	i := s.i
	if b[i] == '-' {
		i++
	}
	digits := func() bool {
		j := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i > j
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return s.badNumber(start, i)
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return s.badNumber(start, i)
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return s.badNumber(start, i)
		}
	}
	s.i = i
	return nil
}

func (s *scanner) badNumber(start, i int) error {
	if i >= len(s.b) {
		return s.unexpectedEnd()
	}
	return s.malformed(i, "invalid number %s", quote(s.b[start:i+1]))
}

func (s *scanner) literal(lit string) error {
	b := s.b[s.i:]
	n := min(len(b), len(lit))
	if string(b[:n]) != lit[:n] {
		return s.malformed(s.i, "found %s, want a value", s.describe(s.i))
	}
	if n < len(lit) {
		return s.unexpectedEnd()
	}
	s.i += len(lit)
	return nil
}

func (s *scanner) malformed(off int, format string, args ...any) error {
	return newError(ErrMalformed, off, fmt.Sprintf(format, args...))
}

func (s *scanner) unexpectedEnd() error {
	return newError(ErrMalformed, len(s.b), "unexpected end of JSON")
}

// describe names the byte at b[i] for an error message.
func (s *scanner) describe(i int) string {
	if i >= len(s.b) {
		return "the end"
	}
	r, _ := utf8.DecodeRune(s.b[i:])
	return fmt.Sprintf("%q", r)
}

// describeValue names the kind of the valid JSON value starting at b[i].
func (s *scanner) describeValue(i int) string { return describeValue(s.b[i:]) }

func describeValue(v []byte) string {
	switch v[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// appendUnescaped appends the JSON string body raw, which str has checked,
// to dst with its escapes decoded as encoding/json decodes them: a \u escape
// that is half of a surrogate pair without its other half becomes U+FFFD.
func appendUnescaped(dst, raw []byte) []byte {
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\\')
		if i < 0 {
			return append(dst, raw...)
		}
		dst = append(dst, raw[:i]...)
		raw = raw[i:]
		c := raw[1]
		raw = raw[2:]
		switch c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(raw)
			raw = raw[4:]
			if utf16.IsSurrogate(r) {
				if len(raw) >= 6 && raw[0] == '\\' && raw[1] == 'u' {
					if dec := utf16.DecodeRune(r, hex4(raw[2:])); dec != utf8.RuneError {
						dst = utf8.AppendRune(dst, dec)
						raw = raw[6:]
						break
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
	}
	return dst
}

// hex4 decodes the 4 hex digits that start b, which str has checked.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// invalidUTF8At returns the offset of the first byte of b that is not part
// of valid UTF-8, or -1.
func invalidUTF8At(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return -1
}

func tooLong(rec []byte, maxLen int) error {
	return newError(ErrTooLong, -1, fmt.Sprintf("%d bytes, over the limit of %d", len(rec), maxLen))
}
