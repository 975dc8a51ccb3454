package featuretests

import (
	"flag"
	"os"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/harness/ownsim"
)

var (
	ownsimSeed   = flag.Uint64("ownsim.seed", 0, "replay this one seed of TestOwnershipSimulation (0: run many)")
	ownsimLong   = flag.Bool("ownsim.long", false, "TestOwnershipSimulation: long mode (more seeds, more steps)")
	ownsimBudget = flag.Duration("ownsim.budget", 45*time.Second, "TestOwnershipSimulation: time for the seeds in short mode")
	ownsimTrace  = flag.Bool("ownsim.trace", false, "TestOwnershipSimulation: print every step")
)

// TestOwnershipSimulation runs the seeded ownership simulation (see package
// ownsim) over many seeds: seeds 1, 2, 3, … until the time budget is spent
// (short mode: up to 400 seeds of 40 steps in about 45 s; long mode
// with -ownsim.long: 2000 seeds of 120 steps, no budget). A failing seed
// prints the command that replays it.
func TestOwnershipSimulation(t *testing.T) {
	steps, seeds, budget := 40, 400, *ownsimBudget
	if *ownsimLong {
		steps, seeds, budget = 120, 2000, 24*time.Hour
	}
	first := uint64(1)
	if *ownsimSeed != 0 {
		first, seeds = *ownsimSeed, 1
	}
	start := time.Now()
	var runs, totalSteps, checks, protected, failed int
	var last uint64
	var settleMax time.Duration
	// Seeds run four at a time: most of a step is waiting on loopback.
	runSeeds(t, first, seeds, 4, start, budget, func(seed uint64) (ownsim.Report, error) {
		cfg := ownsim.Config{Seed: seed, Steps: steps, Dir: t.TempDir()}
		if *ownsimTrace {
			cfg.Trace = os.Stdout
		}
		return ownsim.Run(t.Context(), cfg)
	}, func(seed uint64, rep ownsim.Report, err error) {
		if err != nil {
			failed++
			t.Errorf("%v\nreplay: go test ./featuretests -run TestOwnershipSimulation -ownsim.seed=%d -ownsim.trace -v%s",
				err, seed, map[bool]string{true: " -ownsim.long"}[*ownsimLong])
			return
		}
		runs++
		last = max(last, seed)
		totalSteps += rep.Steps
		checks += rep.Checks
		protected += rep.Protected
		settleMax = max(settleMax, rep.Settling)
	})
	if runs == 0 && failed == 0 {
		t.Fatal("no seed ran")
	}
	t.Logf("%d seeds passed (%d…%d), %d steps, %d invariant checks, %d blobs protected, slowest settle %s, in %s",
		runs, first, last, totalSteps, checks, protected, settleMax.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
