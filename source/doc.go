// Package source holds the inputs of a stream.Pipeline: Kafka (a member
// of a sarama consumer group that fetches with loops of its own), files
// and standard input, a generator of random activity events, and slices
// in memory for tests.
//
// Every source implements stream.Source; a record's stream.Origin names
// where it came from (a topic, partition and offset, or a file and line),
// so that errors downstream can point at it. Sources that record progress
// implement stream.Committer; the engine commits a batch only after its
// outputs are done.
//
// Writing a source of your own takes one method:
//
//	func (s *MySource) Poll(ctx context.Context, buf []stream.Record[T]) (int, error)
//
// It fills buf, blocks until at least one record is available or ctx is
// done, and returns io.EOF when the source has ended.
package source
