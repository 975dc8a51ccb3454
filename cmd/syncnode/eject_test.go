package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/control"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
)

// stoppableDaemon is daemon, with a stop that ends the daemon before the
// test does.
func stoppableDaemon(t *testing.T, init ...string) (dir string, stop func()) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "data")
	must(t, dir, append([]string{"init"}, init...)...)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- control.Run(ctx, dir, slog.New(slog.DiscardHandler), func(*node.Node) { close(ready) })
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	var stopped error
	stopOnce := func() {
		if cancel != nil {
			cancel()
			cancel, stopped = nil, <-done
		}
	}
	t.Cleanup(func() {
		stopOnce()
		if stopped != nil {
			t.Error(stopped)
		}
	})
	return dir, stopOnce
}

// statusOf is dir's daemon's status.
func statusOf(t *testing.T, dir string) api.Status {
	t.Helper()
	var st api.Status
	if err := json.Unmarshal([]byte(must(t, dir, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitRow waits until dir's node has row key of group g.
func waitRow(t *testing.T, dir, g, key string) {
	t.Helper()
	testkit.WaitFor(t, 15*time.Second, "row "+key+" at "+dir, func() bool {
		_, err := cli(t, dir, "row", "get", g, key)
		return err == nil
	})
}

// TestEjectFromTheCLI: an admin's `sg eject` first says what the
// ejection would do (here: fetch the one blob the member keeps shares
// of), then ejects and keeps the blob with its shares; a member that is
// no admin is refused; a member that does not answer is refused unless
// -force, and the dry run and the forced ejection name its blob at risk.
func TestEjectFromTheCLI(t *testing.T) {
	t.Parallel()
	a := daemon(t, "-no-lan", "-name", "phone")
	b := daemon(t, "-no-lan", "-name", "laptop")
	c, stopC := stoppableDaemon(t, "-no-lan", "-name", "tablet")
	gid := strings.TrimSpace(must(t, a, "sg", "create", "photos", "-prefix", "photos/", "-private"))
	for _, dir := range []string{b, c} {
		must(t, dir, "sg", "join", strings.TrimSpace(must(t, a, "sg", "invite", gid, statusOf(t, dir).ID)))
	}
	bID, cID := statusOf(t, b).ID, statusOf(t, c).ID
	refB := putFile(t, b, "the laptop's photo")
	must(t, b, "row", "put", gid, "photos/b", `{"image": {"$blob": "`+refB+`"}}`)
	refC := putFile(t, c, "the tablet's photo")
	must(t, c, "row", "put", gid, "photos/c", `{"image": {"$blob": "`+refC+`"}}`)
	waitRow(t, a, gid, "photos/b")
	waitRow(t, a, gid, "photos/c")

	// Only an admin ejects.
	if _, err := cli(t, c, "sg", "eject", gid, bID); err == nil || !strings.Contains(err.Error(), "only an admin") {
		t.Fatalf("eject by a member that is no admin: %v", err)
	} else {
		t.Logf("sg eject by a member: %v", err)
	}

	// The dry run: b keeps shares of refB, which a lacks; nothing at risk.
	out := must(t, a, "sg", "eject", "-dry-run", gid, "laptop")
	t.Logf("sg eject -dry-run:\n%s", out)
	for _, want := range []string{"ejecting laptop (" + bID + ")", "keeps shares of 1 blob", refB, "at risk: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run does not say %q:\n%s", want, out)
		}
	}
	if !strings.Contains(must(t, a, "sg", "members", gid), bID) {
		t.Fatal("the dry run ejected the member")
	}
	out = must(t, a, "sg", "eject", gid, "laptop")
	t.Logf("sg eject:\n%s", out)
	if !strings.Contains(out, "ejected laptop") || !strings.Contains(out, "1 blob fetched and kept") {
		t.Fatalf("eject printed:\n%s", out)
	}
	if strings.Contains(must(t, a, "sg", "members", gid), bID) {
		t.Fatal("b is still a member after its ejection")
	}
	var info api.BlobInfo
	if err := json.Unmarshal([]byte(must(t, a, "blob", "stat", refB, "--json")), &info); err != nil || info.Shares[syncnode.GroupID(gid)] != 2 {
		t.Fatalf("the ejected member's blob at the admin: %+v %v", info, err)
	}

	// c stops answering: the only copy of refC is with it. The dry run
	// says so, and the ejection is refused.
	stopC()
	out, err := cli(t, a, "sg", "eject", gid, cID)
	t.Logf("sg eject, the member gone:\n%s%v", out, err)
	if err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("eject of a member that does not answer: %v", err)
	}
	for _, want := range []string{"does not answer", refC + "  AT RISK", "refused unless -force"} {
		if !strings.Contains(out, want) {
			t.Errorf("the dry run for a member that does not answer does not say %q:\n%s", want, out)
		}
	}
	if !strings.Contains(must(t, a, "sg", "members", gid), cID) {
		t.Fatal("a refused ejection ejected the member")
	}
	out = must(t, a, "sg", "eject", "-force", gid, cID)
	t.Logf("sg eject -force:\n%s", out)
	if !strings.Contains(out, "ejected tablet") || !strings.Contains(out, "1 blob left at risk") || !strings.Contains(out, refC) {
		t.Fatalf("forced eject printed:\n%s", out)
	}
}
