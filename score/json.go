package score

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
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
	i := 0
	if len(rec) > 0 && rec[0] == bom[0] && bytes.HasPrefix(rec, bom) {
		i = len(bom)
	}
	i = skipSpace(rec, i)
	if i == len(rec) {
		return f, newError(ErrEmpty, -1, "")
	}
	if err := object(rec, i, &f); err != nil {
		if off := invalidUTF8At(rec); off >= 0 {
			return f, newError(ErrInvalidUTF8, off, "")
		}
		return f, err
	}
	return f, nil
}

// The scanning functions below take the record b and an offset i in it, and
// return the offset just past what they scanned.

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		if c := b[i]; c > ' ' || c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return i
		}
		i++
	}
	return i
}

// Which field a key names.
const (
	fieldOther = iota
	fieldUserID
	fieldActivity
)

// object scans the record's object, which starts at b[i], and fills f. It
// reports syntax errors first, wherever they are, and only then what is
// wrong with the fields, so that the kind of error does not depend on the
// order of the fields.
func object(b []byte, i int, f *jsonFields) error {
	if b[i] != '{' {
		return malformed(i, "found %s, want a JSON object", describe(b, i))
	}
	var (
		haveID, haveAct bool
		idStart, idEnd  int
		actStart        int
		actIsString     bool
		err             error
	)
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			keyStart := i
			if i >= len(b) || b[i] != '"' {
				return malformed(i, "found %s, want a field name", describe(b, i))
			}
			end, esc, err := scanString(b, i)
			if err != nil {
				return err
			}
			field := matchField(b[i+1:end-1], esc)
			i = skipSpace(b, end)
			if i >= len(b) || b[i] != ':' {
				return malformed(i, "found %s after a field name, want ':'", describe(b, i))
			}
			valStart := skipSpace(b, i+1)
			switch field {
			case fieldUserID:
				if haveID {
					return malformed(keyStart, "user_id appears twice")
				}
				haveID = true
				if i, err = skipValue(b, valStart, 2); err != nil {
					return err
				}
				idStart, idEnd = valStart, i
			case fieldActivity:
				if haveAct {
					return malformed(keyStart, "activity appears twice")
				}
				haveAct = true
				actStart = valStart
				if valStart < len(b) && b[valStart] == '"' {
					end, esc, err := scanString(b, valStart)
					if err != nil {
						return err
					}
					actIsString = true
					f.act, f.esc, f.actOff = b[valStart+1:end-1], esc, valStart
					i = end
				} else if i, err = skipValue(b, valStart, 2); err != nil {
					return err
				}
			default:
				if i, err = skipValue(b, valStart, 2); err != nil {
					return err
				}
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return unexpectedEnd(b)
			}
			if b[i] == ',' {
				i = skipSpace(b, i+1)
				continue
			}
			if b[i] == '}' {
				i++
				break
			}
			return malformed(i, "found %s after a field, want ',' or '}'", describe(b, i))
		}
	}
	if i = skipSpace(b, i); i < len(b) {
		return malformed(i, "data after the JSON object")
	}

	switch {
	case !haveID:
		return newError(ErrMalformed, -1, "missing field user_id")
	case !haveAct:
		return newError(ErrMalformed, -1, "missing field activity")
	case !actIsString:
		return newError(ErrMalformed, actStart, "activity is "+describeValue(b[actStart:])+", want a string")
	}
	f.userID, err = jsonUserID(b, idStart, idEnd)
	return err
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
	if id, ok := digitsID(v); ok {
		return id, nil
	}
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
// record, and says what is wrong with them.
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

// skipValue scans any JSON value at b[i], at nesting depth depth (the
// record's object is depth 1).
func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, unexpectedEnd(b)
	}
	switch c := b[i]; {
	case c == '"':
		end, _, err := scanString(b, i)
		return end, err
	case c == '{' || c == '[':
		return skipContainer(b, i, depth)
	case c == '-' || '0' <= c && c <= '9':
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	}
	return i, malformed(i, "found %s, want a value", describe(b, i))
}

// skipContainer scans the array or object at b[i], at nesting depth depth,
// without recursion: a hostile record cannot grow the stack.
func skipContainer(b []byte, i, depth int) (int, error) {
	var isObject [maxDepth/64 + 1]uint64 // a bit per open container
	open := 0                            // containers open in this call
	push := func() error {
		if depth+open > maxDepth {
			return malformed(i, "nested deeper than %d", maxDepth)
		}
		if b[i] == '{' {
			isObject[open/64] |= 1 << (open % 64)
		} else {
			isObject[open/64] &^= 1 << (open % 64)
		}
		open++
		i++
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
		return i, err
	}
	state := opened
	for {
		var err error
		switch state {
		case opened:
			i = skipSpace(b, i)
			if i < len(b) && b[i] == closer() {
				i++
				open--
				state = after
				continue
			}
			state = element
		case element:
			if inObject() {
				if i >= len(b) || b[i] != '"' {
					return i, malformed(i, "found %s, want a field name", describe(b, i))
				}
				if i, _, err = scanString(b, i); err != nil {
					return i, err
				}
				i = skipSpace(b, i)
				if i >= len(b) || b[i] != ':' {
					return i, malformed(i, "found %s after a field name, want ':'", describe(b, i))
				}
				i = skipSpace(b, i+1)
			}
			if i < len(b) && (b[i] == '{' || b[i] == '[') {
				if err := push(); err != nil {
					return i, err
				}
				state = opened
				continue
			}
			if i, err = skipValue(b, i, depth+open); err != nil {
				return i, err
			}
			state = after
		case after:
			if open == 0 {
				return i, nil
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return i, unexpectedEnd(b)
			}
			switch b[i] {
			case ',':
				i = skipSpace(b, i+1)
				state = element
			case closer():
				i++
				open--
			default:
				return i, malformed(i, "found %s after a value, want ',' or %q", describe(b, i), closer())
			}
		}
	}
}

