//go:build unix

package source

import (
	"os"
	"syscall"
)

// pollableDup returns a new file of fd, set non-blocking so that Go polls
// it and its read deadlines work. The flag belongs to the open file, which
// fd shares with its duplicate: fd is non-blocking too from then on.
func pollableDup(fd uintptr, name string) (*os.File, error) {
	nfd, err := syscall.Dup(int(fd))
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(nfd, true); err != nil {
		syscall.Close(nfd)
		return nil, err
	}
	return os.NewFile(uintptr(nfd), name), nil
}
