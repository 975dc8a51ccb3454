package faults

import (
	"errors"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/syncer"
)

// TestEjectionBansEveryInvitation: an ejection keeps the peer out whatever
// invitation it holds — one issued before it joined (ejected before it
// ever joined), or a second one it kept unused — until an admin invites
// it again after the ejection.
func TestEjectionBansEveryInvitation(t *testing.T) {
	t.Parallel()
	admin, member := nodetest.Start(t), nodetest.Start(t)
	g := nodetest.CreateGroup(t, admin, "photos", syncnode.Normal)
	nodetest.Join(t, admin, member, g, syncnode.Normal)

	t.Run("ejected before it joined", func(t *testing.T) {
		late := nodetest.Start(t)
		inv, err := admin.Invite(g, late.ID(), syncnode.Normal, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.EjectMember(g, late.ID()); err != nil {
			t.Fatal(err)
		}
		if _, err := late.JoinGroup(t.Context(), inv); !errors.Is(err, syncer.ErrRefused) {
			t.Fatalf("a peer ejected before it joined joined with its invitation: %v", err)
		}
		if len(admin.Members(g)) != 2 {
			t.Fatalf("the admin counts %d members", len(admin.Members(g)))
		}
	})

	t.Run("a second invitation kept unused", func(t *testing.T) {
		twice := nodetest.Start(t)
		first, err := admin.Invite(g, twice.ID(), syncnode.Normal, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		spare, err := admin.Invite(g, twice.ID(), syncnode.Normal, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := twice.JoinGroup(t.Context(), first); err != nil {
			t.Fatal(err)
		}
		if err := admin.EjectMember(g, twice.ID()); err != nil {
			t.Fatal(err)
		}
		if _, err := twice.JoinGroup(t.Context(), spare); !errors.Is(err, syncer.ErrRefused) {
			t.Fatalf("an ejected peer joined again with its spare invitation: %v", err)
		}
		if len(admin.Members(g)) != 2 {
			t.Fatalf("the admin counts %d members", len(admin.Members(g)))
		}

		// The admin changes its mind: an invitation issued since the
		// ejection lets the peer back.
		again, err := admin.Invite(g, twice.ID(), syncnode.Normal, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := twice.JoinGroup(t.Context(), again); err != nil {
			t.Fatalf("an invitation issued after the ejection: %v", err)
		}
		if len(admin.Members(g)) != 3 {
			t.Fatalf("after the new invitation the admin counts %d members", len(admin.Members(g)))
		}
	})
}
