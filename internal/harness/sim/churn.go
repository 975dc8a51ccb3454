package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode/blobstore/s3store"
	"github.com/syncnode/syncnode/node"
)

// restartDue restarts the nodes whose downtime is over at write i. A
// server whose object store does not answer (a fault under way) cannot
// open: it stays down and is tried again at the next write, as a
// supervisor restarting a daemon that failed to start would.
func (r *run) restartDue(i int) (err error) {
	for k := range r.crashed {
		d := &r.crashed[k]
		if d.until > i || err != nil {
			continue
		}
		if oerr := r.open(d.m); errors.Is(oerr, s3store.ErrUnavailable) {
			fmt.Fprintf(r.w, "restart at write %d: its object store does not answer; tried again at the next write\n", i)
			d.until = i + 1
		} else if oerr != nil {
			err = oerr
		} else {
			d.m = nil // up
		}
	}
	r.crashed = slices.DeleteFunc(r.crashed, func(d down) bool { return d.m == nil })
	if err != nil {
		return fmt.Errorf("sim: restart: %w", err)
	}
	return nil
}

// crashOne stops a random node (never the admin, to keep invites simple)
// until a later write.
func (r *run) crashOne(i, crashEvery int) {
	m := r.ms[1+r.rng.IntN(len(r.ms)-1)]
	if m.n == nil {
		return
	}
	st := m.n.Stats()
	m.moved += st.BytesIn
	m.messages += st.SyncMessages
	r.closeNode(m)
	r.crashed = append(r.crashed, down{m, i + 1 + r.rng.IntN(crashEvery)})
	r.rep.Crashes++
}

// depart has a random member that is up (never the admin) leave the
// group, or has the admin eject it, taking turns until each count is
// done; it is invited back a little later.
func (r *run) depart(ctx context.Context, i, every int) {
	eject := r.rep.Ejections < r.cfg.Ejections && (r.rep.Departures >= r.cfg.Departures || r.rng.IntN(2) == 0)
	if !eject && r.rep.Departures >= r.cfg.Departures {
		return
	}
	m := r.ms[1+r.rng.IntN(len(r.ms)-1)]
	admin := r.ms[0].n
	if m.n == nil || m.out || admin == nil {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	if eject {
		_, err = admin.EjectMemberWith(dctx, r.g, m.id, node.EjectOptions{})
	} else {
		_, err = m.n.LeaveGroupWith(dctx, r.g, node.LeaveOptions{})
	}
	switch {
	case errors.Is(err, node.ErrAtRisk):
		r.rep.Refused++
	case err != nil:
		fmt.Fprintf(r.w, "member %s: leave or ejection failed: %v\n", m.id, err)
	case eject:
		r.rep.Ejections++
	default:
		r.rep.Departures++
	}
	if err == nil {
		m.out, m.back = true, i+1+r.rng.IntN(every)
	}
}

// rejoinDue invites back, and has join, the members out of the group
// whose time has come (and that are up).
func (r *run) rejoinDue(ctx context.Context, i int) error {
	admin := r.ms[0].n
	for _, m := range r.ms {
		if !m.out || m.back > i || m.n == nil {
			continue
		}
		inv, err := admin.Invite(r.g, m.id, m.dev, time.Hour)
		if err != nil {
			return fmt.Errorf("sim: invite back: %w", err)
		}
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = m.n.JoinGroup(jctx, inv)
		cancel()
		if err != nil {
			if i == math.MaxInt {
				return fmt.Errorf("sim: join again: %w", err)
			}
			m.back = i + 1 // cut off from the admin: at a later write
			continue
		}
		m.out = false
	}
	return nil
}

// split cuts the nodes into two random sides, each side non-empty.
func (r *run) split() {
	ids := make([]peer.ID, len(r.ms))
	hosts := make([]host.Host, len(r.ms))
	side := make([]int, len(r.ms))
	for k, m := range r.ms {
		ids[k], side[k] = m.id, r.rng.IntN(2)
		if m.n != nil {
			hosts[k] = m.acc.Host
		}
	}
	side[0], side[1+r.rng.IntN(len(r.ms)-1)] = 0, 1
	r.cut.Split(ids, hosts, side)
	r.rep.Partitions++
}
