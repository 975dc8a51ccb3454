// Package sim runs a churn simulation of a syncnode mesh on loopback:
// devices, leaves and servers in one syncgroup, random rows referencing
// new blobs, devices evicting under tight budgets, nodes crashing and
// restarting, members leaving or being ejected and invited back, rows
// deleted or overwritten. It reports how long blobs took to reach a
// server, whether any was lost, whether shares were conserved, whether the
// blobs rows no longer name were collected, and the bytes moved.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/nodeaccess"
	"github.com/syncnode/syncnode/internal/ports"
	"github.com/syncnode/syncnode/node"
)

type member struct {
	id  peer.ID
	cfg node.Config
	n   *node.Node // nil while crashed
	// acc is n's host, for partitions (cfg.Access points to it).
	acc nodeaccess.Access
	dev syncnode.DevType
	// moved and messages count the blob bytes received and the sync
	// frames sent by earlier incarnations.
	moved, messages int64
	// out: it left the group or was ejected; it is invited back at write
	// back.
	out  bool
	back int
}

// Run runs the simulation, logging progress to w.
func Run(ctx context.Context, cfg Config, w io.Writer) (Report, error) {
	r := &run{cfg: cfg, w: w, start: time.Now(), rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed)),
		firstRef: map[syncnode.BlobRef]time.Time{}, firstCopy: map[syncnode.BlobRef]time.Duration{},
		firstKnown: map[syncnode.BlobRef]time.Duration{}, unref: map[syncnode.BlobRef]bool{}}
	defer r.closeAll()
	if err := r.setUp(ctx); err != nil {
		return r.rep, err
	}
	stopWatching := r.watch(ctx)
	defer stopWatching()
	if err := r.writeAll(ctx); err != nil {
		return r.rep, err
	}
	r.settle(ctx, stopWatching)
	return r.tally()
}

// pinnedAfterServer reports whether a server holds ref verified while a
// device still holds shares of it.
func pinnedAfterServer(ms []*member, ref syncnode.BlobRef, g syncnode.GroupID) bool {
	onServer, pinned := false, false
	for _, m := range ms {
		held, sh, err := m.n.Holding(ref)
		if err != nil {
			continue
		}
		if m.dev == syncnode.Server && held {
			onServer = true
		}
		if m.dev != syncnode.Server && sh[g] > 0 {
			pinned = true
		}
	}
	return onServer && pinned
}

// ErrLost reports blobs that no node holds at the end of a simulation.
var ErrLost = errors.New("blobs lost")

// ErrUnsettled reports ownership that did not settle by the end of a
// simulation: shares without a copy, or devices pinned after a server copy.
var ErrUnsettled = errors.New("ownership not settled")

func total(ms []*member, ref syncnode.BlobRef, g syncnode.GroupID) int {
	t := 0
	for _, m := range ms {
		sh, _ := m.n.BlobShares(ref)
		t += sh[g]
	}
	return t
}

// quantiles returns the p50 and p99 of ds (sorting it).
func quantiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[min(len(ds)-1, len(ds)*99/100)]
}

// cpuTime returns the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// freeAddr returns a loopback listen address a node keeps across its
// restarts in the run.
func freeAddr() (string, error) {
	p, err := ports.Free()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p), nil
}
