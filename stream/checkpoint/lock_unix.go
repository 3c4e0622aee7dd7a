//go:build unix && !solaris && !aix

package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes the lock of dir, which exists, until the returned file is
// closed. The lock is the kernel's (flock), held by the open file: it goes
// with the process however it ends, and a second Open of the directory,
// in this process or another, fails while it is held.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s: one checkpoint directory belongs to one pipeline at a time", ErrInUse, dir)
		}
		return nil, fmt.Errorf("checkpoint: lock %s: %w", dir, err)
	}
	return f, nil
}
