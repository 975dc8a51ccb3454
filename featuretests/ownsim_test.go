package featuretests

import (
	"flag"
	"os"
	"sync"
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
	type result struct {
		seed uint64
		rep  ownsim.Report
		err  error
	}
	// Seeds run four at a time: most of a step is waiting on loopback.
	next := make(chan uint64)
	results := make(chan result)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range next {
				cfg := ownsim.Config{Seed: seed, Steps: steps, Dir: t.TempDir()}
				if *ownsimTrace {
					cfg.Trace = os.Stdout
				}
				rep, err := ownsim.Run(t.Context(), cfg)
				results <- result{seed, rep, err}
			}
		}()
	}
	go func() {
		defer close(next)
		for seed := first; seed < first+uint64(seeds); seed++ {
			if time.Since(start) > budget {
				return
			}
			select {
			case next <- seed:
			case <-t.Context().Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	var runs, totalSteps, checks, protected int
	var last uint64
	var settleMax time.Duration
	failed := 0
	for r := range results {
		if r.err != nil {
			failed++
			t.Errorf("%v\nreplay: go test ./featuretests -run TestOwnershipSimulation -ownsim.seed=%d -ownsim.trace -v%s",
				r.err, r.seed, map[bool]string{true: " -ownsim.long"}[*ownsimLong])
			continue
		}
		runs++
		last = max(last, r.seed)
		totalSteps += r.rep.Steps
		checks += r.rep.Checks
		protected += r.rep.Protected
		settleMax = max(settleMax, r.rep.Settling)
	}
	if runs == 0 && failed == 0 {
		t.Fatal("no seed ran")
	}
	t.Logf("%d seeds passed (%d…%d), %d steps, %d invariant checks, %d blobs protected, slowest settle %s, in %s",
		runs, first, last, totalSteps, checks, protected, settleMax.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
