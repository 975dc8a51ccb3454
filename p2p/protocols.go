// Package p2p is syncnode's transport: the libp2p host with its stream
// limits, the table of protocol IDs, framed msgpack streams, request
// exchange with liveness probes, relay helpers and the private DHT.
package p2p

import (
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Prefix is the root of every syncnode protocol ID.
const Prefix = "/syncnode"

// Protocol IDs, one per stream protocol, each with its version.
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
)

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
