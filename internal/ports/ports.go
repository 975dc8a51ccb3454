// Package ports picks listening ports that a node keeps across restarts
// and that no outgoing connection of the machine will take meanwhile.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
)

// Free returns a port that is free now for TCP and UDP on every
// interface, chosen at random below the range the system hands out as the
// local ports of outgoing connections: a port from that range (what
// listening on port 0 gives) can be taken by any connection made between
// init and the daemon's start, and the daemon then fails to listen. Where
// the range leaves no room below it, the system picks.
func Free() (int, error) {
	const lowest = 10000
	if start := EphemeralStart(); start > lowest+1000 {
		for range 64 {
			p := lowest + rand.IntN(start-lowest)
			if portFree(p) {
				return p, nil
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portFree reports whether TCP and UDP port p can be bound on every
// interface.
func portFree(p int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
	if err != nil {
		return false
	}
	l.Close()
	c, err := net.ListenPacket("udp", fmt.Sprintf(":%d", p))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// EphemeralStart returns the first port of the system's range for
// outgoing connections (Linux's default when it cannot be read).
func EphemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo <= 0 {
		return 32768
	}
	return lo
}
