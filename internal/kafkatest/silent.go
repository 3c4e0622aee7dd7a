package kafkatest

import (
	"net"
	"sync"
	"testing"
)

// SilentBrokers returns the address of a listener that takes connections
// and never answers on them, as a broker that hangs, or another service
// on the port, does, and hangUp, which closes the listener and its
// connections (ending what waits on them), and which the test's cleanup
// calls too.
func SilentBrokers(t testing.TB) (addr string, hangUp func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	hangUp = sync.OnceFunc(func() {
		_ = ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	t.Cleanup(hangUp)
	return ln.Addr().String(), hangUp
}
