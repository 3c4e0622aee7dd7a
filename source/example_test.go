package source_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
)

// Lines of a file are records; errors downstream name the file and line.
func ExampleNewFile() {
	in := strings.NewReader("1001,profile.view\n1002,message.private\n1001,profile.picture.like\n")
	src, err := source.NewFile("events.csv", in)
	if err != nil {
		fmt.Println(err)
		return
	}
	p := stream.NewPipeline()
	stream.ForEachBatch(stream.From(p, src), func(_ context.Context, b *stream.Batch[[]byte]) error {
		for _, part := range b.Partitions {
			for i, line := range part.Values {
				o := part.Origin(i)
				fmt.Printf("%s:%d %s\n", o.Source, o.Offset, line)
			}
		}
		return nil
	})
	if err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// events.csv:1 1001,profile.view
	// events.csv:2 1002,message.private
	// events.csv:3 1001,profile.picture.like
}

// The original's static data set: a fixed number of rows over a range of
// users, the same for the same seed.
func ExampleNewGenerator() {
	gen, err := source.NewGenerator(source.GeneratorConfig{Seed: 7, Start: 1000, Users: 100_000, Count: 3})
	if err != nil {
		fmt.Println(err)
		return
	}
	p := stream.NewPipeline()
	stream.ForEachBatch(stream.From(p, gen), func(_ context.Context, b *stream.Batch[score.Event]) error {
		for e := range b.All() {
			fmt.Printf("%s\n", score.AppendCSV(nil, e))
		}
		return nil
	})
	if err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// 52076,profile.picture.like
	// 37688,message.private
	// 81988,message.private
}
