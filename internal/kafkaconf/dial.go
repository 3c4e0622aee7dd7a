package kafkaconf

import (
	"context"
	"net"
	"sync"

	"github.com/IBM/sarama"
)

// CutDialer dials as sarama does with the config it was made from
// (through its proxy dialer, if one is set), and keeps the connections it
// dialed that are open, for Close. sarama holds a broker's lock across a
// request, which cannot be cancelled, and its client retries a metadata
// fetch or a coordinator lookup on the same: only closing the connection
// under them ends them before Net.ReadTimeout. Set it as the proxy dialer
// of a copy of the config (Net.Proxy.Enable and Net.Proxy.Dialer).
//
// Once closed, it dials nothing. It is safe for concurrent use.
type CutDialer struct {
	dialer interface {
		Dial(network, addr string) (net.Conn, error)
	}
	ctx    context.Context // of the dials, cancelled by Close
	cancel context.CancelFunc

	mu    sync.Mutex
	conns map[*cutConn]struct{} // nil once closed
}

// NewCutDialer returns a CutDialer that dials as sarama does under sc.
func NewCutDialer(sc *sarama.Config) *CutDialer {
	d := &CutDialer{conns: map[*cutConn]struct{}{}, dialer: Dialer(sc)}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d
}

// Dial implements proxy.Dialer (sarama's Net.Proxy.Dialer). Once d is
// closed it fails with net.ErrClosed.
func (d *CutDialer) Dial(network, addr string) (net.Conn, error) {
	if d.Closed() {
		return nil, net.ErrClosed
	}
	var (
		c   net.Conn
		err error
	)
	if cd, ok := d.dialer.(interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}); ok {
		// Close ends a dial that hangs (an address that drops what it
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
	cc := &cutConn{Conn: c, d: d}
	d.conns[cc] = struct{}{}
	if pc, ok := c.(net.PacketConn); ok {
		// Go's resolver, which sarama dials with (see
		// Net.ResolveCanonicalBootstrapServers), frames its queries as
		// datagrams only on a net.PacketConn.
		return &cutPacketConn{cutConn: cc, pc: pc}, nil
	}
	return cc, nil
}

// Close closes the connections open, and fails the dials in progress (when
// the dialer dials with a context) and after. It is safe to call more
// than once, and from context.AfterFunc.
func (d *CutDialer) Close() {
	d.mu.Lock()
	conns := d.conns
	d.conns = nil
	d.mu.Unlock()
	d.cancel()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

// Closed reports whether Close was called.
func (d *CutDialer) Closed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conns == nil
}

// Done returns a channel closed by Close.
func (d *CutDialer) Done() <-chan struct{} { return d.ctx.Done() }

// cutConn is a connection of a CutDialer, which forgets it as it closes:
// sarama opens a broker's connection again after a failure, for as long as
// the dialer lasts.
type cutConn struct {
	net.Conn
	d *CutDialer
}

func (c *cutConn) Close() error {
	c.d.mu.Lock()
	delete(c.d.conns, c)
	c.d.mu.Unlock()
	return c.Conn.Close()
}

// cutPacketConn is a cutConn of a datagram connection.
type cutPacketConn struct {
	*cutConn
	pc net.PacketConn
}

func (c *cutPacketConn) ReadFrom(p []byte) (int, net.Addr, error) { return c.pc.ReadFrom(p) }

func (c *cutPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	return c.pc.WriteTo(p, addr)
}
