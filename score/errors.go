package score

import (
	"errors"
	"strconv"
)

// Kind classifies why a record was rejected, so that a pipeline can count
// bad records per kind and dead-letter them.
//
// Each Kind is also an error: every *Error the decoders return wraps its
// Kind, so errors.Is(err, ErrUnknownActivity) tells one kind from another,
// and KindOf(err) gives the Kind to count. Kinds are constants, so no one
// can reassign them.
//
// When a record has several problems, the decoders report the first kind in
// the order below: a record that is too long is not looked at further; one
// with invalid UTF-8 anywhere is ErrInvalidUTF8 even if it is also
// malformed; a malformed record is not checked for its user id or activity.
type Kind uint8

// The kinds of bad record, returned (wrapped in an *Error) by DecodeJSON,
// DecodeCSV, Decoder.Decode and Decoder.Score.
const (
	// ErrTooLong: the record is longer than the decoder's limit
	// (DefaultMaxLen unless set with WithMaxLen).
	ErrTooLong Kind = iota + 1
	// ErrEmpty: the record holds nothing but white space.
	ErrEmpty
	// ErrInvalidUTF8: the record is not valid UTF-8.
	ErrInvalidUTF8
	// ErrMalformed: the record does not have the shape of an event: a JSON
	// syntax error, a value that is not an object, data after the object,
	// a missing or repeated field, an activity that is not a string; or a
	// CSV row without exactly two fields, or with a quote or a control
	// character in its activity.
	ErrMalformed
	// ErrBadUserID: the user id is not an integer in 1..2^63-1: a string,
	// null, a fraction or an exponent in JSON, a sign or a non-digit in
	// CSV, zero, negative or overflowing.
	ErrBadUserID
	// ErrUnknownActivity: the activity is well formed but not in the score
	// table. Only decoders that have a table (Decoder) return it.
	ErrUnknownActivity

	// NumKinds is one more than the largest Kind, to size arrays indexed
	// by Kind.
	NumKinds = int(ErrUnknownActivity) + 1
)

var kindNames = [NumKinds]string{
	ErrTooLong:         "record too long",
	ErrEmpty:           "empty record",
	ErrInvalidUTF8:     "invalid UTF-8",
	ErrMalformed:       "malformed record",
	ErrBadUserID:       "bad user id",
	ErrUnknownActivity: "unknown activity",
}

// String returns a short description of k, such as "bad user id".
func (k Kind) String() string {
	if int(k) < NumKinds && kindNames[k] != "" {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Error returns k.String(), making each Kind a sentinel error.
func (k Kind) Error() string { return k.String() }

// KindOf returns the Kind of a decoding error, found anywhere in err's chain,
// and false when err is nil or not a decoding error.
func KindOf(err error) (Kind, bool) {
	var k Kind
	if errors.As(err, &k) {
		return k, true
	}
	return 0, false
}

// Error is a record the decoders rejected: what kind of problem, where in
// the record, and what exactly.
//
// It does not know where the record came from: the caller wraps it with
// that, as in fmt.Errorf("%s:%d: %w", path, line, err) or
// fmt.Errorf("decode record at %s: %w", origin, err).
type Error struct {
	Kind Kind
	// Offset is the byte offset in the record where the problem was found,
	// or -1 when the problem is with the record as a whole.
	Offset int
	// Detail says what was wrong, or is empty when Kind says it all.
	Detail string
}

// Error formats e as "<kind> at byte <offset>: <detail>".
func (e *Error) Error() string {
	s := e.Kind.String()
	if e.Offset >= 0 {
		s += " at byte " + strconv.Itoa(e.Offset)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap returns e.Kind, so that errors.Is(err, ErrBadUserID) works.
func (e *Error) Unwrap() error { return e.Kind }

func newError(k Kind, off int, detail string) error {
	return &Error{Kind: k, Offset: off, Detail: detail}
}

// quote quotes b for an error message, cut to a length that keeps messages
// readable when a record is long or hostile.
func quote(b []byte) string {
	const maxQuoted = 64
	if len(b) > maxQuoted {
		return strconv.Quote(string(b[:maxQuoted])) + "..."
	}
	return strconv.Quote(string(b))
}
