package score_test

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/score"
)

// A pipeline's map step: score each record, keep a running total per user,
// and count bad records per kind.
func Example() {
	d, err := score.NewDecoder(score.FormatJSON)
	if err != nil {
		fmt.Println(err)
		return
	}
	messages := []string{ // the values of messages/3 from offset 1040 on
		`{"user_id": 1234, "activity": "profile.view"}`,
		`{"activity": "message.private", "user_id": 1234, "ts": 1700000000}`,
		`{"user_id": 1234, "activity": "profile.like"}`,
		`{"user_id": "1234", "activity": "profile.view"}`,
		`{"user_id": 1001, "activity": "profile.picture.like"}`,
	}
	totals := map[int64]int64{}
	var bad [score.NumKinds]int
	for i, msg := range messages {
		user, s, err := d.Score([]byte(msg))
		if err != nil {
			kind, _ := score.KindOf(err)
			bad[kind]++
			fmt.Printf("decode record at messages/3@%d: %v\n", 1040+i, err)
			continue
		}
		totals[user] += s
	}
	fmt.Println("totals:", totals)
	fmt.Println("unknown activities:", bad[score.ErrUnknownActivity], "bad user ids:", bad[score.ErrBadUserID])
	// Output:
	// decode record at messages/3@1042: unknown activity at byte 30: "profile.like"
	// decode record at messages/3@1043: bad user id at byte 12: user_id is a string, want an integer
	// totals: map[1001:2 1234:4]
	// unknown activities: 1 bad user ids: 1
}

// Reading a file whose format is not known in advance: the first line tells
// it, and a CSV header is skipped.
func ExampleDetectFormat() {
	const file = "user_id,activity\n1234,profile.view\n12a,profile.view\n1234,message.private\n"
	sc := bufio.NewScanner(strings.NewReader(file))
	var d *score.Decoder
	for line := 1; sc.Scan(); line++ {
		if d == nil {
			format := score.DetectFormat(sc.Bytes())
			fmt.Println("format:", format)
			var err error
			if d, err = score.NewDecoder(format); err != nil {
				fmt.Println(err)
				return
			}
			if score.IsCSVHeader(sc.Bytes()) {
				continue
			}
		}
		e, err := d.Decode(sc.Bytes())
		if err != nil {
			fmt.Printf("events.csv:%d: %v\n", line, err)
			continue
		}
		fmt.Printf("%+v\n", e)
	}
	// Output:
	// format: csv
	// {UserID:1234 Activity:profile.view}
	// events.csv:3: bad user id at byte 2: user id "12a" is not an integer
	// {UserID:1234 Activity:message.private}
}

func ExampleParseTable() {
	table, err := score.ParseTable("scores.json", []byte(`{"like": 2, "view": 1, "share": 5}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for activity, s := range table.All() {
		fmt.Println(activity, s)
	}

	_, err = score.ParseTable("bad.json", []byte("{\n  \"like\": 2,\n  \"view\": -1\n}"))
	fmt.Println(err)
	// Output:
	// like 2
	// share 5
	// view 1
	// invalid score table bad.json:3:3: activity "view": score -1 is outside 0..1000000
}

func ExampleAppendJSON() {
	e := score.Event{UserID: 1234, Activity: "profile.view"}
	buf := score.AppendJSON(nil, e)
	buf = append(buf, '\n')
	buf = score.AppendCSV(buf, e)
	fmt.Println(string(buf))
	// Output:
	// {"user_id":1234,"activity":"profile.view"}
	// 1234,profile.view
}
