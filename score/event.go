package score

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// Event is one user activity, as the original producer writes it:
// {"user_id": 1234, "activity": "profile.view"}.
type Event struct {
	UserID   int64  `json:"user_id"`
	Activity string `json:"activity"`
}

// Format is the encoding of an event record.
type Format uint8

// The formats of event records.
const (
	FormatUnknown Format = iota
	// FormatJSON is one JSON object per record:
	// {"user_id": 1234, "activity": "profile.view"}.
	FormatJSON
	// FormatCSV is one row per record, the original's static data set:
	// 1234,profile.view
	FormatCSV
)

// String returns "json", "csv" or "unknown".
func (f Format) String() string {
	switch f {
	case FormatJSON:
		return "json"
	case FormatCSV:
		return "csv"
	}
	return "unknown"
}

// csvHeader is the header line a CSV file may start with. The original
// files have none; spreadsheets and hand-made files often do.
const csvHeader = "user_id,activity"

var bom = []byte("\xef\xbb\xbf")

// DetectFormat tells the format of a file from its first line: FormatJSON
// when it starts with '{', FormatCSV when it is the header line
// "user_id,activity" (see IsCSVHeader) or starts with a digit and holds a
// comma, and FormatUnknown otherwise (an empty line, or neither). A leading
// UTF-8 byte order mark is ignored, and so are leading spaces or tabs
// before a '{' or a digit; the header is not indented.
//
// It looks at the shape only: the line may still fail to decode.
func DetectFormat(firstLine []byte) Format {
	b := bytes.TrimLeft(bytes.TrimPrefix(firstLine, bom), " \t")
	switch {
	case len(b) == 0:
		return FormatUnknown
	case b[0] == '{':
		return FormatJSON
	case IsCSVHeader(firstLine):
		return FormatCSV
	case '0' <= b[0] && b[0] <= '9' && bytes.IndexByte(b, ',') >= 0:
		return FormatCSV
	}
	return FormatUnknown
}

// IsCSVHeader reports whether line is the optional header of a CSV file,
// "user_id,activity", with perhaps a byte order mark before it and a line
// ending after it, nothing else: not indented. A reader skips it when it
// is the first line; the decoders reject it (as a bad user id) anywhere.
func IsCSVHeader(line []byte) bool {
	return string(trimEOL(bytes.TrimPrefix(line, bom))) == csvHeader
}

// trimEOL removes one trailing "\n", "\r\n" or "\r".
func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// AppendJSON appends e to dst as a compact JSON object,
// {"user_id":1234,"activity":"profile.view"}, and returns the extended
// slice. Like encoding/json, it replaces invalid UTF-8 in the activity with
// U+FFFD; it does not escape HTML characters.
func AppendJSON(dst []byte, e Event) []byte {
	dst = append(dst, `{"user_id":`...)
	dst = strconv.AppendInt(dst, e.UserID, 10)
	dst = append(dst, `,"activity":`...)
	dst = appendJSONString(dst, e.Activity)
	return append(dst, '}')
}

// AppendCSV appends e to dst as a CSV row without a line ending,
// 1234,profile.view, and returns the extended slice. It does not quote: an
// activity holding a comma, a double quote or a control character gives a
// row that DecodeCSV rejects, but for a line ending at its end ("\n",
// "\r\n", "\r"), which DecodeCSV takes as the row's end. Activities of a
// Table never hold them.
func AppendCSV(dst []byte, e Event) []byte {
	dst = strconv.AppendInt(dst, e.UserID, 10)
	dst = append(dst, ',')
	return append(dst, e.Activity...)
}

const hexDigits = "0123456789abcdef"

func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0 // of the run of bytes not yet copied
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonPlain[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// jsonPlain[c] is true for the ASCII bytes a JSON string holds as they are.
var jsonPlain = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()
