// Package kafkaconf holds what the Kafka sinks, the changelog store and the
// transactional producer share: the producer settings, so that what
// "delivered" means is decided in one place; BatchProducer, which the
// sink, the changelog and the transactional producer send their batches
// with; the request versions as sarama picks them; Probe and Reach, a
// first contact with the brokers bounded in time and by a context; and
// CutDialer, which dials as sarama does and closes what it dialed under
// the requests that nothing else ends.
package kafkaconf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

// Producer returns a copy of base, or, with base nil, a configuration in
// which a message is acknowledged by all in-sync replicas and the producer
// is idempotent, so that sarama's retries neither duplicate nor reorder
// messages. Either way it returns successes and errors, which a batch
// sent through sarama's producer needs to be known delivered, and names
// the client "sluice" unless base named it.
func Producer(base *sarama.Config) *sarama.Config {
	var c *sarama.Config
	if base != nil {
		cp := *base
		c = &cp
	} else {
		c = sarama.NewConfig()
		c.Producer.RequiredAcks = sarama.WaitForAll
		c.Producer.Idempotent = true
		c.Net.MaxOpenRequests = 1 // what sarama requires of an idempotent producer
	}
	if c.ClientID == "" || c.ClientID == "sarama" {
		c.ClientID = "sluice"
	}
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	return c
}

// CloseAll closes, in order, each of closers that is not nil (a producer
// before the client it uses) and returns their errors joined, prefixed
// with what is closed ("changelog topic-name").
func CloseAll(what string, closers ...io.Closer) error {
	var errs []error
	for _, c := range closers {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: close: %w", what, err)
	}
	return nil
}

// CreateCompacted creates topic, compacted, with partitions partitions,
// replicationFactor replicas (0: the brokers' default) and the topic
// configs given besides. It returns false, and no error, when the topic
// exists already: another process made it first.
func CreateCompacted(admin sarama.ClusterAdmin, topic string, partitions int32, replicationFactor int16, configs map[string]string) (bool, error) {
	entries := map[string]*string{}
	for name, v := range configs {
		entries[name] = &v
	}
	compact := "compact"
	entries["cleanup.policy"] = &compact
	if replicationFactor == 0 {
		replicationFactor = -1 // the brokers' default
	}
	err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: replicationFactor, ConfigEntries: entries}, false)
	switch {
	case errors.Is(err, sarama.ErrTopicAlreadyExists):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// CleanupPolicy returns the cleanup.policy of topic: its policies, such
// as [compact] or [compact delete], and the setting as written; none when
// the brokers do not say.
func CleanupPolicy(admin sarama.ClusterAdmin, topic string) ([]string, string, error) {
	results, err := admin.DescribeConfigs([]*sarama.ConfigResource{{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"cleanup.policy"}}}, sarama.DescribeConfigsOptions{})
	switch {
	case err != nil:
		return nil, "", err
	case len(results) != 1:
		return nil, "", fmt.Errorf("describe configs of %s: %d results", topic, len(results))
	case results[0].ErrorCode != sarama.ErrNoError:
		return nil, "", fmt.Errorf("%w: %s", results[0].ErrorCode, results[0].ErrorMsg)
	}
	for _, e := range results[0].Configs {
		if e.Name == "cleanup.policy" {
			return strings.Split(e.Value, ","), e.Value, nil
		}
	}
	return nil, "", nil
}

// Await calls ready until it returns nil, waiting 10 ms, then twice as
// long each time; once the wait would pass 5 s it returns ready's last
// error, and when ctx is done, ctx's cause. Metadata reaches every broker
// a little after a topic is created: this is how long to give it.
func Await(ctx context.Context, ready func() error) error {
	for wait := 10 * time.Millisecond; ; wait *= 2 {
		err := ready()
		if err == nil {
			return nil
		}
		if wait > 5*time.Second {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// Probe returns a copy of sc whose dials, reads, writes and metadata
// fetches each end within left, for a first contact with the brokers:
// sarama's own wait Net.ReadTimeout (30s) each, and a client makes
// several, so that brokers that take connections and never answer would
// hold it for minutes.
func Probe(sc *sarama.Config, left time.Duration) sarama.Config {
	probe := *sc
	probe.Net.DialTimeout = min(probe.Net.DialTimeout, left)
	probe.Net.ReadTimeout = min(probe.Net.ReadTimeout, left)
	probe.Net.WriteTimeout = min(probe.Net.WriteTimeout, left)
	if probe.Metadata.Timeout == 0 || probe.Metadata.Timeout > left {
		probe.Metadata.Timeout = left
	}
	return probe
}

// Dialer returns what sarama dials the brokers with under sc: its proxy
// dialer, if one is set, or a net.Dialer of sc's settings.
func Dialer(sc *sarama.Config) interface {
	Dial(network, addr string) (net.Conn, error)
} {
	if sc.Net.Proxy.Enable {
		return sc.Net.Proxy.Dialer
	}
	return &net.Dialer{Timeout: sc.Net.DialTimeout, KeepAlive: sc.Net.KeepAlive, LocalAddr: sc.Net.LocalAddr}
}
