package sink_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluicehq/sluice/sink"
	"github.com/sluicehq/sluice/stream"
)

type user struct {
	ID    int64 `json:"user_id"`
	Score int64 `json:"score"`
}

func mkBatch[T any](id int64, parts ...[]T) *stream.Batch[T] {
	b := &stream.Batch[T]{Info: stream.Info{ID: id}}
	for i, p := range parts {
		b.Partitions = append(b.Partitions, stream.Partition[T]{ID: int32(i), Values: p})
	}
	return b
}

func TestMemory(t *testing.T) {
	m := sink.NewMemory[int]()
	assert.Nil(t, m.Last())
	in := []int{1, 2}
	require.NoError(t, m.Write(context.Background(), mkBatch(1, in, []int{3})))
	in[0] = 99 // the sink copied
	require.NoError(t, m.Write(context.Background(), mkBatch[int](2)))
	assert.Equal(t, []int{1, 2, 3}, m.Values())
	require.Len(t, m.Batches(), 2)
	assert.Equal(t, int64(2), m.Batches()[1].Info.ID)
	assert.Empty(t, m.Last())
}

func TestJSONLinesToAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	j, err := sink.CreateJSONLines[user](path)
	require.NoError(t, err)
	require.NoError(t, j.Write(context.Background(), mkBatch(1, []user{{1, 10}}, []user{{2, 20}, {3, 30}})))
	// Written means on disk, before Close.
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "{\"user_id\":1,\"score\":10}\n{\"user_id\":2,\"score\":20}\n{\"user_id\":3,\"score\":30}\n", string(data))
	require.NoError(t, j.Close())
	require.NoError(t, j.Close(), "Close twice")
	assert.ErrorContains(t, j.Write(context.Background(), mkBatch(2, []user{{4, 1}})), "write after close")
}

func TestJSONLinesAppendToAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.jsonl")
	for _, prior := range []string{"", "{\"user_id\":1,\"score\":10}\n", "{\"user_id\":1,\"sc"} {
		require.NoError(t, os.WriteFile(path, []byte(prior), 0o644))
		if prior == "" {
			require.NoError(t, os.Remove(path), "created when missing")
		}
		j, err := sink.AppendJSONLines[user](path)
		require.NoError(t, err)
		require.NoError(t, j.Write(context.Background(), mkBatch(1, []user{{2, 20}})))
		require.NoError(t, j.Close())
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		want := prior + "{\"user_id\":2,\"score\":20}\n"
		if prior != "" && !strings.HasSuffix(prior, "\n") {
			want = prior + "\n{\"user_id\":2,\"score\":20}\n" // a line cut short is ended
		}
		assert.Equal(t, want, string(data), "after %q", prior)
	}
}

func TestJSONLinesEncoderAndErrors(t *testing.T) {
	var buf bytes.Buffer
	j := sink.NewJSONLines("stdout", &buf, sink.Encoder(func(dst []byte, v int) ([]byte, error) {
		if v < 0 {
			return dst, errors.New("negative")
		}
		return append(dst, strings.Repeat("*", v)...), nil
	}))
	require.NoError(t, j.Write(context.Background(), mkBatch(1, []int{1, 3})))
	assert.Equal(t, "*\n***\n", buf.String())

	b := mkBatch(2, []int{2, -1})
	b.Partitions[0].Origins = []stream.Origin{{Source: "t", Partition: 0, Offset: 7}, {Source: "t", Partition: 0, Offset: 8}}
	err := j.Write(context.Background(), b)
	assert.EqualError(t, err, "sink: stdout: encode value from t/0@8: negative")
}

func TestJSONLinesIsValidJSON(t *testing.T) {
	var buf bytes.Buffer
	j := sink.NewJSONLines[map[string]any]("buf", &buf)
	require.NoError(t, j.Write(context.Background(), mkBatch(1, []map[string]any{{"a": "x\ny"}, {"b": []int{1}}})))
	sc := bufio.NewScanner(&buf)
	n := 0
	for sc.Scan() {
		var v map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &v))
		n++
	}
	assert.Equal(t, 2, n, "a newline inside a value is escaped: one line per value")
}

// A Write that fails on a value that does not encode writes nothing of
// its batch, not even the lines before that value, now or at Close.
func TestJSONLinesFailedWriteWritesNothing(t *testing.T) {
	var buf bytes.Buffer
	j := sink.NewJSONLines("buf", &buf, sink.Encoder(func(dst []byte, v int) ([]byte, error) {
		if v < 0 {
			return dst, errors.New("negative")
		}
		return strconv.AppendInt(dst, int64(v), 10), nil
	}))
	require.NoError(t, j.Write(context.Background(), batch([]int{1, 2})))
	require.Error(t, j.Write(context.Background(), batch([]int{3, 4, -1})))
	require.NoError(t, j.Close())
	assert.Equal(t, "1\n2\n", buf.String(), "the first batch, nothing of the failed one")
}

// fullDisk takes part of the write after which it has no room left, until
// room is made again.
type fullDisk struct {
	buf  bytes.Buffer
	room int // bytes left; -1 for no limit
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if d.room < 0 || len(p) <= d.room {
		if d.room >= 0 {
			d.room -= len(p)
		}
		return d.buf.Write(p)
	}
	n := d.room
	d.buf.Write(p[:n])
	d.room = 0
	return n, errors.New("no space left on device")
}

// A Write that fails to write its lines fails with the writer's error, and
// the Writes after it, once the writer takes bytes again, succeed: the
// line it cut short is ended, so that the next ones stay whole, and the
// lines of the failed batch are not written again.
func TestJSONLinesAfterAFailedWrite(t *testing.T) {
	d := &fullDisk{room: 5}
	j := sink.NewJSONLines[int]("out", d)
	require.NoError(t, j.Write(context.Background(), batch([]int{1, 2})))
	assert.ErrorContains(t, j.Write(context.Background(), batch([]int{30, 40})), "no space left on device")

	d.room = -1
	require.NoError(t, j.Write(context.Background(), batch([]int{5, 6})), "room again")
	require.NoError(t, j.Close())
	assert.Equal(t, "1\n2\n3\n5\n6\n", d.buf.String(), "the cut line ended, then whole lines")
}

// A value computed from many records, an aggregate, has no origin: the
// error names its partition and its place there instead.
func TestJSONLinesEncodeErrorWithoutOrigin(t *testing.T) {
	j := sink.NewJSONLines[float64]("out", io.Discard)
	err := j.Write(context.Background(), mkBatch(1, []float64{1}, []float64{2, math.Inf(1)}))
	assert.EqualError(t, err, "sink: out: encode value 1 of partition 1 (no origin): json: unsupported value: +Inf")
}

// A path that is not a regular file, such as /dev/null or /dev/stdout on a
// pipe, cannot be synced: the sink writes to it without syncing, instead of
// failing every Write.
func TestJSONLinesToADevice(t *testing.T) {
	for name, open := range map[string]func(string, ...sink.JSONOption[int]) (*sink.JSONLines[int], error){
		"create": sink.CreateJSONLines[int],
		"append": sink.AppendJSONLines[int],
	} {
		t.Run(name, func(t *testing.T) {
			j, err := open(os.DevNull)
			require.NoError(t, err)
			assert.NoError(t, j.Write(context.Background(), batch([]int{1, 2})))
			assert.NoError(t, j.Close())
		})
	}
}
