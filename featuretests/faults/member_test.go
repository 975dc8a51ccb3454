package faults

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/control"
)

// TestControlAPIRefusesForeignHost: a web page that rebinds its own DNS
// name to 127.0.0.1 reaches the daemon's port, but with its own name in
// the Host header. Every such request — with the token or without, for
// the API or the status page — is refused; requests naming the loopback
// address are served.
func TestControlAPIRefusesForeignHost(t *testing.T) {
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
