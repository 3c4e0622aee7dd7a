package kafkatest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
)

// HangingDialer dials nowhere: a dial ends only when its context does, as
// one to an address that drops what it is sent ends at its timeout, or
// when HangUp is called. It stands for a proxy dialer of the user's
// (sarama's Net.Proxy.Dialer) that dials with a context.
type HangingDialer struct {
	dialing, hungUp chan struct{}
	dialed, hangUp  func()
}

// NewHangingDialer returns a HangingDialer, which the test's cleanup hangs
// up.
func NewHangingDialer(t testing.TB) *HangingDialer {
	d := &HangingDialer{dialing: make(chan struct{}), hungUp: make(chan struct{})}
	d.dialed = sync.OnceFunc(func() { close(d.dialing) })
	d.hangUp = sync.OnceFunc(func() { close(d.hungUp) })
	t.Cleanup(d.HangUp)
	return d
}

// Dial dials with no context: it ends only with HangUp.
func (d *HangingDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

// DialContext fails once ctx is done, with its error, or once d is hung
// up.
func (d *HangingDialer) DialContext(ctx context.Context, _, addr string) (net.Conn, error) {
	d.dialed()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-d.hungUp:
		return nil, fmt.Errorf("dial %s: hung up", addr)
	}
}

// Dialing returns a channel closed as the first dial starts.
func (d *HangingDialer) Dialing() <-chan struct{} { return d.dialing }

// HangUp ends the dials in progress, and those after at once. It is safe
// to call more than once.
func (d *HangingDialer) HangUp() { d.hangUp() }
