package kafkaconf

import (
	"testing"

	"github.com/IBM/sarama"
	"github.com/stretchr/testify/assert"
)

// The transactional request versions are sarama's, at each step.
func TestTxnRequestVersions(t *testing.T) {
	for _, tc := range []struct {
		kafka                       sarama.KafkaVersion
		initProducerID, txn, offset int16
	}{
		{sarama.V0_11_0_0, 0, 0, 0},
		{sarama.V2_0_0_0, 1, 1, 1},
		{sarama.V2_1_0_0, 1, 1, 2},
		{sarama.V2_4_0_0, 2, 1, 2},
		{sarama.V2_5_0_0, 3, 1, 3},
		{sarama.V2_7_0_0, 4, 2, 3},
		{sarama.V2_8_0_0, 4, 3, 3},
	} {
		assert.Equal(t, tc.initProducerID, InitProducerIDVersion(tc.kafka), "InitProducerId, Kafka %s", tc.kafka)
		assert.Equal(t, tc.txn, TxnVersion(tc.kafka), "AddPartitionsToTxn, Kafka %s", tc.kafka)
		assert.Equal(t, tc.offset, TxnOffsetCommitVersion(tc.kafka), "TxnOffsetCommit, Kafka %s", tc.kafka)
	}
}

// The FindCoordinator request versions are sarama's client's, at each step.
func TestFindCoordinatorVersions(t *testing.T) {
	for v, want := range map[sarama.KafkaVersion]int16{
		sarama.V0_10_2_0: 0, sarama.V0_11_0_0: 1, sarama.V2_0_0_0: 2, sarama.V2_3_0_0: 2, sarama.V2_4_0_0: 3, sarama.V3_0_0_0: 3,
	} {
		assert.Equal(t, want, FindCoordinatorVersion(v), "Kafka %s", v)
	}
}
