package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/control"
	"github.com/syncnode/syncnode/internal/testkit"
)

// TestCollectedFromTheCLI: with `init -collect-grace`, a blob whose only
// row was deleted is shown unreferenced by `why`, then collected (why
// says when, the metrics count it), and `blob rm` no longer meets shares;
// a bad grace is refused at init with exit status 1.
func TestCollectedFromTheCLI(t *testing.T) {
	t.Parallel()
	if _, err := cli(t, t.TempDir(), "init", "-no-lan", "-collect-grace", "-5s"); err == nil || !strings.Contains(err.Error(), "collect_grace") {
		t.Fatalf("init with a negative grace: %v", err)
	}
	a := daemon(t, "-no-lan", "-collect-grace", "2s")
	gid := strings.TrimSpace(must(t, a, "sg", "create", "photos", "-prefix", "photos/", "-private"))
	ref := putFile(t, a, "a photo soon deleted")
	must(t, a, "row", "put", gid, "photos/one", `{"image": {"$blob": "`+ref+`"}}`)
	if _, err := cli(t, a, "blob", "rm", ref); err == nil || !strings.Contains(err.Error(), "delete every row") {
		t.Fatalf("rm of a referenced blob: %v", err)
	}
	must(t, a, "row", "del", gid, "photos/one")
	testkit.WaitFor(t, 20*time.Second, "why to say the blob is unreferenced", func() bool {
		return strings.Contains(must(t, a, "why", ref), "no live row references it")
	})
	testkit.WaitFor(t, 30*time.Second, "why to say the blob was collected", func() bool {
		return strings.Contains(must(t, a, "why", ref), "\ncollected ")
	})
	// The mark lands before the copy is deleted, in the same pass, so a
	// why between the two still finds the copy; the deletion follows at
	// once, nothing keeping it.
	testkit.WaitFor(t, 10*time.Second, "why to say the collected blob is no longer held", func() bool {
		return strings.Contains(must(t, a, "why", ref), "held      no")
	})
	// The counts are a pass's: the one that collected the blob may still
	// be running.
	testkit.WaitFor(t, 10*time.Second, "status to count 1 collected, 0 unreferenced", func() bool {
		st := statusOf(t, a)
		return st.Collected == 1 && st.Unreferenced == 0
	})
	cl, err := control.Dial(a)
	if err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	if err := cl.Metrics(t.Context(), &metrics); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"syncnode_blobs_collected_total 1", "syncnode_collected_copies_deleted_total 1"} {
		if !strings.Contains(metrics.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
