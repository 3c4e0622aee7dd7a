//go:build unix && !solaris && !aix

package checkpoint_test

// lockFiles are the files a Dir leaves in its directory beside the
// checkpoint's.
var lockFiles = []string{"LOCK"}
