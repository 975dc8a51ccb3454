package p2p

import (
	"strings"
	"testing"
)

func TestProtocolIDsShareThePrefix(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range Protocols() {
		id := string(p.ID)
		if !strings.HasPrefix(id, Prefix+"/") || seen[id] {
			t.Fatalf("protocol %q: outside %s or duplicated", id, Prefix)
		}
		if p.Package == "" {
			t.Fatalf("protocol %q: no package named", id)
		}
		seen[id] = true
	}
	if len(DHTOptions()) != 4 {
		t.Fatal("DHT options changed without a test")
	}
}
