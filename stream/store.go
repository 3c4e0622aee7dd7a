package stream

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
)

// Store makes the state of stateful operators durable, so that a pipeline
// restarted after a crash resumes where its state left off. The engine
// calls Restore before the first batch and when an Assigner source gains
// partitions, and Checkpoint after a batch's outputs, before the batch is
// committed to the source.
//
// A Store is used by one pipeline at a time, from the run loop's goroutine.
// A panic in its methods fails Run with a *PanicError naming the method,
// with nothing committed after it.
type Store interface {
	// Restore calls put for every entry of the state of the given
	// partitions (nil: all it holds), and returns the input offsets that
	// this state reflects: the engine drops input records below them, as
	// already counted. It must fail, not return an empty state, when what
	// it holds is corrupt.
	Restore(ctx context.Context, partitions []int32, put func(e Entry) error) ([]Offset, error)
	// Checkpoint makes c durable atomically: after a crash, Restore returns
	// the state and offsets of either this checkpoint or the one before.
	Checkpoint(ctx context.Context, c *Changes) error
}

// Changes are what changed in the state since the last checkpoint, and the
// input offsets the state now reflects.
type Changes struct {
	// Batch is the last batch the changes include.
	Batch Info
	// Offsets are the next offsets of every input partition read since the
	// last checkpoint.
	Offsets []Offset
	// Entries are the keys written or deleted, with their operator and
	// partition.
	Entries []Entry
}

// Entry is one key of a stateful operator's state, encoded by its codecs.
type Entry struct {
	Op        string // the operator's name (see Stream.Named)
	Partition int32
	Key       []byte
	Value     []byte // nil when Deleted
	Deleted   bool
}

// WithStore makes the state of every UpdateStateByKey of the pipeline,
// and what every window (Window, ReduceByKeyAndWindow) holds, durable in
// s. Name those operators (Stream.Named): the name keys their state in the
// store, so it must stay the same across versions of the program.
// Changing the code around a named operator keeps its state.
//
// A restored state skips the records below the offsets checkpointed with
// it, as already counted: the source's offsets (Record.Origin) must name
// the same records from one run to the next, as a Kafka partition's or a
// file's line numbers do. A source whose offsets start again from zero at
// every run, or are all zero (a channel), would have the records of a
// restored run dropped: Run logs how many records it skipped, once per
// source partition, and BatchStats.Inputs count them (Skipped).
func WithStore(s Store) Option { return optionFunc(func(c *config) { c.store = s }) }

// CheckpointEvery checkpoints the state every n batches (default 1), and
// commits the source only then, with the offsets the checkpoint holds. The
// last batch of a run is always checkpointed.
func CheckpointEvery(n int) Option { return optionFunc(func(c *config) { c.checkpointEvery = n }) }

// Codec turns values of T into bytes and back, for a Store.
type Codec[T any] interface {
	// Append appends the encoding of v to dst and returns the extended
	// slice, as strconv.AppendInt does. (A codec that returns bytes of
	// its own instead is copied from.)
	Append(dst []byte, v T) ([]byte, error)
	// Decode returns the value b encodes.
	Decode(b []byte) (T, error)
}

// Codecs sets how UpdateStateByKey encodes its keys and states for the
// pipeline's Store. Without it, integer, float64 and string types use a
// compact binary form and other types JSON (JSONCodec, which keeps the
// NaNs and infinities JSON has no number for). With a Store, Run fails at
// start when JSON would not give back the keys or states it stores: a
// struct with an unexported field or a field tagged json:"-", an
// interface, or a key holding a pointer (types with an UnmarshalJSON
// method are trusted). Give such types a codec.
func Codecs[K, S any](key Codec[K], state Codec[S]) StateOption {
	return stateOptionFunc(func(c *stateConfig) { c.keyCodec, c.stateCodec = key, state })
}

// codecsOf returns the codecs of keys and values an option set (Codecs,
// WindowCodecs), or those of CodecFor when it set none; ok is false when
// they do not fit K and V.
func codecsOf[K, V any](key, value any) (kc Codec[K], vc Codec[V], ok bool) {
	if key == nil && value == nil {
		return CodecFor[K](), CodecFor[V](), true
	}
	kc, ok1 := key.(Codec[K])
	vc, ok2 := value.(Codec[V])
	return kc, vc, ok1 && ok2
}

// CodecFor returns the codec UpdateStateByKey uses for T by default.
func CodecFor[T any]() Codec[T] {
	var zero T
	switch any(zero).(type) {
	case int64:
		return any(int64Codec{}).(Codec[T])
	case int:
		return any(intCodec{}).(Codec[T])
	case int32:
		return any(int32Codec{}).(Codec[T])
	case uint64:
		return any(uint64Codec{}).(Codec[T])
	case float64:
		return any(float64Codec{}).(Codec[T])
	case string:
		return any(stringCodec{}).(Codec[T])
	}
	return JSONCodec[T]{}
}

type int64Codec struct{}

func (int64Codec) Append(dst []byte, v int64) ([]byte, error) {
	return binary.AppendVarint(dst, v), nil
}
func (int64Codec) Decode(b []byte) (int64, error) { return decodeVarint(b) }

