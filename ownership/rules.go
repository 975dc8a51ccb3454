// Package ownership decides and records who is responsible for keeping a
// blob: per-syncgroup shares, the priority order that says who should take
// them, the offer and accept rules of a share transfer, and whether a
// device may evict a blob. It does no network I/O.
package ownership

import (
	"time"

	"github.com/syncnode/syncnode"
)

// ServerTimeSlop is how much fresher one ServerTime must be than another to
// count as fresher.
const ServerTimeSlop = 2 * time.Minute

// CreatorShares is how many shares the creator of a blob ref gives itself in
// each syncgroup, if it holds the blob.
const CreatorShares = 2

// Lower reports whether priority a is strictly lower than b. A server is
// never lower than anyone; across device types server > normal > leaf;
// otherwise the fresher ServerTime (by more than ServerTimeSlop) wins, then
// the smaller Distance.
func Lower(a, b syncnode.Priority) bool {
	if a.DevType == syncnode.Server {
		return false
	}
	if b.DevType == syncnode.Server {
		return true
	}
	if a.DevType != b.DevType {
		return a.DevType == syncnode.Leaf // leaf < normal
	}
	if b.ServerTime.After(a.ServerTime.Add(ServerTimeSlop)) {
		return true
	}
	if a.ServerTime.After(b.ServerTime.Add(ServerTimeSlop)) {
		return false
	}
	return a.Distance > b.Distance
}

// Update returns the local priority after syncing with a peer whose
// priority in the same group is remote. A server is at distance 0 and its
// server time is now. Any other device keeps the fresher server time, and
// moves its distance toward the peer's plus one hop, (4·own + remote + 1)/5,
// only when the peer's priority is higher than its own and that brings it
// closer to a server: distances converge to the hops from the nearest
// server and never drift toward a leaf or a device farther away.
func Update(local, remote syncnode.Priority, now time.Time) syncnode.Priority {
	if local.DevType == syncnode.Server {
		return syncnode.Priority{DevType: syncnode.Server, Distance: 0, ServerTime: now}
	}
	out := local
	target := remote.Distance + 1
	if remote.DevType == syncnode.Server {
		target = 1
	}
	if Lower(local, remote) && target < local.Distance {
		out.Distance = (4*local.Distance + target) / 5
	}
	if remote.ServerTime.After(out.ServerTime) {
		out.ServerTime = remote.ServerTime
	}
	return out
}

// OfferCount returns how many of its held shares in a group a holder offers
// to a requester that fetched the blob from it: all of them to a server, one
// to any other device, and none unless the requester's priority is higher.
func OfferCount(holder, requester syncnode.Priority, held int) int {
	if held <= 0 || !Lower(holder, requester) {
		return 0
	}
	if requester.DevType == syncnode.Server {
		return held
	}
	return 1
}

// LeafHandoff returns how many shares a leaf hands to a non-leaf peer it
// syncs with: one, if it holds any; none between other device types.
func LeafHandoff(self, peer syncnode.DevType, held int) int {
	if self == syncnode.Leaf && peer != syncnode.Leaf && held > 0 {
		return 1
	}
	return 0
}

// MayEvict reports whether a device holding shares may evict the blob: only
// with zero shares in every group (and none in escrow).
func MayEvict(shares map[syncnode.GroupID]int, escrowed int) bool {
	if escrowed > 0 {
		return false
	}
	for _, n := range shares {
		if n > 0 {
			return false
		}
	}
	return true
}
