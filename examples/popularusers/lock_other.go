//go:build !unix

package main

// lockDir does nothing where flock is not available.
func lockDir(string) (unlock func() error, err error) { return func() error { return nil }, nil }
