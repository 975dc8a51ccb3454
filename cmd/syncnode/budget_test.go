package main

import (
	"strings"
	"testing"
)

// TestGroupBudgetFromTheCLI: `sg create -writer-rows` makes a group whose
// writers are bound by it, a row past it is refused with the bound named,
// `sg budget` raises it (admins only) and prints it, and the row is taken.
func TestGroupBudgetFromTheCLI(t *testing.T) {
	t.Parallel()
	a := daemon(t, "-no-lan")
	gid := strings.TrimSpace(must(t, a, "sg", "create", "photos", "-prefix", "photos/", "-writer-rows", "2"))
	for _, k := range []string{"photos/a", "photos/b"} {
		must(t, a, "row", "put", gid, k, `"a caption"`)
	}
	_, err := cli(t, a, "row", "put", gid, "photos/c", `"a caption"`)
	if err == nil || !strings.Contains(err.Error(), "at most 2 rows") {
		t.Fatalf("a third row under a budget of 2: %v", err)
	}
	for _, bad := range [][]string{{"-rows", "-3"}, {"-mib", "17592186044417"}} {
		if _, err := cli(t, a, append([]string{"sg", "budget", gid}, bad...)...); err == nil {
			t.Fatalf("budget %v was taken", bad)
		}
	}
	out := must(t, a, "sg", "budget", gid, "-rows", "10", "-mib", "64")
	if !strings.Contains(out, "budget:   10 rows, 67108864 bytes, default references per writer") {
		t.Fatalf("sg budget printed:\n%s", out)
	}
	must(t, a, "row", "put", gid, "photos/c", `"a caption"`)
}