// scanString scans the string whose opening quote is at b[i], and returns
// the offset just past its closing quote and whether it holds escapes.
func scanString(b []byte, i int) (end int, esc bool, err error) {
	j := i + 1
	for {
		// Eight bytes at a time while the record lasts: most strings are
		// short plain ASCII, ended by a quote in the same word.
		if j+8 <= len(b) {
			m := special(binary.LittleEndian.Uint64(b[j:]))
			if m == 0 {
				j += 8
				continue
			}
			j += bits.TrailingZeros64(m) / 8
		} else {
			for j < len(b) && strPlain[b[j]] {
				j++
			}
			if j >= len(b) {
				return j, esc, unexpectedEnd(b)
			}
		}
		switch c := b[j]; {
		case c == '"':
			return j + 1, esc, nil
		case c == '\\':
			esc = true
			if j+1 >= len(b) {
				return j, esc, unexpectedEnd(b)
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) {
					if isHex(b[j+2:]) {
						return j, esc, unexpectedEnd(b)
					}
				} else if isHex(b[j+2 : j+6]) {
					j += 6
					continue
				}
				return j, esc, malformed(j, "invalid escape %s in string", quote(b[j:min(j+6, len(b))]))
			default:
				return j, esc, malformed(j, "invalid escape %s in string", quote(b[j:j+2]))
			}
		case c < 0x20:
			return j, esc, malformed(j, "control character %q in string", c)
		default: // a byte of a multi-byte character
			r, size := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError && size == 1 {
				return j, esc, newError(ErrInvalidUTF8, j, "")
			}
			j += size
		}
	}
}

// special marks the bytes of w, eight bytes of a string in little-endian
// order, that are a control character, a quote, a backslash or not ASCII:
// it sets the high bit of each, and its lowest set bit is exact, so
// bits.TrailingZeros64 finds the first. These are the classic "has a zero
// byte" and "has a byte less than n" tricks; above the first marked byte a
// borrow may mark more.
func special(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(x uint64) uint64 { return (x - ones) &^ x }
	less := (w - 0x20*ones) &^ w // a byte below 0x20
	return (less | hasZero(w^'"'*ones) | hasZero(w^'\\'*ones) | w) & highs
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

// scanNumber scans the JSON number at b[i].
func scanNumber(b []byte, i int) (int, error) {
	start := i
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
		return i, badNumber(b, start, i)
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return i, badNumber(b, start, i)
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return i, badNumber(b, start, i)
		}
	}
	return i, nil
}

func badNumber(b []byte, start, i int) error {
	if i >= len(b) {
		return unexpectedEnd(b)
	}
	return malformed(i, "invalid number %s", quote(b[start:i+1]))
}

func scanLiteral(b []byte, i int, lit string) (int, error) {
	rest := b[i:]
	n := min(len(rest), len(lit))
	if string(rest[:n]) != lit[:n] {
		return i, malformed(i, "found %s, want a value", describe(b, i))
	}
	if n < len(lit) {
		return i, unexpectedEnd(b)
	}
	return i + len(lit), nil
}

func malformed(off int, format string, args ...any) error {
	return newError(ErrMalformed, off, fmt.Sprintf(format, args...))
}

func unexpectedEnd(b []byte) error {
	return newError(ErrMalformed, len(b), "unexpected end of JSON")
}

// describe names the character at b[i] for an error message.
func describe(b []byte, i int) string {
	if i >= len(b) {
		return "the end"
	}
	r, _ := utf8.DecodeRune(b[i:])
	return fmt.Sprintf("%q", r)
}

// describeValue names the kind of the valid JSON value that starts v.
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
	if len(rec) == maxLen+1 {
		// Perhaps the first maxLen+1 bytes of a longer line, which a
		// reader cut (source.File does).
		return newError(ErrTooLong, -1, fmt.Sprintf("at least %d bytes, over the limit of %d", len(rec), maxLen))
	}
	return newError(ErrTooLong, -1, fmt.Sprintf("%d bytes, over the limit of %d", len(rec), maxLen))
}
