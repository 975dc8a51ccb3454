// Package signpost keeps, for every blob a node has heard of, where the blob
// probably is and through which syncgroups it was learned: the Signpost
// type, its merge and ranking rules, the filter applied before one is shown
// to a peer, and its wire and disk forms.
package signpost

import (
	"maps"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

// MaxLocations is how many locations a signpost keeps after a merge.
const MaxLocations = 4

// Location is what a node believes about one peer that may hold a blob.
type Location struct {
	// WhenSeen is when the peer was last known to hold (or be fetching) it.
	WhenSeen time.Time
	// IsServer reports that the peer is a server in a group of the blob.
	IsServer bool
	// IsProxy reports that the peer relayed the ref without being its
	// creator, so it may only know where the blob is.
	IsProxy bool
	// Addrs are multiaddrs at which the peer was reachable.
	Addrs []string
}

// Signpost tells where a blob probably is. The zero value is empty and ready
// to use.
type Signpost struct {
	// Locations maps peers to what is known of them; at most MaxLocations
	// after a merge.
	Locations map[peer.ID]Location
	// SgIDs are the syncgroups through which the blob was learned.
	SgIDs map[syncnode.GroupID]struct{}
	// legacyAttempts is an attempt count an older version stored here;
	// it is kept as it was until the fetcher's journal takes it over
	// (see Store.LegacyAttempts), never sent and never merged.
	legacyAttempts uint32
}

// Located is one location with its peer, as returned by Ranked.
type Located struct {
	Peer peer.ID
	Location
}

// Better reports whether a ranks strictly before b: servers before others,
// then holders before proxies (members that only relayed a row naming the
// blob, which may not hold it), then the more recently seen, then by peer
// ID. It is a strict weak ordering (in fact a strict total order on
// distinct peers), so sorting and trimming by it are deterministic. Since
// a signpost keeps the MaxLocations best, the members that relay a row
// never push its writer, the one peer known to hold the blob, out of it.
func Better(a, b Located) bool {
	if a.IsServer != b.IsServer {
		return a.IsServer
	}
	if a.IsProxy != b.IsProxy {
		return !a.IsProxy
	}
	if !a.WhenSeen.Equal(b.WhenSeen) {
		return a.WhenSeen.After(b.WhenSeen)
	}
	return a.Peer < b.Peer
}

// Ranked returns the locations, best first by Better.
func (s Signpost) Ranked() []Located {
	out := make([]Located, 0, len(s.Locations))
	for p, l := range s.Locations {
		out = append(out, Located{Peer: p, Location: l})
	}
	slices.SortFunc(out, func(a, b Located) int {
		switch {
		case Better(a, b):
			return -1
		case Better(b, a):
			return 1
		}
		return 0
	})
	return out
}

// Groups returns the signpost's syncgroups in sorted order.
func (s Signpost) Groups() []syncnode.GroupID {
	return slices.Sorted(maps.Keys(s.SgIDs))
}

// AddGroup records that the blob was learned through g.
func (s *Signpost) AddGroup(g syncnode.GroupID) {
	if s.SgIDs == nil {
		s.SgIDs = map[syncnode.GroupID]struct{}{}
	}
	s.SgIDs[g] = struct{}{}
}

// AddLocation merges one location into s, as Merge would.
func (s *Signpost) AddLocation(p peer.ID, l Location) {
	s.Merge(Signpost{Locations: map[peer.ID]Location{p: l}})
}

// Merge folds o into s: the union of groups; per peer, a sighting as a
// holder over one as a proxy whatever their ages (hearsay that a peer
// relayed a ref never overwrites that it holds the blob), else the newer
// sighting (on a tie, flags or'ed; addresses joined whenever a holder
// sighting meets a proxy one or two tie, so merging is commutative); then
// only the best MaxLocations locations.
func (s *Signpost) Merge(o Signpost) {
	for g := range o.SgIDs {
		s.AddGroup(g)
	}
	if len(o.Locations) > 0 && s.Locations == nil {
		s.Locations = make(map[peer.ID]Location, len(o.Locations))
	}
	for p, l := range o.Locations {
		cur, ok := s.Locations[p]
		switch {
		case !ok:
			s.Locations[p] = cloneLoc(l)
		case l.IsProxy && !cur.IsProxy:
			cur.Addrs = joinAddrs(cur.Addrs, l.Addrs)
			s.Locations[p] = cur
		case !l.IsProxy && cur.IsProxy:
			nl := cloneLoc(l)
			nl.Addrs = joinAddrs(nl.Addrs, cur.Addrs)
			s.Locations[p] = nl
		case l.WhenSeen.After(cur.WhenSeen):
			s.Locations[p] = cloneLoc(l)
		case l.WhenSeen.Equal(cur.WhenSeen):
			cur.IsServer = cur.IsServer || l.IsServer
			cur.IsProxy = cur.IsProxy || l.IsProxy
			cur.Addrs = joinAddrs(cur.Addrs, l.Addrs)
			s.Locations[p] = cur
		}
	}
	if len(s.Locations) > MaxLocations {
		for _, l := range s.Ranked()[MaxLocations:] {
			delete(s.Locations, l.Peer)
		}
	}
}

func cloneLoc(l Location) Location {
	l.Addrs = slices.Clone(l.Addrs)
	return l
}

func joinAddrs(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxAddrs {
		out = out[:MaxAddrs]
	}
	return out
}

// Policy answers the access questions Filter asks. The syncgroup package
// implements it from membership and ACLs.
type Policy interface {
	// CanSee reports whether requester may learn of syncgroup g.
	CanSee(requester peer.ID, g syncnode.GroupID) bool
	// IsMember reports whether p is a member of syncgroup g.
	IsMember(p peer.ID, g syncnode.GroupID) bool
}

// Filter returns what requester may see of s: only the syncgroups it may
// see, and only locations that are servers or members of one of those
// groups.
func Filter(s Signpost, requester peer.ID, pol Policy) Signpost {
	var out Signpost
	for g := range s.SgIDs {
		if pol.CanSee(requester, g) {
			out.AddGroup(g)
		}
	}
	for p, l := range s.Locations {
		ok := l.IsServer
		for g := range out.SgIDs {
			if ok {
				break
			}
			ok = pol.IsMember(p, g)
		}
		if ok {
			if out.Locations == nil {
				out.Locations = map[peer.ID]Location{}
			}
			out.Locations[p] = cloneLoc(l)
		}
	}
	return out
}

// Equal reports whether two signposts hold the same groups and locations.
func Equal(a, b Signpost) bool {
	return maps.Equal(a.SgIDs, b.SgIDs) &&
		maps.EqualFunc(a.Locations, b.Locations, func(x, y Location) bool {
			return x.WhenSeen.Equal(y.WhenSeen) && x.IsServer == y.IsServer &&
				x.IsProxy == y.IsProxy && slices.Equal(x.Addrs, y.Addrs)
		})
}
