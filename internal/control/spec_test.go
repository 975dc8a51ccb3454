package control

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
)

// TestMalformedSpecChangesAreBadRequests: a change no one may make (copies
// out of range, a reserved prefix, an unknown operation, a malformed
// peer) is the caller's mistake, 400 with the reason, never a 500.
func TestMalformedSpecChangesAreBadRequests(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "daemon")
	srv := runDaemonWith(t, dir, InitOptions{NoLAN: true})
	cfg, token, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := srv.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	g := string(spec.ID)
	for _, c := range []api.SpecChange{
		{Group: g, Op: "copies", Copies: 0},
		{Group: g, Op: "copies", Copies: 9},
		{Group: g, Op: "prefix-add", Prefix: "\x00m/"},
		{Group: g, Op: "admin-add", Peer: "not-a-peer"},
		{Group: g, Op: "rename"},
	} {
		body, _ := json.Marshal(c)
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+cfg.API+"/groups/spec", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || e.Error == "" {
			t.Errorf("%+v: %s %q, want 400 with the reason", c, resp.Status, e.Error)
		}
	}
}
