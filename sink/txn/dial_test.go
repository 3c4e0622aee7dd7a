package txn

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hangingDialer dials nowhere: a dial ends only when its context does, as
// one to an address that drops what it is sent ends at its timeout.
type hangingDialer struct{ dialing chan struct{} }

func (d hangingDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

func (d hangingDialer) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	close(d.dialing)
	<-ctx.Done()
	return nil, ctx.Err()
}

// Closing a dialer ends a dial in progress through the config's proxy
// dialer, which a broker's Open holds its lock across, and fails those
// after.
func TestDialerCloseEndsADial(t *testing.T) {
	sc := sarama.NewConfig()
	hang := hangingDialer{dialing: make(chan struct{})}
	sc.Net.Proxy.Enable, sc.Net.Proxy.Dialer = true, hang
	d := newDialer(sc)
	dialed := make(chan error, 1)
	go func() {
		_, err := d.Dial("tcp", "127.0.0.1:9")
		dialed <- err
	}()
	<-hang.dialing
	d.close()
	select {
	case err := <-dialed:
		assert.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the dial went on after close")
	}
	_, err := d.Dial("tcp", "127.0.0.1:9")
	assert.ErrorIs(t, err, net.ErrClosed)
}

// Closing a dialer closes the connections it dialed that are open, and
// forgets those closed before.
func TestDialerCloseClosesItsConnections(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	d := newDialer(sarama.NewConfig())
	var conns []net.Conn
	for range 2 {
		c, err := d.Dial("tcp", l.Addr().String())
		require.NoError(t, err)
		conns = append(conns, c)
	}
	require.NoError(t, conns[0].Close())
	assert.Len(t, d.conns, 1, "the connection closed is forgotten")
	d.close()
	_ = conns[1].SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conns[1].Read(make([]byte, 1))
	assert.ErrorIs(t, err, net.ErrClosed, "the connection open is closed")
}
