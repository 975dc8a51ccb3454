package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/testkit"
)

// groupOf returns the group gid as dir's node has it.
func groupOf(t *testing.T, dir, gid string) api.Group {
	t.Helper()
	var gs []api.Group
	if err := json.Unmarshal([]byte(must(t, dir, "sg", "ls", "--json")), &gs); err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.ID == gid {
			return g
		}
	}
	t.Fatalf("%s is not in %s", dir, gid)
	return api.Group{}
}

// TestAdminsAndPrefixesFromTheCLI: `sg admin add` makes a member an
// admin, who then changes the prefixes and admits a device while the
// creator is stopped; a member that is no admin, a junior admin removing
// the creator, the last admin leaving and a bad copies count are all
// refused with a clear error.
func TestAdminsAndPrefixesFromTheCLI(t *testing.T) {
	t.Parallel()
	a, stopA := stoppableDaemon(t, "-no-lan", "-name", "phone")
	b := daemon(t, "-no-lan", "-name", "laptop")
	c := daemon(t, "-no-lan", "-name", "tablet")
	gid := strings.TrimSpace(must(t, a, "sg", "create", "photos", "-prefix", "photos/"))
	must(t, b, "sg", "join", strings.TrimSpace(must(t, a, "sg", "invite", gid, statusOf(t, b).ID)))
	aID, bID := statusOf(t, a).ID, statusOf(t, b).ID

	refusals := []struct {
		dir  string
		args []string
		want string
	}{
		{b, []string{"sg", "admin", "add", gid, bID}, "only an admin"},
		{b, []string{"sg", "invite", gid, statusOf(t, c).ID}, "only an admin of"},
		{a, []string{"sg", "admin", "add", gid, "nobody"}, "neither a peer ID nor the name of a member"},
		{a, []string{"sg", "admin", "add", gid, statusOf(t, c).ID}, "invite it first"},
		{a, []string{"sg", "copies", gid, "9"}, "from 1 to 8"},
		{a, []string{"sg", "prefix", "remove", gid, "photos/"}, "at least one prefix"},
		{a, []string{"sg", "leave", gid}, "only admin"},
	}
	for _, r := range refusals {
		if out, err := cli(t, r.dir, r.args...); err == nil || !strings.Contains(err.Error(), r.want) {
			t.Fatalf("syncnode %s: %q %v, want a refusal saying %q", strings.Join(r.args, " "), out, err, r.want)
		} else {
			t.Logf("syncnode %s: %v", strings.Join(r.args, " "), err)
		}
	}
	out := must(t, a, "sg", "admin", "add", gid, "laptop") // a member's name will do
	if !strings.Contains(out, "admins:   "+aID+", "+bID) {
		t.Fatalf("sg admin add printed:\n%s", out)
	}
	testkit.WaitFor(t, 15*time.Second, "the laptop is an admin", func() bool {
		return len(groupOf(t, b, gid).Admins) == 2
	})
	if _, err := cli(t, b, "sg", "admin", "remove", gid, aID); err == nil || !strings.Contains(err.Error(), "senior") {
		t.Fatalf("a junior admin removing the creator: %v", err)
	}
	stopA()
	must(t, c, "sg", "join", strings.TrimSpace(must(t, b, "sg", "invite", gid, statusOf(t, c).ID)))
	must(t, b, "sg", "prefix", "add", gid, "docs/")
	testkit.WaitFor(t, 15*time.Second, "the tablet writes under the new prefix", func() bool {
		_, err := cli(t, c, "row", "put", gid, "docs/1", `"hello"`)
		return err == nil
	})
	if g := groupOf(t, c, gid); strings.Join(g.Prefixes, ",") != "photos/,docs/" || len(g.Admins) != 2 {
		t.Fatalf("the tablet's view of the group: %+v", g)
	}
}
