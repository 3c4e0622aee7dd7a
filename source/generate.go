package source

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/sluicehq/sluice/score"
	"github.com/sluicehq/sluice/stream"
)

// Activities are the activities the original producer picks from, each
// with the same chance.
var Activities = []string{"profile.picture.like", "profile.view", "message.private"}

// GeneratorConfig says what a Generator yields.
type GeneratorConfig struct {
	// Name names the generator in origins (default "generator").
	Name string
	// Seed makes the sequence repeatable: the same seed and settings give
	// the same events.
	Seed uint64
	// Start is the first user ID (default 1000). Users is how far the IDs
	// go past it, not how many there are: user IDs are uniform over
	// Start..Start+Users, both ends included, Users+1 IDs, as the
	// original producer's randint(1000, 10000). Users zero is the one ID
	// Start, unless Start is zero too: with neither set, Users is 9000,
	// the original's 1000..10000. So Users: 100 alone is 1000..1100.
	Start, Users int64
	// Count is the number of events to yield before io.EOF; 0 is endless.
	Count int64
	// Rate is the number of events per second, on a schedule from the
	// first Poll: events owed after a stall (a Poll late by a minute) are
	// handed out at once, up to the buffer, so that the average holds.
	// 0 is as fast as possible.
	Rate float64
	// Partitions spreads events by user ID (user mod Partitions), as a
	// producer keyed by user would: a generator's stream is keyed by user.
	// Default 1.
	Partitions int
	// Activities to pick from (default Activities).
	Activities []string
}

// Generator is a source of random activity events, with the original's two
// modes: a fixed number of rows, or an endless stream at a rate.
type Generator struct {
	cfg     GeneratorConfig
	rng     *rand.Rand
	emitted int64
	offsets []int64
	start   time.Time
}

var _ stream.Source[score.Event] = (*Generator)(nil)

// NewGenerator validates cfg and returns a Generator.
func NewGenerator(cfg GeneratorConfig) (*Generator, error) {
	if cfg.Name == "" {
		cfg.Name = "generator"
	}
	if cfg.Start == 0 && cfg.Users == 0 {
		cfg.Users = 9000
	}
	if cfg.Start == 0 {
		cfg.Start = 1000
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 1
	}
	if len(cfg.Activities) == 0 {
		cfg.Activities = Activities
	}
	switch {
	case cfg.Start < 1:
		return nil, fmt.Errorf("source: generator: first user %d: user IDs are positive (0 is the default, 1000)", cfg.Start)
	case cfg.Users < 0 || cfg.Start > (1<<63-1)-cfg.Users:
		return nil, fmt.Errorf("source: generator: %d users from %d: out of range", cfg.Users, cfg.Start)
	case cfg.Count < 0:
		return nil, fmt.Errorf("source: generator: count %d is negative", cfg.Count)
	case cfg.Rate < 0:
		return nil, fmt.Errorf("source: generator: rate %v is negative", cfg.Rate)
	case cfg.Partitions < 1:
		return nil, fmt.Errorf("source: generator: %d partitions: need at least 1", cfg.Partitions)
	}
	return &Generator{
		cfg:     cfg,
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		offsets: make([]int64, cfg.Partitions),
	}, nil
}

// Next returns the next event, ignoring Count and Rate.
func (g *Generator) Next() score.Event {
	return score.Event{
		UserID:   g.cfg.Start + g.rng.Int64N(g.cfg.Users+1),
		Activity: g.cfg.Activities[g.rng.IntN(len(g.cfg.Activities))],
	}
}

// Poll implements stream.Source. At a rate, it waits until the next event
// is due.
func (g *Generator) Poll(ctx context.Context, buf []stream.Record[score.Event]) (int, error) {
	if g.start.IsZero() {
		g.start = time.Now()
	}
	want := int64(len(buf))
	if g.cfg.Count > 0 {
		if g.emitted >= g.cfg.Count {
			return 0, io.EOF
		}
		want = min(want, g.cfg.Count-g.emitted)
	}
	if want == 0 {
		return 0, nil // no room: not the end
	}
	if g.cfg.Rate > 0 {
		due := int64(time.Since(g.start).Seconds()*g.cfg.Rate) - g.emitted
		if due <= 0 {
			next := g.start.Add(time.Duration(float64(g.emitted+1) / g.cfg.Rate * float64(time.Second)))
			t := time.NewTimer(time.Until(next))
			select {
			case <-ctx.Done():
				t.Stop()
				return 0, ctx.Err()
			case <-t.C:
			}
			due = max(1, int64(time.Since(g.start).Seconds()*g.cfg.Rate)-g.emitted)
		}
		want = min(want, due)
	}
	for i := range want {
		e := g.Next()
		p := int32(e.UserID % int64(g.cfg.Partitions))
		buf[i] = stream.Record[score.Event]{Value: e, Origin: stream.Origin{Source: g.cfg.Name, Partition: p, Offset: g.offsets[p]}}
		g.offsets[p]++
	}
	g.emitted += want
	if g.cfg.Count > 0 && g.emitted == g.cfg.Count {
		return int(want), io.EOF
	}
	return int(want), nil
}
