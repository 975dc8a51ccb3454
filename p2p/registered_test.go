package p2p_test

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/blobproto"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/shares"
	"github.com/syncnode/syncnode/internal/syncer"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/p2p"
)

// Every protocol handler that syncer, shares and blobproto register is in
// the protocol table, so it has stream limits; and every protocol of the
// table is registered by one of them.
func TestRegisteredProtocolsAreInTheTable(t *testing.T) {
	discard := slog.New(slog.DiscardHandler)
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	db, err := kv.Open(t.TempDir(), discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	sy, err := syncer.New(h, syncer.Config{}, discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sy.Close)
	sh, err := shares.New(h, ownership.NewLedger(db), sy, nil, shares.Config{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sh.Close)
	svc, err := blobproto.NewService(h, blobstore.NewMem(), blobproto.ServiceConfig{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)

	var table []string
	for _, p := range p2p.Protocols() {
		table = append(table, string(p.ID))
	}
	var registered []string
	for _, id := range h.Mux().Protocols() {
		if strings.HasPrefix(string(id), p2p.Prefix+"/") {
			registered = append(registered, string(id))
		}
	}
	for _, id := range registered {
		if !slices.Contains(table, id) {
			t.Errorf("%s is registered but not in the protocol table: it has no stream limits", id)
		}
	}
	for _, id := range table {
		if !slices.Contains(registered, id) {
			t.Errorf("%s is in the protocol table but no package registers it", id)
		}
	}
}
