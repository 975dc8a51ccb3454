package control

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/syncnode/syncnode/internal/ports"
)

// Init chooses the node's and the control API's ports below the range the
// system gives outgoing connections: a port from that range was once taken
// by a connection of another test between init and the daemon's start, and
// the daemon failed to listen.
func TestInitPortsOutsideTheEphemeralRange(t *testing.T) {
	start := ports.EphemeralStart()
	if start <= 11000 {
		t.Skipf("the system's range for outgoing connections starts at %d: no room below it", start)
	}
	for i := range 20 {
		cfg, err := Init(filepath.Join(t.TempDir(), strconv.Itoa(i)), InitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, api, err := net.SplitHostPort(cfg.API)
		if err != nil {
			t.Fatal(err)
		}
		chosen := []string{api}
		for _, a := range cfg.Listen {
			parts := strings.Split(a, "/")
			chosen = append(chosen, parts[4])
		}
		for _, p := range chosen {
			if n, err := strconv.Atoi(p); err != nil || n >= start || n < 10000 {
				t.Fatalf("port %s chosen (config %+v); want one in [10000, %d)", p, cfg, start)
			}
		}
	}
}
