// Package sink holds the outputs of a stream.Pipeline: Kafka (a batch in
// one produce request per leader broker, on sarama's client), JSON lines to
// a file or standard output, and memory for tests.
//
// Every sink implements stream.Sink: Write receives one batch and returns
// only when its values are delivered, or, for a sink that is also a
// stream.Flusher (Kafka with KafkaConfig.Async), when its Flush returns, so
// that the engine commits the batch after, never before. A sink is closed by whoever created it, after Run
// returns.
package sink
