package signpost

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
)

// Limits a decoded signpost must respect; a peer that exceeds them sent
// garbage.
const (
	// MaxAddrs is how many addresses one location keeps.
	MaxAddrs = 8
	// MaxAddrLen is the longest address accepted.
	MaxAddrLen = 512
	// MaxGroups is the most syncgroups one signpost may name.
	MaxGroups = 1024
	// MaxGroupIDLen is the longest syncgroup ID accepted.
	MaxGroupIDLen = 512
)

// ErrInvalid reports a decoded signpost that breaks a limit.
var ErrInvalid = errors.New("signpost: invalid")

// Wire is the form of a signpost sent to peers: locations and groups, no
// fetch attempts.
type Wire struct {
	Locs   []WireLoc `msgpack:"l"`
	Groups []string  `msgpack:"g"`
}

// WireLoc is one location on the wire.
type WireLoc struct {
	Peer     []byte   `msgpack:"p"`
	WhenSeen int64    `msgpack:"w"` // Unix nanoseconds
	Server   bool     `msgpack:"s,omitempty"`
	Proxy    bool     `msgpack:"x,omitempty"`
	Addrs    []string `msgpack:"a,omitempty"`
}

// disk is the stored form: the wire form plus, in signposts an older
// version wrote, its fetch attempt count.
type disk struct {
	Wire          `msgpack:",inline"`
	FetchAttempts uint32 `msgpack:"f,omitempty"`
}

// ToWire returns the wire form of s, groups sorted and locations ranked.
func (s Signpost) ToWire() Wire {
	var w Wire
	for _, l := range s.Ranked() {
		w.Locs = append(w.Locs, WireLoc{
			Peer: []byte(l.Peer), WhenSeen: l.WhenSeen.UnixNano(),
			Server: l.IsServer, Proxy: l.IsProxy, Addrs: l.Addrs,
		})
	}
	for _, g := range s.Groups() {
		w.Groups = append(w.Groups, string(g))
	}
	return w
}

// Signpost validates w and converts it.
func (w Wire) Signpost() (Signpost, error) {
	var s Signpost
	if len(w.Locs) > MaxLocations {
		return Signpost{}, fmt.Errorf("%w: %d locations, at most %d", ErrInvalid, len(w.Locs), MaxLocations)
	}
	if len(w.Groups) > MaxGroups {
		return Signpost{}, fmt.Errorf("%w: %d groups, at most %d", ErrInvalid, len(w.Groups), MaxGroups)
	}
	for _, g := range w.Groups {
		if g == "" || len(g) > MaxGroupIDLen {
			return Signpost{}, fmt.Errorf("%w: group ID of %d bytes", ErrInvalid, len(g))
		}
		s.AddGroup(syncnode.GroupID(g))
	}
	for _, l := range w.Locs {
		id, err := peer.IDFromBytes(l.Peer)
		if err != nil {
			return Signpost{}, fmt.Errorf("%w: location peer: %v", ErrInvalid, err)
		}
		if len(l.Addrs) > MaxAddrs {
			return Signpost{}, fmt.Errorf("%w: %d addresses for %s, at most %d", ErrInvalid, len(l.Addrs), id, MaxAddrs)
		}
		for _, a := range l.Addrs {
			if len(a) > MaxAddrLen {
				return Signpost{}, fmt.Errorf("%w: address of %d bytes", ErrInvalid, len(a))
			}
		}
		if _, dup := s.Locations[id]; dup {
			return Signpost{}, fmt.Errorf("%w: peer %s listed twice", ErrInvalid, id)
		}
		if s.Locations == nil {
			s.Locations = map[peer.ID]Location{}
		}
		s.Locations[id] = Location{
			WhenSeen: time.Unix(0, l.WhenSeen).UTC(), IsServer: l.Server, IsProxy: l.Proxy,
			Addrs: l.Addrs,
		}
	}
	return s, nil
}

// MarshalWire encodes the wire form of s.
func (s Signpost) MarshalWire() ([]byte, error) { return msgpack.Marshal(s.ToWire()) }

// UnmarshalWire decodes a wire form. Errors wrap syncnode.ErrCorruptRecord
// or ErrInvalid.
func UnmarshalWire(b []byte) (Signpost, error) {
	var w Wire
	if err := msgpackx.Unmarshal(b, &w); err != nil {
		return Signpost{}, fmt.Errorf("%w: signpost: %v", syncnode.ErrCorruptRecord, err)
	}
	return w.Signpost()
}

func (s Signpost) toDisk() disk { return disk{Wire: s.ToWire(), FetchAttempts: s.legacyAttempts} }

func (d disk) signpost() (Signpost, error) {
	s, err := d.Wire.Signpost()
	if err != nil {
		return Signpost{}, fmt.Errorf("%w: %v", syncnode.ErrCorruptRecord, err)
	}
	s.legacyAttempts = d.FetchAttempts
	return s, nil
}
