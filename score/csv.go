package score

import (
	"bytes"
	"fmt"
)

// parseCSV splits a row into its user id and its activity. It leaves the
// activity unchecked: when a table lookup finds it, that proves it well
// formed, for less than checking each byte would cost. Callers that do not
// find it in a table call checkCSVActivity.
func parseCSV(rec []byte, maxLen int) (id int64, act []byte, actOff int, err error) {
	if len(rec) > maxLen {
		return 0, nil, 0, tooLong(rec, maxLen)
	}
	start := 0
	if len(rec) > 0 && rec[0] == bom[0] && bytes.HasPrefix(rec, bom) {
		start = len(bom)
	}
	row := trimEOL(rec)[start:]
	if comma := bytes.IndexByte(row, ','); comma > 0 {
		if id, ok := digitsID(row[:comma]); ok {
			return id, row[comma+1:], start + comma + 1, nil
		}
	}
	return 0, nil, 0, diagnoseCSV(rec, start, row)
}

// digitsID parses v, decimal digits only, as a user id in 1..2^63-1.
func digitsID(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		c -= '0'
		if c > 9 || n > (1<<63-1)/10 {
			return 0, false
		}
		n = n*10 + uint64(c)
	}
	if n == 0 || n > 1<<63-1 {
		return 0, false
	}
	return int64(n), true
}

// diagnoseCSV returns the error of a row that parseCSV could not split, by
// the precedence of Kind.
func diagnoseCSV(rec []byte, start int, row []byte) error {
	if len(bytes.Trim(row, " \t\r\n")) == 0 {
		return newError(ErrEmpty, -1, "")
	}
	if off := invalidUTF8At(rec); off >= 0 {
		return newError(ErrInvalidUTF8, off, "")
	}
	comma := bytes.IndexByte(row, ',')
	if comma < 0 {
		return newError(ErrMalformed, -1, "found 1 field, want 2 (user_id,activity)")
	}
	if err := checkCSVActivity(rec, row[comma+1:], start+comma+1); err != nil {
		return err
	}
	if _, err := userID(row[:comma], start); err != nil {
		return err
	}
	return newError(ErrMalformed, -1, "cannot split the row") // not reached: parseCSV would have
}

// checkCSVActivity checks the activity act of a row, which starts at byte
// off of rec.
func checkCSVActivity(rec, act []byte, off int) error {
	for _, c := range act {
		if c == ',' || c == '"' || c < 0x20 || c >= 0x7f {
			return activityError(rec, act, off)
		}
	}
	return nil
}

// activityError returns what is wrong with an activity holding a byte that
// needs a closer look, or nil.
func activityError(rec, act []byte, off int) error {
	if off := invalidUTF8At(rec); off >= 0 {
		return newError(ErrInvalidUTF8, off, "")
	}
	if n := bytes.Count(act, []byte{','}); n > 0 {
		return newError(ErrMalformed, off+bytes.IndexByte(act, ','), fmt.Sprintf("found %d fields, want 2 (user_id,activity)", n+2))
	}
	for i, c := range act {
		switch {
		case c == '"':
			return newError(ErrMalformed, off+i, "quote in activity: quoted fields are not supported")
		case c < 0x20 || c == 0x7f:
			return newError(ErrMalformed, off+i, fmt.Sprintf("control character %q in activity", c))
		}
	}
	return nil
}