type intCodec struct{}

func (intCodec) Append(dst []byte, v int) ([]byte, error) {
	return binary.AppendVarint(dst, int64(v)), nil
}
func (intCodec) Decode(b []byte) (int, error) {
	v, err := decodeVarint(b)
	if err == nil && int64(int(v)) != v {
		return 0, fmt.Errorf("stream: codec: %d overflows int", v)
	}
	return int(v), err
}

type int32Codec struct{}

func (int32Codec) Append(dst []byte, v int32) ([]byte, error) {
	return binary.AppendVarint(dst, int64(v)), nil
}
func (int32Codec) Decode(b []byte) (int32, error) {
	v, err := decodeVarint(b)
	if err == nil && (v < math.MinInt32 || v > math.MaxInt32) {
		return 0, fmt.Errorf("stream: codec: %d overflows int32", v)
	}
	return int32(v), err
}

type uint64Codec struct{}

func (uint64Codec) Append(dst []byte, v uint64) ([]byte, error) {
	return binary.AppendUvarint(dst, v), nil
}
func (uint64Codec) Decode(b []byte) (uint64, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 || n != len(b) {
		return 0, fmt.Errorf("stream: codec: bad uvarint of %d bytes", len(b))
	}
	return v, nil
}

type float64Codec struct{}

func (float64Codec) Append(dst []byte, v float64) ([]byte, error) {
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v)), nil
}
func (float64Codec) Decode(b []byte) (float64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("stream: codec: float64 of %d bytes", len(b))
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
}

type stringCodec struct{}

func (stringCodec) Append(dst []byte, v string) ([]byte, error) { return append(dst, v...), nil }
func (stringCodec) Decode(b []byte) (string, error)             { return string(b), nil }

func decodeVarint(b []byte) (int64, error) {
	v, n := binary.Varint(b)
	if n <= 0 || n != len(b) {
		return 0, fmt.Errorf("stream: codec: bad varint of %d bytes", len(b))
	}
	return v, nil
}

// JSONCodec encodes values with encoding/json. A value holding floats
// that JSON has no number for (NaN, +Inf, -Inf), which json.Marshal
// refuses, is encoded as '!' and the JSON object {"value": V, "floats":
// {"2": "NaN"}}: V is the value with those floats set to 0, and each of
// them is named by its place among the floats of the value, counted in
// the order json.Marshal writes them. Decode gives them back. Floats
// within a type that encodes itself (a MarshalJSON or MarshalText
// method) or within an interface are left to encoding/json, which
// refuses them; so is a value whose JSON leaves out floats that hold, or
// come before, a NaN or an infinity (an embedded pointer whose fields are
// all omitted is decoded nil), rather than given back with them in other
// fields.
type JSONCodec[T any] struct{}

// Append implements Codec.
func (JSONCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	b, err := json.Marshal(v)
	if uv := (*json.UnsupportedValueError)(nil); errors.As(err, &uv) && isNonFinite(uv.Str) {
		return appendNonFinite(dst, v)
	}
	return append(dst, b...), err
}

// Decode implements Codec.
func (JSONCodec[T]) Decode(b []byte) (T, error) {
	var v T
	if len(b) > 0 && b[0] == nonFiniteMark {
		return v, decodeNonFinite(b, &v)
	}
	err := json.Unmarshal(b, &v)
	return v, err
}

// jsonLossy reports why encoding/json would not give back a value of t
// equal to the one encoded: an unexported struct field (dropped), a field
// tagged "-" (dropped), an interface (its value decoded as another type:
// an int as a float64), and, in a key (key), a pointer (decoded to a new
// one, which no key equals). Types with their own UnmarshalJSON are
// trusted.
func jsonLossy(t reflect.Type, key bool, seen map[reflect.Type]bool) error {
	if seen[t] {
		return nil
	}
	seen[t] = true
	if t.Implements(reflect.TypeFor[json.Unmarshaler]()) || reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return nil
	}
	switch t.Kind() {
	case reflect.Interface:
		return fmt.Errorf("%v is an interface", t)
	case reflect.Pointer:
		if key {
			return fmt.Errorf("%v is a pointer, which a key restored as a new one would not equal", t)
		}
		return jsonLossy(t.Elem(), key, seen)
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			embeddedStruct := f.Anonymous && (f.Type.Kind() == reflect.Struct || f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct)
			if !f.IsExported() && !embeddedStruct {
				return fmt.Errorf("field %s of %v is unexported", f.Name, t)
			}
			if f.Tag.Get("json") == "-" {
				return fmt.Errorf("field %s of %v is tagged json:\"-\"", f.Name, t)
			}
			if err := jsonLossy(f.Type, key, seen); err != nil {
				return err
			}
		}
	case reflect.Map:
		if err := jsonLossy(t.Key(), key, seen); err != nil {
			return err
		}
		return jsonLossy(t.Elem(), key, seen)
	case reflect.Slice, reflect.Array:
		return jsonLossy(t.Elem(), key, seen)
	}
	return nil
}
