package collect

import (
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	grace := time.Hour
	cases := []struct {
		name string
		f    Facts
		now  time.Time
		want Action
	}{
		{"referenced", Facts{Referenced: true, Opened: t0}, t0, Keep},
		{"referenced again", Facts{Referenced: true, Since: t0, Opened: t0}, t0.Add(2 * grace), Clear},
		{"newly unreferenced", Facts{Seen: true, Opened: t0}, t0, Note},
		{"never seen referenced", Facts{Opened: t0}, t0.Add(2 * grace), Keep},
		{"within the grace", Facts{Since: t0, Opened: t0, Heard: t0.Add(grace / 2)}, t0.Add(grace / 2), Wait},
		{"grace over, no round since", Facts{Since: t0, Opened: t0, Heard: t0.Add(grace / 2)}, t0.Add(2 * grace), Wait},
		{"grace over, a round since", Facts{Since: t0, Opened: t0, Heard: t0.Add(grace + time.Second)}, t0.Add(2 * grace), Collect},
		{"grace over, alone", Facts{Since: t0, Opened: t0, Alone: true}, t0.Add(grace), Collect},
		// The grace counts from the open: the node was down before it, and
		// could not hear of a new reference.
		{"reopened", Facts{Since: t0, Opened: t0.Add(2 * grace), Alone: true}, t0.Add(2*grace + grace/2), Wait},
		{"reopened, grace over", Facts{Since: t0, Opened: t0.Add(2 * grace), Alone: true}, t0.Add(3 * grace), Collect},
		// A node booted with a stale wall clock, set right ten minutes
		// later: by the wall clock the grace is long over, but the node
		// has watched the blob unreferenced for ten minutes only.
		{"wall clock set forward", Facts{Since: t0, Opened: t0, Alone: true, Watched: t0.Add(100*grace - 10*time.Minute)}, t0.Add(100 * grace), Wait},
		{"wall clock set forward, grace over", Facts{Since: t0, Opened: t0, Alone: true, Watched: t0.Add(100 * grace)}, t0.Add(101 * grace), Collect},
	}
	for _, c := range cases {
		if got := Plan(c.f, c.now, grace); got != c.want {
			t.Errorf("%s: Plan = %d, want %d", c.name, got, c.want)
		}
	}
}
