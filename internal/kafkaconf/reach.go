package kafkaconf

import (
	"context"
	"time"

	"github.com/IBM/sarama"
)

// Reach makes a first contact with brokers under sc: a client whose dials,
// reads, writes and metadata retries end within timeout (see Probe), and
// whose dials and connections are cut off once ctx is done (CutDialer),
// which a context alone would not end: sarama waits Net.ReadTimeout (30s)
// for each of several reads. A proxy dialer of sc (Net.Proxy.Dialer)
// without a DialContext method is the exception: its dial in progress
// is cut off by neither ctx nor timeout, and Reach waits for it to end.
// It closes the client at once and returns nil when the brokers answered;
// otherwise sarama's error, or, when ctx ended it, ctx's cause. It blocks.
func Reach(ctx context.Context, brokers []string, sc *sarama.Config, timeout time.Duration) error {
	probeCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	probe := Probe(sc, timeout)
	// The contact is the client's fetch of the brokers' metadata, which
	// sarama's NewClient makes only with Metadata.Full.
	probe.Metadata.Full = true
	d := NewCutDialer(&probe)
	defer d.Close()
	defer context.AfterFunc(probeCtx, d.Close)()
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
