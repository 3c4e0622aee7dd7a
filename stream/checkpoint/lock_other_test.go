//go:build !unix

package checkpoint_test

var lockFiles []string
