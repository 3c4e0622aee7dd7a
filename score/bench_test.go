package score_test

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/sluicehq/sluice/score"
)

func BenchmarkDecode(b *testing.B) {
	jsonRec := []byte(`{"user_id": 1234, "activity": "profile.picture.like"}`)
	csvRec := []byte("1234,profile.picture.like")
	jsonDec, err := score.NewDecoder(score.FormatJSON)
	if err != nil {
		b.Fatal(err)
	}
	csvDec, err := score.NewDecoder(score.FormatCSV)
	if err != nil {
		b.Fatal(err)
	}
	var sink int64

	b.Run("json/Score", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(jsonRec)))
		for b.Loop() {
			id, s, err := jsonDec.Score(jsonRec)
			if err != nil {
				b.Fatal(err)
			}
			sink += id + s
		}
	})
	b.Run("json/Decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(jsonRec)))
		for b.Loop() {
			e, err := jsonDec.Decode(jsonRec)
			if err != nil {
				b.Fatal(err)
			}
			sink += e.UserID
		}
	})
	b.Run("json/DecodeJSON", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(jsonRec)))
		for b.Loop() {
			e, err := score.DecodeJSON(jsonRec)
			if err != nil {
				b.Fatal(err)
			}
			sink += e.UserID
		}
	})
	b.Run("json/encoding-json", func(b *testing.B) {
		// The baseline the hand-written decoder is measured against.
		b.ReportAllocs()
		b.SetBytes(int64(len(jsonRec)))
		for b.Loop() {
			var e score.Event
			if err := json.Unmarshal(jsonRec, &e); err != nil {
				b.Fatal(err)
			}
			sink += e.UserID
		}
	})
	b.Run("csv/Score", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(csvRec)))
		for b.Loop() {
			id, s, err := csvDec.Score(csvRec)
			if err != nil {
				b.Fatal(err)
			}
			sink += id + s
		}
	})
	b.Run("csv/Decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(csvRec)))
		for b.Loop() {
			e, err := csvDec.Decode(csvRec)
			if err != nil {
				b.Fatal(err)
			}
			sink += e.UserID
		}
	})
	b.Run("csv/DecodeCSV", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(csvRec)))
		for b.Loop() {
			e, err := score.DecodeCSV(csvRec)
			if err != nil {
				b.Fatal(err)
			}
			sink += e.UserID
		}
	})
	_ = sink
}

func BenchmarkTable(b *testing.B) {
	big := make(map[string]int64)
	for i := range 64 {
		big["activity."+strconv.Itoa(i)] = int64(i)
	}
	bigTable, err := score.NewTable(big)
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name  string
		table *score.Table
		key   []byte
	}{
		{"default/hit-first", score.Default(), []byte("message.private")},
		{"default/hit-last", score.Default(), []byte("profile.view")},
		{"default/miss", score.Default(), []byte("profile.like")},
		{"map64/hit", bigTable, []byte("activity.42")},
		{"map64/miss", bigTable, []byte("activity.99")},
	}
	var sink int64
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s, _ := c.table.Score(c.key)
				sink += s
			}
		})
	}
	_ = sink
}

func BenchmarkAppend(b *testing.B) {
	e := score.Event{UserID: 1234, Activity: "profile.picture.like"}
	buf := make([]byte, 0, 64)
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = score.AppendJSON(buf[:0], e)
		}
	})
	b.Run("csv", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = score.AppendCSV(buf[:0], e)
		}
	})
}
