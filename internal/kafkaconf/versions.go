package kafkaconf

import (
	"fmt"

	"github.com/IBM/sarama"
)

// RecordBatches returns an error unless Kafka v writes record batches
// (0.11 or later), which BatchProducer sends and the changelog reads.
func RecordBatches(v sarama.KafkaVersion) error {
	if !v.IsAtLeast(sarama.V0_11_0_0) {
		return fmt.Errorf("sarama Version %s: record batches need Kafka 0.11 or later", v)
	}
	return nil
}

// produceVersion is the produce request version sarama's producer uses
// with Kafka version v (0.11 or later).
func produceVersion(v sarama.KafkaVersion) int16 {
	switch {
	case v.IsAtLeast(sarama.V3_7_0_0):
		return 10
	case v.IsAtLeast(sarama.V2_8_0_0):
		return 9
	case v.IsAtLeast(sarama.V2_4_0_0):
		return 8
	case v.IsAtLeast(sarama.V2_1_0_0):
		return 7
	case v.IsAtLeast(sarama.V2_0_0_0):
		return 6
	case v.IsAtLeast(sarama.V1_0_0_0):
		return 5
	default:
		return 3
	}
}

// FetchVersion returns the highest fetch request version that Kafka v
// reads, as sarama's consumer picks it.
func FetchVersion(v sarama.KafkaVersion) int16 {
	switch {
	case v.IsAtLeast(sarama.V2_7_0_0):
		return 12
	case v.IsAtLeast(sarama.V2_3_0_0):
		return 11
	case v.IsAtLeast(sarama.V2_1_0_0):
		return 10
	case v.IsAtLeast(sarama.V2_0_0_0):
		return 8
	case v.IsAtLeast(sarama.V1_1_0_0):
		return 7
	case v.IsAtLeast(sarama.V1_0_0_0):
		return 6
	}
	return 5
}
