package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/testkit"
)

// adminsAt returns the admins of group gid as dir's daemon lists them.
func adminsAt(t *testing.T, dir, gid string) []string {
	t.Helper()
	var gs []api.Group
	if err := json.Unmarshal([]byte(must(t, dir, "sg", "ls", "--json")), &gs); err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.ID == gid {
			slices.Sort(g.Admins)
			return g.Admins
		}
	}
	return nil
}

// TestAdminFromTheCLI: `sg admin add` names a second admin, who then
// invites and admits on its own while the creator is down; `sg admin
// remove` takes the role away; a member that is no admin, the last admin
// stepping down and the last admin leaving are refused, exit status 1.
func TestAdminFromTheCLI(t *testing.T) {
	t.Parallel()
	a, stopA := stoppableDaemon(t, "-no-lan", "-name", "phone")
	b := daemon(t, "-no-lan", "-name", "laptop")
	c := daemon(t, "-no-lan", "-name", "tablet")
	gid := strings.TrimSpace(must(t, a, "sg", "create", "photos", "-prefix", "photos/", "-private"))
	must(t, b, "sg", "join", strings.TrimSpace(must(t, a, "sg", "invite", gid, statusOf(t, b).ID)))
	aID, bID, cID := statusOf(t, a).ID, statusOf(t, b).ID, statusOf(t, c).ID

	if _, err := cli(t, b, "sg", "admin", "add", gid, "laptop"); err == nil {
		t.Fatal("a member that is no admin named one")
	}
	if _, err := cli(t, a, "sg", "admin", "promote", gid, "laptop"); err == nil || !strings.Contains(err.Error(), "add or remove") {
		t.Fatalf("sg admin promote: %v", err)
	}
	if out := must(t, a, "sg", "admin", "add", gid, "laptop"); !strings.Contains(out, bID) || !strings.Contains(out, aID) {
		t.Fatalf("sg admin add printed %q", out)
	}
	testkit.WaitFor(t, 15*time.Second, "the laptop to list itself an admin", func() bool {
		return slices.Contains(adminsAt(t, b, gid), bID)
	})
	stopA()
	must(t, c, "sg", "join", strings.TrimSpace(must(t, b, "sg", "invite", gid, cID)))
	testkit.WaitFor(t, 15*time.Second, "the tablet to be a member at the laptop", func() bool {
		return strings.Contains(must(t, b, "sg", "members", gid), cID)
	})
	must(t, b, "sg", "admin", "remove", gid, aID)
	if got := adminsAt(t, b, gid); !slices.Equal(got, []string{bID}) {
		t.Fatalf("admins after removing the phone: %v", got)
	}
	if _, err := cli(t, b, "sg", "admin", "remove", gid, bID); err == nil || !strings.Contains(err.Error(), "last admin") {
		t.Fatalf("the last admin stepped down: %v", err)
	}
	if _, err := cli(t, b, "sg", "leave", gid); err == nil || !strings.Contains(err.Error(), "last admin") {
		t.Fatalf("the last admin left: %v", err)
	}
}
