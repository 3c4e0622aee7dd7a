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

// A versionStep is the request version sarama uses from Kafka version
// kafka on.
type versionStep struct {
	kafka   sarama.KafkaVersion
	request int16
}

// requestVersion returns the request version of the first step, newest
// first, that Kafka v reaches, or oldest.
func requestVersion(v sarama.KafkaVersion, steps []versionStep, oldest int16) int16 {
	for _, s := range steps {
		if v.IsAtLeast(s.kafka) {
			return s.request
		}
	}
	return oldest
}

// produceSteps are the produce request versions of sarama's producer.
var produceSteps = []versionStep{
	{sarama.V3_7_0_0, 10},
	{sarama.V2_8_0_0, 9},
	{sarama.V2_4_0_0, 8},
	{sarama.V2_1_0_0, 7},
	{sarama.V2_0_0_0, 6},
	{sarama.V1_0_0_0, 5},
}

// produceVersion is the produce request version sarama's producer uses
// with Kafka version v (0.11 or later).
func produceVersion(v sarama.KafkaVersion) int16 { return requestVersion(v, produceSteps, 3) }

// fetchSteps are the fetch request versions of sarama's consumer.
var fetchSteps = []versionStep{
	{sarama.V2_7_0_0, 12},
	{sarama.V2_3_0_0, 11},
	{sarama.V2_1_0_0, 10},
	{sarama.V2_0_0_0, 8},
	{sarama.V1_1_0_0, 7},
	{sarama.V1_0_0_0, 6},
}

// FetchVersion returns the highest fetch request version that Kafka v
// reads, as sarama's consumer picks it.
func FetchVersion(v sarama.KafkaVersion) int16 { return requestVersion(v, fetchSteps, 5) }

// initProducerIDSteps are the InitProducerId request versions of
// sarama's transactional producer.
var initProducerIDSteps = []versionStep{
	{sarama.V2_7_0_0, 4},
	{sarama.V2_5_0_0, 3},
	{sarama.V2_4_0_0, 2},
	{sarama.V2_0_0_0, 1},
}

// InitProducerIDVersion returns the InitProducerId request version
// sarama's transactional producer sends to Kafka v.
func InitProducerIDVersion(v sarama.KafkaVersion) int16 {
	return requestVersion(v, initProducerIDSteps, 0)
}

// txnSteps are the AddPartitionsToTxn, AddOffsetsToTxn and EndTxn request
// versions of sarama's transactional producer.
var txnSteps = []versionStep{
	{sarama.V2_8_0_0, 3},
	{sarama.V2_7_0_0, 2},
	{sarama.V2_0_0_0, 1},
}

// TxnVersion returns the version of AddPartitionsToTxn, AddOffsetsToTxn
// and EndTxn that sarama's transactional producer sends to Kafka v.
func TxnVersion(v sarama.KafkaVersion) int16 { return requestVersion(v, txnSteps, 0) }

// txnOffsetCommitSteps are the TxnOffsetCommit request versions of
// sarama's transactional producer.
var txnOffsetCommitSteps = []versionStep{
	{sarama.V2_5_0_0, 3},
	{sarama.V2_1_0_0, 2},
	{sarama.V2_0_0_0, 1},
}

// TxnOffsetCommitVersion returns the TxnOffsetCommit request version
// sarama's transactional producer sends to Kafka v; from 3 on, it carries
// the group's generation and member.
func TxnOffsetCommitVersion(v sarama.KafkaVersion) int16 {
	return requestVersion(v, txnOffsetCommitSteps, 0)
}

// findCoordinatorSteps are the FindCoordinator request versions of
// sarama's client.
var findCoordinatorSteps = []versionStep{
	{sarama.V2_4_0_0, 3},
	{sarama.V2_0_0_0, 2},
	{sarama.V0_11_0_0, 1},
}

// FindCoordinatorVersion returns the FindCoordinator request version
// sarama's client sends to Kafka v.
func FindCoordinatorVersion(v sarama.KafkaVersion) int16 {
	return requestVersion(v, findCoordinatorSteps, 0)
}
