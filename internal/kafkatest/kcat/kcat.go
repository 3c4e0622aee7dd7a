// Package kcat runs kcat, an independent Kafka client (on librdkafka),
// for the tests of interoperability with other clients.
package kcat

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Path returns the path of kcat. Without it the test is skipped, or fails
// under CI=true, where the interop tests must run.
func Path(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		const msg = "kcat not found; install it to run the interop tests (Debian, Ubuntu: apt-get install kcat; macOS: brew install kcat)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// Run runs kcat at path with args and stdin, for up to 30 seconds, and
// returns its output; it fails the test, with kcat's errors, unless kcat
// succeeds.
func Run(t testing.TB, path string, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "kcat %s: %s", strings.Join(args, " "), stderr.String())
	return string(out)
}
