package kafkatest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// A HangingDialer's dial ends with its context, or with HangUp for one
// with none, and not before.
func TestHangingDialer(t *testing.T) {
	d := NewHangingDialer(t)
	ctx, cancel := context.WithCancel(context.Background())
	dialed := make(chan error, 2)
	go func() {
		_, err := d.DialContext(ctx, "tcp", "127.0.0.1:9")
		dialed <- err
	}()
	go func() {
		_, err := d.Dial("tcp", "127.0.0.1:9")
		dialed <- err
	}()
	<-d.Dialing()
	select {
	case err := <-dialed:
		t.Fatalf("a dial ended by itself: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	assert.ErrorIs(t, <-dialed, context.Canceled, "the dial with the context cancelled")
	d.HangUp()
	assert.ErrorContains(t, <-dialed, "hung up")
	d.HangUp()
}
