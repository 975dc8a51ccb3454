package p2p

import (
	"log/slog"
	"testing"

	"github.com/libp2p/go-libp2p/core/host"
)

var discard = slog.New(slog.DiscardHandler)

func newHost(t testing.TB, identity string) host.Host {
	t.Helper()
	cfg := DefaultHostConfig()
	cfg.IdentityFile = identity
	h, err := NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}
