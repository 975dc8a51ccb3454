package syncgroup

import (
	"errors"
	"strings"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/value"
)

// An app that hands PutRow JSON instead of a msgpack value is told how to
// convert it, by both checks PutRow runs (FindRefs, then CheckPut).
func TestJSONValueRefusedWithHint(t *testing.T) {
	adminKey, _ := key(t)
	g, err := Create("photos", []string{"photos/"}, true, adminKey, syncnode.Normal, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	const hint = "value looks like JSON; convert it with value.FromJSON"
	js := []byte(`{"title": "beach"}`)
	err = g.CheckPut("photos/1", js)
	if !errors.Is(err, value.ErrMalformed) || !strings.Contains(err.Error(), hint) || !strings.Contains(err.Error(), `"photos/1"`) {
		t.Fatalf("CheckPut of JSON: %v", err)
	}
	if _, err := g.Put("photos/1", js, t0); err == nil {
		t.Fatal("Put of JSON succeeded")
	}
	if _, err := FindRefs(js); !errors.Is(err, syncnode.ErrCorruptRecord) || !strings.Contains(err.Error(), hint) {
		t.Fatalf("FindRefs of JSON: %v", err)
	}
	// Converted, it goes in.
	v, err := value.FromJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.CheckPut("photos/1", v); err != nil {
		t.Fatal(err)
	}
	// Bytes that are neither get no hint.
	if err := g.CheckPut("photos/1", []byte{0x92, 0x01}); err == nil || strings.Contains(err.Error(), hint) {
		t.Fatalf("CheckPut of truncated msgpack: %v", err)
	}
}
