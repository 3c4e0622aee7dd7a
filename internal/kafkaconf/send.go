package kafkaconf

import (
	"context"

	"github.com/IBM/sarama"
)

// SendAll sends n messages on p, next(i) returning the i-th, and returns
// when every one is acknowledged or has failed, or ctx is done (then err is
// ctx's cause). It sends and collects acknowledgements in one loop, since
// sarama stops taking input when nobody reads its Successes.
//
// With a token, only acknowledgements of messages whose Metadata is token
// count: those of an earlier SendAll that returned early are told apart by
// theirs, and its failures go to stray (nil: dropped). With a nil token,
// every acknowledgement counts: p must carry no other messages.
func SendAll(ctx context.Context, p sarama.AsyncProducer, n int, next func(i int) *sarama.ProducerMessage,
	token any, stray func(*sarama.ProducerError)) (settled int, failed []*sarama.ProducerError, err error) {
	in, ok, errs := p.Input(), p.Successes(), p.Errors()
	sent := 0
	for settled < n {
		input := in
		var m *sarama.ProducerMessage
		if sent < n {
			m = next(sent)
		} else {
			input = nil
		}
		select {
		case input <- m:
			sent++
		case m := <-ok:
			if token == nil || m.Metadata == token {
				settled++
			}
		case e := <-errs:
			switch {
			case token == nil || e.Msg.Metadata == token:
				settled++
				failed = append(failed, e)
			case stray != nil:
				stray(e)
			}
		case <-ctx.Done():
			return settled, failed, context.Cause(ctx)
		}
	}
	return settled, failed, nil
}
