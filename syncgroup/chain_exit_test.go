package syncgroup

import (
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestRowsOfAMemberWhoseEjectionLostArrive: a junior admin ejects a member
// while the senior removes the junior; the ejection loses (and cannot be
// made again). A replica that held the ejection when the member's rows
// came refuses them for now (ErrAfterExit is undecided): its vector stays
// below them, and they arrive once the ejection has lost.
func TestRowsOfAMemberWhoseEjectionLostArrive(t *testing.T) {
	w := newWorld(t, 4)
	s, j, m, r := w.devs[0], w.devs[1], w.devs[2], w.devs[3]
	w.must(s.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[1]}, w.tick()))
	w.all()
	w.must(j.Eject(w.ids[2], w.tick()))
	w.must(s.ChangeSpec(Change{Op: RemoveAdmin, Peer: w.ids[1]}, w.tick())) // concurrent, senior
	v, _ := msgpack.Marshal("x")
	w.must(m.Put("photos/x", v, w.tick()))
	if _, _, err := m.SetAddrs([]string{"/ip4/1.2.3.4/tcp/1"}, w.tick()); err != nil {
		t.Fatal(err)
	}
	deliver(t, j, r, w.tick())
	t.Logf("m → r: %v", syncerDeliver(m, r, w.tick()))
	deliver(t, s, r, w.tick())
	if rows := j.Rebase(w.tick()); len(rows) > 0 {
		t.Logf("j rebased %d", len(rows))
	}
	for range 2 {
		for a := range w.devs {
			for b := range w.devs {
				if a != b {
					syncerDeliver(w.devs[a], w.devs[b], w.tick())
				}
			}
		}
	}
	if !r.IsMember(w.ids[2]) {
		t.Skip("m not a member on the winning path")
	}
	if _, ok := r.Rows().Get("photos/x"); !ok {
		_, onS := s.Rows().Get("photos/x")
		t.Fatalf("m is a member everywhere, yet r never gets its row photos/x (s has it: %v)", onS)
	}
}
