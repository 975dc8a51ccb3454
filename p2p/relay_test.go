package p2p

import (
	"errors"
	"testing"
)

func TestParseRelayPolicy(t *testing.T) {
	for _, s := range []string{"throttle", "allow", "refuse"} {
		if p, err := ParseRelayPolicy(s); err != nil || string(p) != s {
			t.Fatalf("%q: %v %v", s, p, err)
		}
	}
	if _, err := ParseRelayPolicy("sometimes"); !errors.Is(err, ErrConfig) {
		t.Fatalf("nonsense policy: %v", err)
	}
}
