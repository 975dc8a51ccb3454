// Package p2p is syncnode's transport: the libp2p host with its stream
// limits, the table of protocol IDs, framed msgpack streams, request
// exchange with liveness probes, relay helpers and the private DHT.
package p2p

import (
	"slices"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Prefix is the root of every syncnode protocol ID.
const Prefix = "/syncnode"

// Protocol IDs, one per stream protocol, each with its version. Every one
// is in the table that Protocols returns, with its stream limits.
const (
	// ProtoHaveBlob asks a peer whether it holds a blob; if not, it answers
	// with its (filtered) signpost.
	ProtoHaveBlob protocol.ID = Prefix + "/blob/have/1.0.0"
	// ProtoGetBlob streams a verified byte range of a blob.
	ProtoGetBlob protocol.ID = Prefix + "/blob/get/1.0.0"
	// ProtoSync runs a round of syncgroup anti-entropy.
	ProtoSync protocol.ID = Prefix + "/sync/1.0.0"
	// ProtoPush carries new rows one way, from a member that has just
	// written or received them to a few other members.
	ProtoPush protocol.ID = Prefix + "/sync/push/1.0.0"
	// ProtoShares carries ownership-share offers, accepts and resolutions.
	ProtoShares protocol.ID = Prefix + "/shares/1.0.0"
	// ProtoJoin admits a device into a syncgroup with an invitation.
	ProtoJoin protocol.ID = Prefix + "/join/1.0.0"
)

// Protocol is one syncnode stream protocol and the streams the host
// admits for it: at most PerPeer inbound streams from one peer and Total
// from all peers together. As many may go out, and twice as many in all.
type Protocol struct {
	ID protocol.ID
	// Package is the package that registers the protocol's handler.
	Package string
	// PerPeer and Total bound the concurrent inbound streams.
	PerPeer, Total int
}

// protocols is the table of every syncnode stream protocol. The busy ones
// take 128 streams from one peer (libp2p's own default of 75 would reset
// a busy fetcher's streams without telling it why) and 1024 in all; a
// join is one request from a device not yet a member, so few are admitted.
var protocols = []Protocol{
	{ID: ProtoHaveBlob, Package: "internal/blobproto", PerPeer: 128, Total: 1024},
	{ID: ProtoGetBlob, Package: "internal/blobproto", PerPeer: 128, Total: 1024},
	{ID: ProtoSync, Package: "internal/syncer", PerPeer: 128, Total: 1024},
	{ID: ProtoPush, Package: "internal/syncer", PerPeer: 128, Total: 1024},
	{ID: ProtoJoin, Package: "internal/syncer", PerPeer: 16, Total: 256},
	{ID: ProtoShares, Package: "internal/shares", PerPeer: 128, Total: 1024},
}

// Protocols returns the table of every syncnode stream protocol with its
// stream limits; the host's resource limits are built from it.
func Protocols() []Protocol { return slices.Clone(protocols) }

// DHTOptions returns the options of syncnode's private DHT: its own protocol
// prefix (so it never joins the public IPFS DHT), server mode (the default
// auto mode never serves on loopback or private networks), no bootstrap
// peers of its own, and provider records that live RecordTTL.
func DHTOptions() []dht.Option {
	return []dht.Option{
		dht.ProtocolPrefix(protocol.ID(Prefix)),
		dht.Mode(dht.ModeServer),
		dht.BootstrapPeers(),
		dht.ProviderManagerOpts(records.ProvideValidity(RecordTTL)),
	}
}
