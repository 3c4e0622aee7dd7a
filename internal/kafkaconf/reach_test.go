package kafkaconf_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/internal/kafkaconf"
	"github.com/sluicehq/sluice/internal/kafkatest"
)

// Reach returns nil once the brokers answer, and, against brokers that
// take connections and never answer, fails within its timeout, or as
// soon as its ctx ends, not after sarama's reads of 30s each.
func TestReach(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	defer b.Close()
	silent, _ := kafkatest.SilentBrokers(t)
	stop := errors.New("stopped")
	for _, tc := range []struct {
		name    string
		brokers []string
		timeout time.Duration
		ctxAt   time.Duration // 0: never
		wantErr error
	}{
		{"answered", b.Addrs(), time.Minute, 0, nil},
		{"silent, timeout", []string{silent}, time.Second, 0, sarama.ErrOutOfBrokers},
		{"silent, ctx", []string{silent}, time.Minute, 200 * time.Millisecond, stop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			if tc.ctxAt > 0 {
				time.AfterFunc(tc.ctxAt, func() { cancel(stop) })
			}
			start := time.Now()
			err := kafkaconf.Reach(ctx, tc.brokers, sarama.NewConfig(), tc.timeout)
			if tc.wantErr == nil {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, tc.wantErr)
			assert.Less(t, time.Since(start), 5*time.Second, "not after sarama's reads")
		})
	}
}

// With Metadata.Full off, sarama's NewClient asks the brokers nothing:
// Reach still makes its first contact, and fails against brokers that
// take connections and never answer instead of returning nil.
func TestReachWithoutFullMetadata(t *testing.T) {
	b, err := kafkatest.Start(kafkatest.Config{})
	require.NoError(t, err)
	defer b.Close()
	silent, _ := kafkatest.SilentBrokers(t)
	sc := sarama.NewConfig()
	sc.Metadata.Full = false

	assert.NoError(t, kafkaconf.Reach(context.Background(), b.Addrs(), sc, time.Minute), "answered")
	start := time.Now()
	err = kafkaconf.Reach(context.Background(), []string{silent}, sc, time.Second)
	assert.ErrorIs(t, err, sarama.ErrOutOfBrokers, "silent")
	assert.Less(t, time.Since(start), 5*time.Second, "not after sarama's reads")
	assert.False(t, sc.Metadata.Full, "sc is left as it was")
}
