// Package score turns activity events into scores: the event model, the
// table of scores per activity, and decoders and encoders for the two
// formats events come in. It knows events, not where they come from.
//
// # Formats
//
// FormatJSON is one JSON object per record, as the original producer writes
// it to Kafka:
//
//	{"user_id": 1234, "activity": "profile.view"}
//
// The fields may come in any order, with white space anywhere JSON allows it
// and escapes in strings. Other fields are checked for syntax and skipped, so
// that producers can add fields. user_id must be an integer in 1..2^63-1,
// without fraction or exponent; activity must be a string.
//
// The JSON decoder is written by hand for this one shape, because
// encoding/json costs over ten times as much and allocates. It accepts
// what encoding/json accepts when it decodes a record into an Event, except
// in these deliberate ways: field names match exactly, not
// case-insensitively; a repeated user_id or activity is an error, not "the
// last one wins"; a missing field or null is an error, not zero; invalid
// UTF-8 is an error, not replaced by U+FFFD; a leading byte order mark is
// skipped. Arrays and objects nest at most 10000 deep, as in encoding/json.
//
// FormatCSV is one row per record, as in the original's static data set:
//
//	1234,profile.view
//
// A row has exactly two fields and no quoting, and nothing is trimmed: the
// user id is decimal digits (leading zeros allowed) in 1..2^63-1; the
// activity holds no comma, double quote or control character. The original
// files have no header, but a file may start with the line
// "user_id,activity": DetectFormat and IsCSVHeader recognize it, and a
// reader skips it; the decoders reject it, as they would anywhere else.
//
// In both formats a record is one line without its line ending (a trailing
// "\n", "\r\n" or lone "\r" is allowed, and taken as the line's end) or one Kafka message value. A leading UTF-8 byte
// order mark is skipped. A record longer than the limit (DefaultMaxLen,
// 64 KiB, unless set with WithMaxLen) is rejected without being read.
//
// DetectFormat tells the format of a file from its first line. AppendJSON and
// AppendCSV write events in these formats.
//
// # Scores
//
// A Table maps each activity to a score, an integer in 0..MaxScore. Default
// returns the original's:
//
//	profile.picture.like  2
//	profile.view          1
//	message.private       3
//
// LoadTable reads another from a JSON file such as
//
//	{"profile.picture.like": 2, "profile.view": 1, "message.private": 3}
//
// (perhaps after a byte order mark) and rejects an empty table, a score
// that is negative, over MaxScore or not an integer, a duplicate activity,
// a name that a CSV row could not carry, and anything that is not one JSON
// object, with an error that wraps ErrInvalidTable and names the file, line
// and column. A Table is immutable and safe for concurrent use; looking up
// an activity given as []byte does not allocate.
//
// # Decoding
//
// A Decoder decodes the records of one format and scores them with a Table.
// Decoder.Score returns the user id and the score of a record without
// allocating: the hot path of a pipeline. Decoder.Decode returns the Event.
// A Decoder is immutable and safe for concurrent use. DecodeJSON and
// DecodeCSV decode without a table and accept any activity.
//
// # Errors
//
// A record that does not decode gets an *Error: its Kind, the byte offset in
// the record where the problem is, and a detail. The kinds, in the order in
// which they win when a record has several problems:
//
//   - ErrTooLong: longer than the limit;
//   - ErrEmpty: nothing but white space;
//   - ErrInvalidUTF8: not UTF-8;
//   - ErrMalformed: not the shape of an event (JSON syntax, a missing,
//     repeated or mistyped field, data after the object; a CSV row without
//     two fields, or with a quote or a control character);
//   - ErrBadUserID: a user id that is not an integer in 1..2^63-1;
//   - ErrUnknownActivity: an activity that is not in the table.
//
// Each Kind is an error value: errors.Is(err, score.ErrUnknownActivity)
// tests for one, and KindOf(err) returns it, to count bad records per kind.
// An *Error does not know where its record came from: the caller wraps it
// with that, giving messages such as
//
//	events.csv:17: bad user id at byte 2: user id "12a" is not an integer
//	decode record at messages/3@1042: unknown activity at byte 30: "profile.like"
package score
