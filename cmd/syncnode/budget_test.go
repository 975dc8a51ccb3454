package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriterBudgetFromTheConfig: writer_budget in the config file bounds
// what one member's rows may cost the node, its own included: with room
// for two rows, the third is refused and says why; -1 lifts a bound; a
// malformed budget keeps the daemon from starting and names the field.
func TestWriterBudgetFromTheConfig(t *testing.T) {
	t.Parallel()
	withBudget := func(budget string) string {
		dir := filepath.Join(t.TempDir(), "data")
		must(t, dir, "init", "-no-lan")
		file := filepath.Join(dir, "config.json")
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		var wb any
		if err := json.Unmarshal([]byte(budget), &wb); err != nil {
			t.Fatal(err)
		}
		cfg["writer_budget"] = wb
		if b, err = json.Marshal(cfg); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	bad := withBudget(`{"rows": -7}`)
	if _, err := runDaemon(t, bad); err == nil || !strings.Contains(err.Error(), "writer_budget") {
		t.Fatalf("a daemon with a malformed writer budget: %v", err)
	}

	a := withBudget(`{"rows": 2, "refs": -1}`)
	if _, err := runDaemon(t, a); err != nil {
		t.Fatal(err)
	}
	gid := strings.TrimSpace(must(t, a, "sg", "create", "notes", "-prefix", "notes/"))
	must(t, a, "row", "put", gid, "notes/1", `"one"`)
	must(t, a, "row", "put", gid, "notes/2", `"two"`)
	_, err := cli(t, a, "row", "put", gid, "notes/3", `"three"`)
	if err == nil || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("a third row with room for two: %v", err)
	}
	// Writing a key again costs no new row.
	must(t, a, "row", "put", gid, "notes/2", `"two, again"`)
}
