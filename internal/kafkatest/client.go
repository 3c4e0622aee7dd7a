package kafkatest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/IBM/sarama"
)

// Record is a record to produce, or one read back by Records.
type Record struct {
	// Partition is the partition the record is written to or was read from.
	Partition int32
	// Offset is the record's offset, set by Records; Produce ignores it.
	Offset int64
	Key    []byte
	Value  []byte
	// Headers are the record's headers by key, written by Produce and
	// read back by Records; nil when it has none.
	Headers map[string]string
}

// config returns the sarama configuration of the helpers.
func config() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.ClientID = "kafkatest"
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Producer.Flush.Messages = 1000
	cfg.Producer.Flush.Frequency = time.Millisecond
	return cfg
}

// Produce writes recs to topic, each to its Partition, and returns when the
// broker has acknowledged all of them.
func (b *Broker) Produce(topic string, recs ...Record) error {
	if len(recs) == 0 {
		return nil
	}
	p, err := sarama.NewSyncProducer(b.addrs, config())
	if err != nil {
		return fmt.Errorf("kafkatest: produce to %s: %w", topic, err)
	}
	msgs := make([]*sarama.ProducerMessage, len(recs))
	for i, r := range recs {
		msgs[i] = &sarama.ProducerMessage{Topic: topic, Partition: r.Partition, Value: sarama.ByteEncoder(r.Value)}
		if r.Key != nil {
			msgs[i].Key = sarama.ByteEncoder(r.Key)
		}
		for k, v := range r.Headers {
			msgs[i].Headers = append(msgs[i].Headers, sarama.RecordHeader{Key: []byte(k), Value: []byte(v)})
		}
	}
	err = p.SendMessages(msgs)
	if cerr := p.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("kafkatest: produce %d records to %s: %w", len(recs), topic, err)
	}
	return nil
}

// Records reads every record of topic, from the oldest to the high
// watermark it finds when called, sorted by partition and offset. It fails
// when ctx is done before it has read them all.
func (b *Broker) Records(ctx context.Context, topic string) ([]Record, error) {
	client, err := sarama.NewClient(b.addrs, config())
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %s: %w", topic, err)
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %s: %w", topic, err)
	}
	defer consumer.Close()
	partitions, err := client.Partitions(topic)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %s: %w", topic, err)
	}
	var out []Record
	for _, p := range partitions {
		recs, err := readPartition(ctx, client, consumer, topic, p)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	slices.SortFunc(out, func(a, b Record) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	return out, nil
}

func readPartition(ctx context.Context, client sarama.Client, consumer sarama.Consumer, topic string, p int32) ([]Record, error) {
	oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %s/%d: oldest offset: %w", topic, p, err)
	}
	end, err := client.GetOffset(topic, p, sarama.OffsetNewest)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %s/%d: newest offset: %w", topic, p, err)
	}
	if end <= oldest {
		return nil, nil
	}
	pc, err := consumer.ConsumePartition(topic, p, oldest)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %s/%d from %d: %w", topic, p, oldest, err)
	}
	defer pc.Close()
	var out []Record
	for {
		select {
		case m, ok := <-pc.Messages():
			if !ok {
				return nil, fmt.Errorf("kafkatest: read %s/%d: consumer closed at offset %d of %d", topic, p, len(out), end)
			}
			r := Record{Partition: p, Offset: m.Offset, Key: m.Key, Value: m.Value}
			for _, h := range m.Headers {
				if r.Headers == nil {
					r.Headers = map[string]string{}
				}
				r.Headers[string(h.Key)] = string(h.Value)
			}
			out = append(out, r)
			if m.Offset >= end-1 {
				return out, nil
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("kafkatest: read %s/%d: %d records before offset %d: %w", topic, p, len(out), end, context.Cause(ctx))
		}
	}
}
