package kafkaconf

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
)

type closer struct {
	err    error
	closed *[]string
	name   string
}

func (c closer) Close() error { *c.closed = append(*c.closed, c.name); return c.err }

func TestCloseAllClosesInOrderAndJoinsErrors(t *testing.T) {
	var closed []string
	boom := errors.New("boom")
	var none io.Closer
	err := CloseAll("changelog totals", closer{closed: &closed, name: "producer", err: boom}, none, closer{closed: &closed, name: "client"})
	assert.Equal(t, []string{"producer", "client"}, closed, "in order, the nil one skipped")
	assert.ErrorIs(t, err, boom)
	assert.EqualError(t, err, "changelog totals: close: boom")
	assert.NoError(t, CloseAll("exchange x", none))
}

func TestAwaitRetriesUntilReady(t *testing.T) {
	calls := 0
	err := Await(context.Background(), func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	assert.NoError(t, err)
	assert.Equal(t, 3, calls)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, Await(ctx, func() error { return errors.New("never") }), context.Canceled)
}
