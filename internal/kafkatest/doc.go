// Package kafkatest runs a Kafka broker inside the process, for tests and for
// programs that want Kafka without installing it.
//
// The broker is github.com/twmb/franz-go/pkg/kfake: it speaks the Kafka
// protocol over TCP, so sarama, kcat or any other client talks to it as to a
// real cluster. Topics, records and committed group offsets live in memory,
// or in a directory when Config.DataDir is set, so that a restarted broker
// finds them again.
//
// Produce and Records use sarama to put records in and read them back, so
// that tests check what a Kafka client sees; Committed, HighWatermarks and
// WaitStable read the broker's own state.
//
// SilentBrokers stands for brokers that take connections and never
// answer, and HangingDialer for a proxy dialer whose dials never connect.
//
// # Groups
//
// Like Kafka, the broker refuses group session timeouts under 6s unless
// Config.MinSessionTimeout lowers the floor; tests lower it so that a
// member that dies is noticed quickly. A member killed while it waits to
// join a group can stay in the group for good under a member ID nobody
// uses, holding up its rebalances; consumers that give themselves a static
// instance ID (KIP-345) do not leave such members behind.
package kafkatest
