package p2p

import (
	"strings"
	"testing"
)

func TestProtocolIDsShareThePrefix(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range []string{string(ProtoHaveBlob), string(ProtoGetBlob), string(ProtoSync), string(ProtoShares)} {
		if !strings.HasPrefix(p, Prefix+"/") || seen[p] {
			t.Fatalf("protocol %q: outside %s or duplicated", p, Prefix)
		}
		seen[p] = true
	}
	if len(DHTOptions()) != 4 {
		t.Fatal("DHT options changed without a test")
	}
}
