package txn

import (
	"context"
	"net"
	"sync"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/kafkaconf"
)

// dialer dials the connections of a registration's client, as sarama
// does with the config it was made from (through its proxy dialer, if
// one is set), and keeps those open, for close. sarama holds a broker's
// lock across a request, which cannot be cancelled, and its client
// retries a metadata fetch or a coordinator lookup on the same: only
// closing the connection under them ends them before Net.ReadTimeout.
// Once closed, it dials nothing.
type dialer struct {
	dialer interface {
		Dial(network, addr string) (net.Conn, error)
	}
	ctx    context.Context // of the dials, cancelled by close
	cancel context.CancelFunc

	mu    sync.Mutex
	conns map[*dialedConn]struct{} // nil once closed
}

func newDialer(sc *sarama.Config) *dialer {
	d := &dialer{conns: map[*dialedConn]struct{}{}, dialer: kafkaconf.Dialer(sc)}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d
}

// Dial implements proxy.Dialer (sarama's Net.Proxy.Dialer).
func (d *dialer) Dial(network, addr string) (net.Conn, error) {
	if d.isClosed() {
		return nil, net.ErrClosed
	}
	var (
		c   net.Conn
		err error
	)
	if cd, ok := d.dialer.(interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}); ok {
		// close ends a dial that hangs (an address that drops what it
		// is sent) too.
		c, err = cd.DialContext(d.ctx, network, addr)
	} else {
		c, err = d.dialer.Dial(network, addr)
	}
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conns == nil {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	dc := &dialedConn{Conn: c, d: d}
	d.conns[dc] = struct{}{}
	if pc, ok := c.(net.PacketConn); ok {
		// Go's resolver, which sarama dials with (see
		// Net.ResolveCanonicalBootstrapServers), frames its queries as
		// datagrams only on a net.PacketConn.
		return &dialedPacketConn{dialedConn: dc, pc: pc}, nil
	}
	return dc, nil
}

// close closes the connections open, and fails the dials in progress (when
// the dialer dials with a context) and after. It is safe to call more
// than once.
func (d *dialer) close() {
	d.mu.Lock()
	conns := d.conns
	d.conns = nil
	d.mu.Unlock()
	d.cancel()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

func (d *dialer) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns == nil
}

// dialedConn is a connection of a dialer, which forgets it as it closes:
// sarama opens a broker's connection again after a failure, for as long as
// the registration lasts.
type dialedConn struct {
	net.Conn
	d *dialer
}

func (c *dialedConn) Close() error {
	c.d.mu.Lock()
	delete(c.d.conns, c)
	c.d.mu.Unlock()
	return c.Conn.Close()
}

// dialedPacketConn is a dialedConn of a datagram connection.
type dialedPacketConn struct {
	*dialedConn
	pc net.PacketConn
}

func (c *dialedPacketConn) ReadFrom(p []byte) (int, net.Addr, error) { return c.pc.ReadFrom(p) }

func (c *dialedPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	return c.pc.WriteTo(p, addr)
}
