package score_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/sluicehq/sluice/score"
)

// refJSONResult is what encoding/json makes of a record.
type refJSONResult struct {
	event score.Event
	ok    bool // the record is an event by our rules, as decoded by encoding/json
	// valid: the record is JSON (after a byte order mark, which encoding/json
	// rejects and we skip).
	valid bool
	// dup: user_id or activity appears twice; encoding/json takes the last,
	// we reject the record.
	dup bool
	// caseVariant: a field name matches user_id or activity only without
	// regard to case; encoding/json decodes it into the struct field, we
	// skip it.
	caseVariant bool
}

// refJSON decodes rec with encoding/json, then applies the rules the
// package adds on top: both fields present, a positive integer user id, a
// string activity.
func refJSON(rec []byte) refJSONResult {
	var r refJSONResult
	rec = bytes.TrimPrefix(rec, []byte("\ufeff"))
	if !json.Valid(rec) {
		return r
	}
	r.valid = true
	var m map[string]json.RawMessage
	if json.Unmarshal(rec, &m) != nil || m == nil {
		return r // not an object
	}

	dec := json.NewDecoder(bytes.NewReader(rec))
	if _, err := dec.Token(); err != nil {
		panic(err) // rec is valid JSON
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			panic(err)
		}
		key := tok.(string)
		switch {
		case key == "user_id" || key == "activity":
			r.dup = r.dup || seen[key]
			seen[key] = true
		case strings.EqualFold(key, "user_id") || strings.EqualFold(key, "activity"):
			r.caseVariant = true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			panic(err)
		}
	}

	id, act := m["user_id"], m["activity"]
	if id == nil || act == nil || act[0] != '"' {
		return r
	}
	n, err := strconv.ParseInt(string(id), 10, 64)
	if err != nil || n <= 0 {
		return r
	}
	if err := json.Unmarshal(act, &r.event.Activity); err != nil {
		panic(err)
	}
	r.event.UserID = n
	r.ok = true
	return r
}

// refCSV decodes rec by the package's rules for CSV rows with the standard
// library's strings and strconv.
func refCSV(rec []byte) (score.Event, bool) {
	if !utf8.Valid(rec) {
		return score.Event{}, false
	}
	s := strings.TrimPrefix(string(rec), "\ufeff")
	s = strings.TrimSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\r")
	fields := strings.Split(s, ",")
	if len(fields) != 2 {
		return score.Event{}, false
	}
	id, act := fields[0], fields[1]
	if id == "" || strings.Trim(id, "0123456789") != "" {
		return score.Event{}, false
	}
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n <= 0 {
		return score.Event{}, false
	}
	if strings.ContainsFunc(act, func(r rune) bool { return r == '"' || r < 0x20 || r == 0x7f }) {
		return score.Event{}, false
	}
	return score.Event{UserID: n, Activity: act}, true
}

// csvSafe reports whether a CSV row can carry activity.
func csvSafe(activity string) bool {
	return utf8.ValidString(activity) && !strings.ContainsFunc(activity, func(r rune) bool {
		return r == ',' || r == '"' || r < 0x20 || r == 0x7f
	})
}

// randomJSON writes e as a JSON record as some producer might: fields in
// any order, white space anywhere, escapes where they may be, extra fields.
func randomJSON(r *rand.Rand, e score.Event) []byte {
	ws := func() string {
		return [...]string{"", "", "", " ", "\t", "\n", "\r\n  "}[r.IntN(7)]
	}
	fields := []string{
		jsonString(r, "user_id") + ws() + ":" + ws() + strconv.FormatInt(e.UserID, 10),
		jsonString(r, "activity") + ws() + ":" + ws() + jsonString(r, e.Activity),
	}
	for range r.IntN(4) {
		fields = append(fields, jsonString(r, randomText(r, 6))+ws()+":"+ws()+randomValue(r, 3))
	}
	r.Shuffle(len(fields), func(i, j int) { fields[i], fields[j] = fields[j], fields[i] })
	var b strings.Builder
	b.WriteString(ws() + "{" + ws())
	for i, f := range fields {
		if i > 0 {
			b.WriteString(ws() + "," + ws())
		}
		b.WriteString(f)
	}
	b.WriteString(ws() + "}" + ws())
	return []byte(b.String())
}

// jsonString quotes s, escaping at random what may be escaped.
func jsonString(r *rand.Rand, s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		escape := r.IntN(4) == 0
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteRune(c)
		case c < 0x20 || escape && c < 0x10000:
			short := map[rune]string{'\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`, '/': `\/`}
			if e, ok := short[c]; ok && r.IntN(2) == 0 {
				b.WriteString(e)
			} else {
				b.WriteString(`\u` + strings.ToUpper(strconv.FormatInt(0x10000+int64(c), 16)[1:]))
			}
		case escape:
			hi, lo := utf16.EncodeRune(c)
			b.WriteString(`\u` + strconv.FormatInt(int64(hi), 16) + `\u` + strconv.FormatInt(int64(lo), 16))
		default:
			b.WriteRune(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

var textRunes = []rune("abcxyz._-/ \"\\\b\f\n\r\t\x00\x1f\x7féü€😀\ufffd\u2028,")

func randomText(r *rand.Rand, maxLen int) string {
	rs := make([]rune, r.IntN(maxLen+1))
	for i := range rs {
		rs[i] = textRunes[r.IntN(len(textRunes))]
	}
	return string(rs)
}

func randomValue(r *rand.Rand, depth int) string {
	n := 7
	if depth == 0 {
		n = 5
	}
	switch r.IntN(n) {
	case 0:
		return jsonString(r, randomText(r, 5))
	case 1:
		return [...]string{"0", "-1", "12.5", "1e9", "-0.0E-2", "123456789012345678901234567890"}[r.IntN(6)]
	case 2:
		return "true"
	case 3:
		return "false"
	case 4:
		return "null"
	case 5:
		var items []string
		for range r.IntN(4) {
			items = append(items, randomValue(r, depth-1))
		}
		return "[" + strings.Join(items, " , ") + "]"
	}
	var items []string
	for range r.IntN(4) {
		items = append(items, jsonString(r, randomText(r, 4))+":"+randomValue(r, depth-1))
	}
	return "{ " + strings.Join(items, ",") + "}"
}

func randomEvent(r *rand.Rand) score.Event {
	var id int64
	switch r.IntN(3) {
	case 0:
		id = 1000 + r.Int64N(9000) // the original's users
	case 1:
		id = 1 + r.Int64N(1<<63-1)
	default:
		id = 1<<63 - 1 - r.Int64N(10)
	}
	activity := randomText(r, 12)
	if r.IntN(2) == 0 {
		names := score.Default().Activities()
		activity = names[r.IntN(len(names))]
	}
	return score.Event{UserID: id, Activity: activity}
}
