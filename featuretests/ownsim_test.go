package featuretests

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/syncnode/syncnode/blobstore/s3store"
	"github.com/syncnode/syncnode/internal/harness/ownsim"
	"github.com/syncnode/syncnode/internal/harness/s3faults"
	"github.com/syncnode/syncnode/internal/s3test"
)

var (
	ownsimSeed   = flag.Uint64("ownsim.seed", 0, "replay this one seed of TestOwnershipSimulation (0: run many)")
	ownsimLong   = flag.Bool("ownsim.long", false, "TestOwnershipSimulation: long mode (more seeds, more steps)")
	ownsimSeeds  = flag.Int("ownsim.seeds", 0, "TestOwnershipSimulation: how many seeds (0: 2000 in long mode, 8 under -short (2 on the flaky store), else as the budget allows)")
	ownsimBudget = flag.Duration("ownsim.budget", 45*time.Second, "TestOwnershipSimulation: time for the seeds by default (neither -short nor -ownsim.long)")
	ownsimTrace  = flag.Bool("ownsim.trace", false, "TestOwnershipSimulation: print every step")
	ownsimLogs   = flag.String("ownsim.logs", "", "TestOwnershipSimulation: write the nodes' logs to this file, one per seed (.SEED), kept for the seeds that fail")
)

// TestOwnershipSimulation runs the seeded ownership simulation (see package
// ownsim) over many seeds: seeds 1, 2, 3, … until the time budget is spent
// (default: up to 400 seeds of 40 steps in about 45 s; under -short
// seeds 1…8 of 40 steps, whatever the time; long mode with -ownsim.long:
// 2000 seeds of 120 steps, no budget). A failing seed prints the command
// that replays it.
func TestOwnershipSimulation(t *testing.T) {
	t.Parallel()
	ownershipSeeds(t, "TestOwnershipSimulation", *ownsimBudget, 8, nil)
}

// TestOwnershipSimulationOnFlakyObjectStore is TestOwnershipSimulation
// with the server's blobs on an object store (Versity) behind a proxy
// that the schedule has fail with 503s, cut reads short, and heal; a
// third of the time budget by default, seeds 1 and 2 under -short.
func TestOwnershipSimulationOnFlakyObjectStore(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, bucket)
	ownershipSeeds(t, "TestOwnershipSimulationOnFlakyObjectStore", *ownsimBudget/3, 2, func(cfg *ownsim.Config) {
		proxy := s3faults.New(t, srv.Addr)
		cfg.Faults = proxy
		cfg.ServerStore = &s3store.Config{Insecure: true, Bucket: bucket, Prefix: fmt.Sprintf("ownsim-%d", cfg.Seed),
			Creds: srv.Creds(), Timeout: 2 * time.Second}
	})
}

// ownershipSeeds runs the seeds of the ownership simulation named name,
// with mod (if not nil) changing each seed's config: as many as budget
// allows, or short of them under -short (a fixed set, so that every run
// checks the same schedules).
func ownershipSeeds(t *testing.T, name string, budget time.Duration, short int, mod func(*ownsim.Config)) {
	steps, seeds := 40, 400
	switch {
	case *ownsimLong:
		steps, seeds, budget = 120, 2000, 24*time.Hour
	case testing.Short():
		seeds, budget = short, 24*time.Hour
	}
	if *ownsimSeeds > 0 {
		seeds = *ownsimSeeds
	}
	first := uint64(1)
	if *ownsimSeed != 0 {
		first, seeds = *ownsimSeed, 1
	}
	start := time.Now()
	var runs, totalSteps, checks, protected, collected, failed int
	var last uint64
	var settleMax time.Duration
	// Seeds run four at a time: most of a step is waiting on loopback.
	runSeeds(t, first, seeds, 4, start, budget, func(seed uint64) (ownsim.Report, error) {
		cfg := ownsim.Config{Seed: seed, Steps: steps, Dir: t.TempDir()}
		if *ownsimTrace {
			cfg.Trace = os.Stdout
		}
		if mod != nil {
			mod(&cfg)
		}
		if *ownsimLogs != "" {
			// One file per seed, kept only if the seed fails.
			name := fmt.Sprintf("%s.%d", *ownsimLogs, seed)
			f, err := os.Create(name)
			if err != nil {
				return ownsim.Report{}, err
			}
			defer f.Close()
			cfg.Logs = f
			rep, err := ownsim.Run(t.Context(), cfg)
			if err == nil {
				os.Remove(name)
			}
			return rep, err
		}
		return ownsim.Run(t.Context(), cfg)
	}, func(seed uint64, rep ownsim.Report, err error) {
		if err != nil {
			failed++
			t.Errorf("%v\nreplay: go test ./featuretests -run %s -ownsim.seed=%d -ownsim.trace -v%s",
				err, name, seed, map[bool]string{true: " -ownsim.long"}[*ownsimLong])
			return
		}
		runs++
		last = max(last, seed)
		totalSteps += rep.Steps
		checks += rep.Checks
		protected += rep.Protected
		collected += rep.Collected
		settleMax = max(settleMax, rep.Settling)
	})
	if runs == 0 && failed == 0 {
		t.Fatal("no seed ran")
	}
	t.Logf("%d seeds passed (%d…%d), %d steps, %d invariant checks, %d blobs protected, %d collected, slowest settle %s, in %s",
		runs, first, last, totalSteps, checks, protected, collected, settleMax.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
