package featuretests

import (
	"flag"
	"os"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/node"
)

var (
	idleWindow  = flag.Duration("idle.window", time.Minute, "how long TestIdleGroupIsQuiet measures the idle group's CPU time")
	idleProfile = flag.String("idle.cpuprofile", "", "write a CPU profile of TestIdleGroupIsQuiet's idle window to this file")
)

// processCPU returns the CPU time this process has used, user and system.
func processCPU(t testing.TB) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// An idle group costs next to nothing: four nodes with the production
// defaults (sync interval, fetcher scans, scrubber), one group, a row and
// a blob settled on the server, then idle. The process's CPU time over the
// window, per node, must stay under 0.75 % of a core (under -race, whose
// instrumentation multiplies every instruction's cost, 1.5 %). Measured:
// 0.4–0.6 %, most of it badger's compactors, which wake every 50 ms
// whatever the load; syncnode's own periodic work (rounds with two
// members per 30 s, scans, the scrubber) is a small part. The test
// measures this process's CPU, so it never runs in parallel; a minute of
// it is a long form, skipped under -short.
func TestIdleGroupIsQuiet(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: measures a minute of idle CPU alone; runs without -short")
	}
	defaults := func(c *node.Config) { c.SyncInterval, c.Fetcher, c.IOTimeout = 0, nil, 0 }
	admin := start(t, defaults)
	laptop, tablet, server := start(t, defaults), start(t, defaults), start(t, defaults)
	g := createGroup(t, admin, "photos", syncnode.Normal)
	join(t, admin, laptop, g, syncnode.Normal)
	join(t, admin, tablet, g, syncnode.Normal)
	join(t, admin, server, g, syncnode.Server)
	ref := putBlobRow(t, laptop, g, "photos/one", randomBytes(64<<10, 3))
	waitFor(t, 30*time.Second, "the server's copy and shares", func() bool {
		return server.HasBlob(ref) && shares(t, server, ref, g) == 2
	})
	// Let the last hand-offs and first rounds finish.
	time.Sleep(2 * time.Second)
	if *idleProfile != "" {
		f, err := os.Create(*idleProfile)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
	}
	cpu0, wall0 := processCPU(t), time.Now()
	time.Sleep(*idleWindow)
	cpu, wall := processCPU(t)-cpu0, time.Since(wall0)
	if *idleProfile != "" {
		pprof.StopCPUProfile()
	}
	perNode := cpu.Seconds() / wall.Seconds() / 4
	t.Logf("idle over %v: %v of CPU for 4 nodes, %.3f %% of a core per node", wall.Round(time.Millisecond), cpu.Round(time.Millisecond), 100*perNode)
	limit := 0.0075
	if raceEnabled {
		limit = 0.015
	}
	if perNode > limit {
		t.Fatalf("an idle node uses %.3f %% of a core; at most %.1f %%", 100*perNode, 100*limit)
	}
}
