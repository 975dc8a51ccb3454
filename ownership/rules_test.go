package ownership

import (
	"testing"
	"time"

	"github.com/syncnode/syncnode"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func prio(d syncnode.DevType, dist float64, st time.Time) syncnode.Priority {
	return syncnode.Priority{DevType: d, Distance: dist, ServerTime: st}
}

func TestLower(t *testing.T) {
	srv := prio(syncnode.Server, 0, t0)
	oldSrv := prio(syncnode.Server, 5, t0.Add(-time.Hour))
	normal := prio(syncnode.Normal, 1, t0)
	leaf := prio(syncnode.Leaf, 0, t0.Add(time.Hour)) // fresher and closer, still a leaf
	cases := []struct {
		name string
		a, b syncnode.Priority
		want bool
	}{
		{"server vs server", srv, oldSrv, false},
		{"server vs server reversed", oldSrv, srv, false},
		{"server vs normal", srv, normal, false},
		{"normal vs server", normal, srv, true},
		{"leaf vs server", leaf, srv, true},
		{"leaf vs normal", leaf, normal, true},
		{"normal vs leaf", normal, leaf, false},
		{"fresher by more than slop", prio(syncnode.Normal, 0, t0), prio(syncnode.Normal, 9, t0.Add(3*time.Minute)), true},
		{"fresher within slop: distance decides", prio(syncnode.Normal, 1, t0), prio(syncnode.Normal, 2, t0.Add(time.Minute)), false},
		{"within slop, farther is lower", prio(syncnode.Normal, 2, t0.Add(time.Minute)), prio(syncnode.Normal, 1, t0), true},
		{"equal is not lower", normal, normal, false},
	}
	for _, c := range cases {
		if got := Lower(c.a, c.b); got != c.want {
			t.Errorf("%s: Lower = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestUpdate(t *testing.T) {
	now := t0.Add(time.Hour)
	s := Update(prio(syncnode.Server, 3, t0), prio(syncnode.Normal, 1, t0), now)
	if s.Distance != 0 || !s.ServerTime.Equal(now) {
		t.Fatalf("server after update: %+v", s)
	}
	n := Update(prio(syncnode.Normal, 4, t0), prio(syncnode.Server, 0, now), now)
	if n.Distance != (4*4+0+1)/5.0 || !n.ServerTime.Equal(now) {
		t.Fatalf("normal after syncing with a server: %+v", n)
	}
	// Repeated syncs with a server converge toward one hop.
	for range 100 {
		n = Update(n, prio(syncnode.Server, 0, now), now)
	}
	if n.Distance < 0.999 || n.Distance > 1.001 {
		t.Fatalf("distance converged to %v, want 1", n.Distance)
	}
	// A staler peer never makes our server time older.
	m := Update(prio(syncnode.Normal, 1, now), prio(syncnode.Normal, 1, t0), now)
	if !m.ServerTime.Equal(now) {
		t.Fatalf("server time went back: %v", m.ServerTime)
	}
}

// TestPriorityNeverDriftsDown: syncing with a leaf, or with a device
// farther from a server, never moves a device's distance away from the
// server; along a chain server–a–b–c distances converge to the hops.
func TestPriorityNeverDriftsDown(t *testing.T) {
	now := t0.Add(time.Hour)
	near := prio(syncnode.Normal, 1, now)
	for _, remote := range []syncnode.Priority{
		prio(syncnode.Leaf, 10, t0),
		prio(syncnode.Leaf, 0, now),
		prio(syncnode.Normal, 7, t0),
		prio(syncnode.Normal, 3, now),
	} {
		p := near
		for range 50 {
			next := Update(p, remote, now)
			if Lower(next, p) || next.Distance > p.Distance {
				t.Fatalf("syncing with %+v moved %+v down to %+v", remote, p, next)
			}
			p = next
		}
	}
	srv := prio(syncnode.Server, 0, now)
	a, b, c := prio(syncnode.Normal, 10, t0), prio(syncnode.Normal, 10, t0), prio(syncnode.Leaf, 10, t0)
	for range 200 {
		// Every pair syncs in both directions, the leaf with everyone.
		a, b = Update(a, b, now), Update(b, a, now)
		c, a = Update(c, a, now), Update(a, c, now)
		a = Update(a, srv, now)
		b, c = Update(b, c, now), Update(c, b, now)
	}
	for _, x := range []struct {
		name string
		p    syncnode.Priority
		want float64
	}{{"a", a, 1}, {"b", b, 2}, {"leaf c", c, 2}} {
		if x.p.Distance < x.want-0.01 || x.p.Distance > x.want+0.01 {
			t.Errorf("%s converged to distance %.3f, want %v", x.name, x.p.Distance, x.want)
		}
	}
}

func TestOfferCount(t *testing.T) {
	srv := prio(syncnode.Server, 0, t0)
	normal := prio(syncnode.Normal, 1, t0)
	leaf := prio(syncnode.Leaf, 1, t0)
	if n := OfferCount(normal, srv, 5); n != 5 {
		t.Errorf("to a server: %d, want all 5", n)
	}
	if n := OfferCount(leaf, normal, 5); n != 1 {
		t.Errorf("to a higher normal: %d, want 1", n)
	}
	if n := OfferCount(normal, leaf, 5); n != 0 {
		t.Errorf("to a lower leaf: %d, want 0", n)
	}
	if n := OfferCount(srv, srv, 5); n != 0 {
		t.Errorf("server to server: %d, want 0", n)
	}
	if n := OfferCount(normal, srv, 0); n != 0 {
		t.Errorf("with nothing held: %d", n)
	}
	if LeafHandoff(syncnode.Leaf, syncnode.Normal, 2) != 1 || LeafHandoff(syncnode.Leaf, syncnode.Leaf, 2) != 0 || LeafHandoff(syncnode.Normal, syncnode.Server, 2) != 0 {
		t.Error("leaf handoff rule")
	}
	if MayEvict(map[syncnode.GroupID]int{"a": 0, "b": 1}, 0) || !MayEvict(map[syncnode.GroupID]int{"a": 0}, 0) || MayEvict(nil, 1) {
		t.Error("may-evict rule")
	}
}
