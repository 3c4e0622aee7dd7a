//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes the lock of directory dir (made if missing) for this
// process, until the returned unlock: a second process pointed at the same
// checkpoint would write over this one's files. The lock is the kernel's
// (flock), so it goes with the process however it ends.
func lockDir(dir string) (unlock func() error, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("checkpoint %s is in use by another process: one checkpoint directory belongs to one process", dir)
		}
		return nil, fmt.Errorf("checkpoint %s: lock: %w", dir, err)
	}
	return f.Close, nil // closing the file releases the lock
}
