package p2p

import "testing"

// A burst of streams that the per-protocol limits admit is not refused
// before that, while its protocols are negotiated: the host's transient
// (not yet negotiated) inbound streams allow at least what one syncnode
// protocol allows inbound. libp2p's default of 128 reset 267 of 1000
// concurrent fetches on a busy CI machine.
func TestTransientStreamsAdmitAProtocolsBurst(t *testing.T) {
	cfg := DefaultHostConfig()
	lim := limits(cfg)
	transient := lim.ToPartialLimitConfig().Transient
	proto := 8 * cfg.StreamsPerPeer
	if got := int(transient.StreamsInbound); got < proto {
		t.Fatalf("transient inbound streams %d, under one protocol's %d", got, proto)
	}
	if int(transient.Streams) < int(transient.StreamsInbound) {
		t.Fatalf("transient streams %d under its inbound %d", transient.Streams, transient.StreamsInbound)
	}
}
