package featuretests

import (
	"flag"
	"os"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/harness/hostile"
)

var (
	hostileSeed   = flag.Uint64("hostile.seed", 0, "replay this one seed of TestHostileMemberSimulation (0: run many)")
	hostileLong   = flag.Bool("hostile.long", false, "TestHostileMemberSimulation: long mode (2000 seeds, no time budget)")
	hostileSeeds  = flag.Int("hostile.seeds", 0, "TestHostileMemberSimulation: how many seeds (0: 2000 in long mode, 3 under -short, else as the budget allows)")
	hostileBudget = flag.Duration("hostile.budget", 20*time.Second, "TestHostileMemberSimulation: time for starting seeds by default (neither -short nor -hostile.long)")
	hostileTrace  = flag.Bool("hostile.trace", false, "TestHostileMemberSimulation: print every step")
	hostileNoMint = flag.Bool("hostile.nomint", false, "TestHostileMemberSimulation: the hostile member never offers shares it does not hold")
)

// TestHostileMemberSimulation runs the seeded hostile-member simulation
// (see package hostile) over seeds 1, 2, 3, …, three at a time: by
// default until the time budget is spent, under -short seeds 1…3 whatever
// the time, in long mode (-hostile.long) 2000 seeds. A failing seed prints
// the command that replays it.
func TestHostileMemberSimulation(t *testing.T) {
	t.Parallel()
	seeds, budget := 400, *hostileBudget
	switch {
	case *hostileLong:
		seeds, budget = 2000, 24*time.Hour
	case testing.Short():
		seeds, budget = 3, 24*time.Hour
	}
	if *hostileSeeds > 0 {
		seeds = *hostileSeeds
	}
	first := uint64(1)
	if *hostileSeed != 0 {
		first, seeds = *hostileSeed, 1
	}
	start := time.Now()
	var runs, failed, steps, attacks, checks int
	var last uint64
	var slowest time.Duration
	runSeeds(t, first, seeds, 3, start, budget, func(seed uint64) (hostile.Report, error) {
		cfg := hostile.Config{Seed: seed, Dir: t.TempDir(), NoMint: *hostileNoMint}
		if *hostileTrace {
			cfg.Trace = os.Stdout
		}
		return hostile.Run(t.Context(), cfg)
	}, func(seed uint64, rep hostile.Report, err error) {
		if err != nil {
			failed++
			t.Errorf("%v\nreplay: go test ./featuretests -run TestHostileMemberSimulation -hostile.seed=%d -hostile.trace -v", err, seed)
			return
		}
		runs++
		last = max(last, seed)
		steps += rep.Steps
		attacks += rep.Attacks
		checks += rep.Checks
		slowest = max(slowest, rep.Spread)
	})
	if runs == 0 && failed == 0 {
		t.Fatal("no seed ran")
	}
	t.Logf("%d seeds passed, %d failed (%d…%d): %d steps, %d hostile, %d checks; slowest fresh row %s; in %s",
		runs, failed, first, max(last, first), steps, attacks, checks, slowest.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
