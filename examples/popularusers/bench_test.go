package main

import (
	"context"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBench(t *testing.T) {
	var stdout, stderr buffer
	code := run(context.Background(), []string{"bench",
		"-events", "20000", "-users", "2000", "-rounds", "1", "-batch-records", "5000", "-state-users", "5000",
	}, nil, &stdout, &stderr)
	require.Equal(t, exitOK, code, "stderr:\n%s", stderr.String())
	out := stdout.String()
	assert.Regexp(t, `(?m)^machine: \d+ cores, GOMAXPROCS \d+, go\S* `, out)
	for _, name := range []string{"kafka-tdigest/bare", "kafka-exact/bare", "file/linecount"} {
		m := regexp.MustCompile(`(?m)^RATIO ` + regexp.QuoteMeta(name) + `=(\S+)$`).FindStringSubmatch(out)
		if assert.NotNil(t, m, "RATIO %s in:\n%s", name, out) {
			v, err := strconv.ParseFloat(m[1], 64)
			require.NoError(t, err)
			assert.Positive(t, v, name)
		}
	}
	// The ratios end the output, for scripts that read its tail.
	assert.Regexp(t, `(RATIO \S+=\S+\n){3}$`, out)
}

func TestParseBench(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"defaults", nil, true},
		{"no events", []string{"-events", "0"}, false},
		{"no rounds", []string{"-rounds", "0"}, false},
		{"no partitions", []string{"-partitions", "0"}, false},
		{"no batch", []string{"-batch-records", "0"}, false},
		{"negative state users", []string{"-state-users", "-1"}, false},
		{"no state measure", []string{"-state-users", "0"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseBench(tt.args, &buffer{})
			if tt.ok {
				require.NoError(t, err)
				assert.NotNil(t, c)
			} else {
				assert.Error(t, err)
			}
		})
	}
}
