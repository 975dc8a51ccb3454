package syncgroup

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestExtendMatchesAFullWalk: after every change applied, the path the
// incremental extension gives equals a full walk of the same rows.
func TestExtendMatchesAFullWalk(t *testing.T) {
	seeds := uint64(40)
	if testing.Short() {
		seeds = 4
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(seed, 7))
		w := newWorld(t, 5)
		s := w.devs[0]
		w.must(s.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[1]}, w.tick()))
		w.must(s.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[2]}, w.tick()))
		w.all()
		g := w.fresh(4)
		deliver(t, s, g, w.tick())
		seq := uint64(5000)
		for step := 0; step < 300; step++ {
			c := g.gov()
			keys := slices.Collect(func(yield func(string) bool) {
				for k := range c.links {
					if !yield(k) {
						return
					}
				}
			})
			slices.Sort(keys)
			parent := c.path[len(c.path)-1]
			if rng.IntN(3) == 0 {
				parent = keys[rng.IntN(len(keys))]
			}
			wr := rng.IntN(4)
			var ch Change
			switch rng.IntN(6) {
			case 0:
				ch = Change{Op: SetCopies, N: 1 + rng.IntN(8)}
			case 1:
				ch = Change{Op: AddPrefix, Prefix: fmt.Sprintf("p%d/", rng.IntN(5))}
			case 2:
				ch = Change{Op: RemoveAdmin, Peer: w.ids[rng.IntN(4)]}
			case 3:
				ch = Change{Op: AddAdmin, Peer: w.ids[rng.IntN(4)]}
			case 4:
				ch = Change{Op: opEject, Peer: w.ids[rng.IntN(4)]}
			case 5:
				ch = Change{Op: RemovePrefix, Prefix: fmt.Sprintf("p%d/", rng.IntN(5))}
			}
			ch.Parent = parent
			seq++
			r := w.forge(wr, ch, seq)
			if _, err := g.Apply(r, w.tick()); err != nil {
				continue
			}
			if rng.IntN(4) == 0 { // the same key again, a later row
				seq++
				r2 := w.forge(wr, ch, seq)
				g.Apply(r2, w.tick())
			}
			inc := slices.Clone(g.gov().path)
			incHead := g.gov().head.clone()
			g.chain.valid = false
			full := g.gov().path
			if !slices.Equal(inc, full) || !slices.Equal(incHead.admins, g.gov().head.admins) || !slices.Equal(incHead.prefixes, g.gov().head.prefixes) || incHead.copies != g.gov().head.copies {
				t.Fatalf("seed %d step %d: incremental path (%d) differs from a full walk (%d)", seed, step, len(inc), len(full))
			}
		}
	}
}
