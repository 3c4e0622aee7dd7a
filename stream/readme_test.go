package stream_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's snippet of the popular users' threshold is the code of
// Example_popularUsers, which runs, so it cannot drift from it.
func TestREADMEThresholdSnippet(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	example, err := os.ReadFile("example_test.go")
	require.NoError(t, err)
	_, after, ok := strings.Cut(string(readme), "From `Example_popularUsers`")
	require.True(t, ok, "the README quotes no snippet of Example_popularUsers")
	_, code, ok := strings.Cut(after, "```go\n")
	require.True(t, ok, "no Go block after the README's mention of Example_popularUsers")
	code, _, ok = strings.Cut(code, "```\n")
	require.True(t, ok, "the README's Go block does not end")
	// The example's body is indented by a tab, but for its empty lines.
	indented := regexp.MustCompile(`(?m)^(.)`).ReplaceAllString(code, "\t$1")
	assert.Contains(t, string(example), indented)
}
