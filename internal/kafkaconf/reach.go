package kafkaconf

import (
	"context"
	"net"
	"time"

	"github.com/IBM/sarama"
)

// Reach makes a first contact with brokers under sc: a client whose dials,
// reads, writes and metadata retries end within timeout (see Probe), and
// whose connections close once ctx is done, which a context alone would
// not end: sarama waits Net.ReadTimeout (30s) for each of several reads.
// It closes the client at once and returns nil when the brokers answered;
// otherwise sarama's error, or, when ctx ended it, ctx's cause. It blocks.
func Reach(ctx context.Context, brokers []string, sc *sarama.Config, timeout time.Duration) error {
	probeCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	probe := Probe(sc, timeout)
	d := &ctxDialer{ctx: probeCtx, next: Dialer(&probe)}
	probe.Net.Proxy.Enable, probe.Net.Proxy.Dialer = true, d
	backoff := probe.Metadata.Retry.BackoffFunc
	probe.Metadata.Retry.BackoffFunc = func(retries, maxRetries int) time.Duration {
		switch {
		case probeCtx.Err() != nil:
			return 0 // the retries fail at once
		case backoff != nil:
			return backoff(retries, maxRetries)
		}
		return probe.Metadata.Retry.Backoff
	}
	client, err := sarama.NewClient(brokers, &probe)
	if client != nil {
		client.Close()
	}
	if cerr := context.Cause(ctx); cerr != nil {
		return cerr
	}
	return err
}

// ctxDialer dials with next, and closes the connections it made once ctx
// is done, which ends sarama's reads on them at once.
type ctxDialer struct {
	ctx  context.Context
	next interface {
		Dial(network, addr string) (net.Conn, error)
	}
}

func (d *ctxDialer) Dial(network, addr string) (net.Conn, error) {
	if err := d.ctx.Err(); err != nil {
		return nil, err
	}
	var (
		c   net.Conn
		err error
	)
	if nd, ok := d.next.(*net.Dialer); ok {
		c, err = nd.DialContext(d.ctx, network, addr)
	} else {
		c, err = d.next.Dial(network, addr)
	}
	if err != nil {
		return nil, err
	}
	context.AfterFunc(d.ctx, func() { c.Close() })
	return c, nil
}
