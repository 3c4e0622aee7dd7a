package kafkaconf

import (
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
