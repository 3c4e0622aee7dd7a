//go:build !unix || solaris || aix

package checkpoint_test

var lockFiles []string
