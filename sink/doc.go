// Package sink holds the outputs of a stream.Pipeline: Kafka (a sarama
// producer), JSON lines to a file or standard output, and memory for tests.
//
// Every sink implements stream.Sink: Write receives one batch and returns
// only when its values are delivered, so that the engine commits the batch
// after, never before. A sink is closed by whoever created it, after Run
// returns.
package sink
