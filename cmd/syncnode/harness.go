package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/syncnode/syncnode/internal/harness/demo"
	"github.com/syncnode/syncnode/internal/harness/sim"
)

// The commands that run whole meshes in this process: the demo and the
// churn simulation.

func demoCmd() *command {
	return &command{name: "demo", short: "run a three-node demonstration on loopback",
		flags: func(*flag.FlagSet) func(*cmd) error {
			return func(c *cmd) error { return demo.RunTemp(c.ctx, c.stdout) }
		}}
}

func simCmd() *command {
	return &command{name: "sim", short: "churn simulation: crashes, partitions, leaves, ejections, evictions; reports blobs lost (must be 0)",
		flags: func(fs *flag.FlagSet) func(*cmd) error {
			var cfg sim.Config
			fs.IntVar(&cfg.Devices, "devices", 12, "normal devices")
			fs.IntVar(&cfg.Leaves, "leaves", 4, "leaf devices")
			fs.IntVar(&cfg.Servers, "servers", 4, "servers")
			fs.IntVar(&cfg.Blobs, "blobs", 200, "rows with a new blob to write")
			fs.IntVar(&cfg.BlobSize, "size", 256<<10, "bytes per blob")
			fs.DurationVar(&cfg.Pause, "pause", 20*time.Millisecond, "longest pause after each write (each drawn below it): a longer one lowers the load")
			fs.Int64Var(&cfg.Budget, "budget", 1<<20, "blob budget of each device and leaf, bytes")
			fs.IntVar(&cfg.Crashes, "crashes", 20, "nodes stopped and restarted during the run")
			fs.IntVar(&cfg.Partitions, "partitions", 4, "times the mesh is cut in two and healed during the run")
			fs.IntVar(&cfg.Departures, "departures", 0, "times a member leaves the group and is invited back during the run")
			fs.IntVar(&cfg.Ejections, "ejections", 0, "times the admin ejects a member and invites it back during the run")
			fs.IntVar(&cfg.Unreferences, "unreferences", 20, "times a member deletes or overwrites the row of an older blob, which must then be collected everywhere")
			fs.DurationVar(&cfg.Grace, "grace", 3*time.Second, "every node's collection grace")
			fs.DurationVar(&cfg.Settle, "settle", 2*time.Minute, "how long to wait for server copies after the last write")
			fs.Uint64Var(&cfg.Seed, "seed", 0, "random seed (0: the time)")
			cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
			return func(c *cmd) error {
				if *cpuprofile != "" {
					f, err := os.Create(*cpuprofile)
					if err != nil {
						return err
					}
					defer f.Close()
					if err := pprof.StartCPUProfile(f); err != nil {
						return err
					}
					defer pprof.StopCPUProfile()
				}
				if cfg.Seed == 0 {
					cfg.Seed = uint64(time.Now().UnixNano())
				}
				dir, err := os.MkdirTemp("", "syncnode-sim-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				cfg.Dir = dir
				fmt.Fprintf(c.stdout, "churn simulation, seed %d\n", cfg.Seed)
				rep, err := sim.Run(c.ctx, cfg, c.stdout)
				fmt.Fprintln(c.stdout, rep)
				return err
			}
		}}
}
