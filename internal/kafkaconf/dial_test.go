package kafkaconf

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkatest"
)

// Closing a CutDialer ends a dial in progress through the config's proxy
// dialer, which a broker's Open holds its lock across, and fails those
// after; Closed and Done tell it.
func TestCutDialerCloseEndsADial(t *testing.T) {
	sc := sarama.NewConfig()
	hang := kafkatest.NewHangingDialer(t)
	sc.Net.Proxy.Enable, sc.Net.Proxy.Dialer = true, hang
	d := NewCutDialer(sc)
	dialed := make(chan error, 1)
	go func() {
		_, err := d.Dial("tcp", "127.0.0.1:9")
		dialed <- err
	}()
	<-hang.Dialing()
	assert.False(t, d.Closed())
	d.Close()
	assert.True(t, d.Closed())
	select {
	case <-d.Done():
	default:
		t.Error("Done is not closed once the dialer is")
	}
	select {
	case err := <-dialed:
		assert.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the dial went on after Close")
	}
	_, err := d.Dial("tcp", "127.0.0.1:9")
	assert.ErrorIs(t, err, net.ErrClosed)
}

// Closing a CutDialer closes the connections it dialed that are open, and
// forgets those closed before.
func TestCutDialerCloseClosesItsConnections(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	d := NewCutDialer(sarama.NewConfig())
	var conns []net.Conn
	for range 2 {
		c, err := d.Dial("tcp", l.Addr().String())
		require.NoError(t, err)
		conns = append(conns, c)
	}
	require.NoError(t, conns[0].Close())
	assert.Len(t, d.conns, 1, "the connection closed is forgotten")
	d.Close()
	_ = conns[1].SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conns[1].Read(make([]byte, 1))
	assert.ErrorIs(t, err, net.ErrClosed, "the connection open is closed")
}

// dnsServer answers every A query over UDP with 127.0.0.1, and every other
// query with no address, until the test ends. It returns its address.
func dnsServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = pc.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			// The question: a name, its labels up to the empty one, then
			// its type and class.
			end := 12
			for end < n && q[end] != 0 {
				end += int(q[end]) + 1
			}
			end += 5
			if n < 12 || end > n {
				continue // not a query: a dialer's connection that framed it as a stream's would
			}
			resp := append([]byte{q[0], q[1], 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0}, q[12:end]...)
			if q[end-4] == 0 && q[end-3] == 1 { // type A
				resp[7] = 1
				resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1)
			}
			_, _ = pc.WriteTo(resp, from)
		}
	}()
	return pc.LocalAddr().String()
}

// sarama resolves the bootstrap brokers' names
// (Net.ResolveCanonicalBootstrapServers) with a resolver that dials
// through its config's dialer, a CutDialer, as Go's own resolver
// (Linux's default) does: the datagram connection it dials for a query
// must be one still (a net.PacketConn), for the resolver to frame its
// queries as datagrams, not as a stream's.
func TestACutDialersConnectionResolvesNames(t *testing.T) {
	dns := dnsServer(t)
	d := NewCutDialer(sarama.NewConfig())
	defer d.Close()
	r := &net.Resolver{PreferGo: true, Dial: func(_ context.Context, network, _ string) (net.Conn, error) {
		return d.Dial(network, dns)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := r.LookupHost(ctx, "broker.sluice.test")
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1"}, addrs)
}
