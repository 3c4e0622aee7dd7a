package prom_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/source"
	"github.com/sluicehq/sluice/stream"
	"github.com/sluicehq/sluice/stream/prom"
)

// A pipeline's metrics, registered where Prometheus scrapes them (here a
// registry of its own; promhttp.HandlerFor serves one).
func Example() {
	m := prom.New()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)

	p := stream.NewPipeline(stream.Interval(0), stream.MaxRecords(4), stream.WithHook(m))
	in := stream.From(p, source.NewSlice("clicks", []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 2))
	stream.To(stream.Filter(in, func(v int) bool { return v%2 == 0 }).Named("even"), sink.NewMemory[int]())
	if err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP sluice_batches_total Batches processed: their outputs ran (with CommitInterval, a later batch may commit them).
# TYPE sluice_batches_total counter
sluice_batches_total 3
# HELP sluice_records_total Records read into batches, by source partition (records_skipped_total counts those a restored state had counted).
# TYPE sluice_records_total counter
sluice_records_total{partition="0",source="clicks"} 5
sluice_records_total{partition="1",source="clicks"} 5
`), "sluice_batches_total", "sluice_records_total")
	fmt.Println("metrics as expected:", err == nil)
	// Output: metrics as expected: true
}
