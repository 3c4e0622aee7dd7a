package sink_test

import (
	"context"
	"fmt"
	"os"

	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// Popular users as JSON lines on standard output.
func ExampleNewJSONLines() {
	type popular struct {
		UserID int64 `json:"user_id"`
		Score  int64 `json:"score"`
	}
	p := stream.NewPipeline()
	in := stream.From(p, source.NewSlice("totals", []popular{{1042, 17}, {3001, 15}}, 1))
	out := sink.NewJSONLines[popular]("stdout", os.Stdout)
	defer out.Close()
	stream.To(in, out)
	if err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {"user_id":1042,"score":17}
	// {"user_id":3001,"score":15}
}
