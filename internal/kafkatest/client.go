package kafkatest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/IBM/sarama"

	"github.com/sluicehq/sluice/internal/readcommitted"
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
// watermark it finds when called, sorted by partition and offset, those
// of aborted and open transactions too (read_uncommitted). It fails when
// ctx is done before it has read them all.
func (b *Broker) Records(ctx context.Context, topic string) ([]Record, error) {
	return Read(ctx, b.addrs, topic, sarama.ReadUncommitted)
}

// CommittedRecords reads topic as a read_committed consumer does: up to
// the last stable offset it finds when called, without the records of
// aborted transactions.
func (b *Broker) CommittedRecords(ctx context.Context, topic string) ([]Record, error) {
	return Read(ctx, b.addrs, topic, sarama.ReadCommitted)
}

// Read is Records or CommittedRecords of a topic on any brokers.
func Read(ctx context.Context, brokers []string, topic string, isolation sarama.IsolationLevel) ([]Record, error) {
	client, err := sarama.NewClient(brokers, config())
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %s: %w", topic, err)
	}
	defer client.Close()
	partitions, err := client.Partitions(topic)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %s: %w", topic, err)
	}
	var out []Record
	for _, p := range partitions {
		recs, err := readPartition(ctx, client, topic, p, isolation)
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

// readPartition reads partition p with plain fetch requests: a sarama
// consumer hides control records, so it cannot tell when it has passed
// the end of a partition that ends with one.
func readPartition(ctx context.Context, client sarama.Client, topic string, p int32, isolation sarama.IsolationLevel) ([]Record, error) {
	off, err := client.GetOffset(topic, p, sarama.OffsetOldest)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: read %s/%d: oldest offset: %w", topic, p, err)
	}
	end := int64(-1) // the high watermark or last stable offset of the first fetch
	var out []Record
	for end < 0 || off < end {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("kafkatest: read %s/%d: at offset %d of %d: %w", topic, p, off, end, context.Cause(ctx))
		}
		leader, err := client.Leader(topic, p)
		if err != nil {
			return nil, fmt.Errorf("kafkatest: read %s/%d: %w", topic, p, err)
		}
		req := &sarama.FetchRequest{Version: 11, MinBytes: 1, MaxBytes: 16 << 20, Isolation: isolation, SessionEpoch: -1}
		req.AddBlock(topic, p, off, 8<<20, -1)
		resp, err := leader.Fetch(req)
		if err != nil {
			return nil, fmt.Errorf("kafkatest: read %s/%d at %d: %w", topic, p, off, err)
		}
		block := resp.GetBlock(topic, p)
		if block == nil || !errors.Is(block.Err, sarama.ErrNoError) {
			return nil, fmt.Errorf("kafkatest: read %s/%d at %d: %v", topic, p, off, block)
		}
		if end < 0 {
			end = block.HighWaterMarkOffset
			if isolation == sarama.ReadCommitted {
				end = block.LastStableOffset
			}
		}
		filter := readcommitted.New(block)
		if isolation != sarama.ReadCommitted {
			filter = &readcommitted.Filter{}
		}
		for _, rs := range block.RecordsSet {
			rb := rs.RecordBatch
			if rb == nil {
				continue
			}
			last := rb.FirstOffset + int64(rb.LastOffsetDelta)
			if !filter.Skip(rb) {
				for _, rec := range rb.Records {
					o := rb.FirstOffset + rec.OffsetDelta
					if o < off || o >= end {
						continue
					}
					r := Record{Partition: p, Offset: o, Key: rec.Key, Value: rec.Value}
					for _, h := range rec.Headers {
						if r.Headers == nil {
							r.Headers = map[string]string{}
						}
						r.Headers[string(h.Key)] = string(h.Value)
					}
					out = append(out, r)
				}
			}
			off = max(off, last+1)
		}
		if len(block.RecordsSet) == 0 && off < end {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return out, nil
}
