package faults

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/control"
	"github.com/syncnode/syncnode/p2p"
)

// TestControlAPIRefusesForeignHost: a web page that rebinds its own DNS
// name to 127.0.0.1 reaches the daemon's port, but with its own name in
// the Host header. Every such request — with the token or without, for
// the API or the status page — is refused; requests naming the loopback
// address are served.
func TestControlAPIRefusesForeignHost(t *testing.T) {
	t.Parallel()
	p := newProc(t, "daemon", time.Hour)
	b, err := os.ReadFile(filepath.Join(p.dir, control.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var cfg control.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(p.dir, control.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(cfg.API, ":")
	get := func(host, path string, withToken bool) int {
		req, err := http.NewRequest("GET", "http://"+cfg.API+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		if withToken {
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port, "localhost.:" + port} {
		for _, path := range []string{"/status", "/ui", "/blobs", "/metrics"} {
			if code := get(host, path, true); code != http.StatusForbidden {
				t.Errorf("Host %q, GET %s with the token: %d, want 403", host, path, code)
			}
		}
	}
	for _, host := range []string{cfg.API, "localhost:" + port} {
		if code := get(host, "/status", true); code != http.StatusOK {
			t.Errorf("Host %q: %d, want 200", host, code)
		}
	}
}

// The sync and join protocols' messages as a stranger writes them.
type syncHello struct {
	Group string `msgpack:"g"`
}

type syncBatch struct {
	Err string `msgpack:"e,omitempty"`
}

type joinInvitation struct {
	Group  string `msgpack:"g"`
	Joiner string `msgpack:"j"`
	Admin  string `msgpack:"a"`
	Sig    []byte `msgpack:"s"`
}

type joinReq struct {
	Invitation joinInvitation `msgpack:"i"`
}

type joinResp struct {
	Err string `msgpack:"e,omitempty"`
}

// TestRefusalsRevealNothing: a stranger asking about a blob the daemon
// holds in a private group, and one it never heard of, gets the same
// answers; syncing or joining a group that exists, and one that does not,
// gets the same refusal. No refusal is an oracle.
func TestRefusalsRevealNothing(t *testing.T) {
	t.Parallel()
	p := newProc(t, "daemon", time.Hour)
	g, err := p.cl.CreateGroup(p.ctx(), api.CreateRequest{Name: "secret", Prefixes: []string{"s/"}, Private: true, DevType: "normal"})
	p.must("create group", err)
	ref, err := p.putBlobRow(g.ID, "s/photo", []byte("a private photo"))
	if err != nil {
		t.Fatal(err)
	}
	h := stranger(t, p)
	id, _ := peer.Decode(p.id)
	ask := func(proto protocol.ID, req, resp any) {
		t.Helper()
		st, err := h.NewStream(t.Context(), id, proto)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := p2p.WriteMsg(st, req, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		st.CloseWrite()
		if err := p2p.ReadMsg(bufio.NewReader(st), st, resp, p2p.MaxFrame, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	unknown := syncnode.RefFromHash([32]byte{0x5e, 0xc7})
	var known, never haveResponse
	ask(p2p.ProtoHaveBlob, haveRequest{Ref: ref.Bytes()}, &known)
	ask(p2p.ProtoHaveBlob, haveRequest{Ref: unknown.Bytes()}, &never)
	if known != never || known.Have {
		t.Errorf("have: held private blob %+v, unknown blob %+v", known, never)
	}
	var kg, ng getResponse
	ask(p2p.ProtoGetBlob, getRequest{Ref: ref.Bytes(), Len: 1}, &kg)
	ask(p2p.ProtoGetBlob, getRequest{Ref: unknown.Bytes(), Len: 1}, &ng)
	if kg != ng || kg.Code == 0 {
		t.Errorf("get: held private blob %+v, unknown blob %+v", kg, ng)
	}
	other := strings.Replace(g.ID, "secret", "nothere", 1)
	var ks, ns syncBatch
	ask(p2p.ProtoSync, syncHello{Group: g.ID}, &ks)
	ask(p2p.ProtoSync, syncHello{Group: other}, &ns)
	if ks != ns || ks.Err == "" {
		t.Errorf("sync: existing group %+v, unknown group %+v", ks, ns)
	}
	var kj, nj joinResp
	inv := func(group string) joinReq {
		return joinReq{joinInvitation{Group: group, Joiner: h.ID().String(), Admin: p.id, Sig: []byte("forged")}}
	}
	ask(p2p.ProtoJoin, inv(g.ID), &kj)
	ask(p2p.ProtoJoin, inv(other), &nj)
	if kj != nj || kj.Err == "" {
		t.Errorf("join: existing group %+v, unknown group %+v", kj, nj)
	}
}
