package demo

import (
	"bytes"
	"strings"
	"testing"
)

func TestDemoRuns(t *testing.T) {
	var out bytes.Buffer
	if err := Run(t.Context(), t.TempDir(), &out); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{"may not evict", "took 2 shares", "laptop fetch: done", "evicted its copy", "shares in the group: 2", "Nothing was lost"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
