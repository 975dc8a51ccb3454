package main

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/syncgroup"
)

// TestJoinWithThePrintedInvitation: with LAN discovery off, what sg invite
// prints is all sg join needs; what older nodes printed (the invitation
// and the admin's addresses beside it, in JSON) still joins, and so does
// an invitation without addresses given -addr. Given none, the join fails
// and says why.
func TestJoinWithThePrintedInvitation(t *testing.T) {
	t.Parallel()
	// Each joiner knows nothing of the admin before its join.
	a, b, c, d := daemon(t, "-no-lan"), daemon(t, "-no-lan"), daemon(t, "-no-lan"), daemon(t, "-no-lan")
	status := func(dir string) api.Status {
		var st api.Status
		if err := json.Unmarshal([]byte(must(t, dir, "status", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	admin := status(a)
	group := func(name string) string {
		return strings.TrimSpace(must(t, a, "sg", "create", name, "-prefix", name+"/", "-private"))
	}
	// bare is a printed invitation to g for dir's node without its
	// addresses, as the signed invitation of an older node.
	bare := func(g, dir string) []byte {
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(must(t, a, "sg", "invite", g, status(dir).ID)))
		if err != nil {
			t.Fatal(err)
		}
		inv, err := syncgroup.UnmarshalInvitation(raw)
		if err != nil {
			t.Fatal(err)
		}
		if len(inv.Addrs) == 0 {
			t.Fatal("the printed invitation carries no addresses")
		}
		out, _ := inv.WithoutAddrs().Marshal()
		return out
	}

	photos := group("photos")
	if out := must(t, b, "sg", "join", must(t, a, "sg", "invite", photos, status(b).ID)); !strings.Contains(out, photos) {
		t.Fatalf("join printed %q", out)
	}

	films := group("films")
	var hostAddrs []string // as older nodes gave them: no /p2p/ ID
	for _, a := range admin.Addrs {
		hostAddrs = append(hostAddrs, strings.Split(a, "/p2p/")[0])
	}
	old, _ := json.Marshal(api.Invitation{Invitation: bare(films, c), AdminAddrs: hostAddrs})
	if out := must(t, c, "sg", "join", base64.RawURLEncoding.EncodeToString(old)); !strings.Contains(out, films) {
		t.Fatalf("join with an older node's printed invitation printed %q", out)
	}

	notes := group("notes")
	inv := base64.RawURLEncoding.EncodeToString(bare(notes, d))
	if _, err := cli(t, d, "sg", "join", inv); err == nil || !strings.Contains(err.Error(), "carries none") {
		t.Fatalf("join with no address anywhere: %v", err)
	}
	args := []string{"sg", "join"}
	for _, addr := range admin.Addrs {
		args = append(args, "-addr", addr)
	}
	if out := must(t, d, append(args, inv)...); !strings.Contains(out, notes) {
		t.Fatalf("join with -addr printed %q", out)
	}
}
