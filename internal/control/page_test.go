package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
)

// chromium finds the browser for page tests. Where SYNCNODE_BROWSER_TESTS
// is set (CI installs Debian's chromium and sets it), a missing browser
// fails the test; elsewhere the test is skipped.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("SYNCNODE_BROWSER_TESTS") != "" {
		t.Fatal("no chromium on PATH, and SYNCNODE_BROWSER_TESTS is set")
	}
	t.Skip("no chromium on PATH")
	return ""
}

// runDaemon initialises dir and runs a daemon in it until the test ends,
// returning its node.
func runDaemon(t *testing.T, dir string) *node.Node {
	t.Helper()
	if _, err := Init(dir, InitOptions{Listen: []string{nodetest.FreeAddr(t)}, Name: "page-test"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ConfigFile)
	b, _ := os.ReadFile(path)
	var cfg Config
	json.Unmarshal(b, &cfg)
	cfg.SyncInterval = "250ms"
	b, _ = json.Marshal(cfg)
	os.WriteFile(path, b, 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *node.Node, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, dir, slog.New(slog.DiscardHandler), func(n *node.Node) { ready <- n }) }()
	var n *node.Node
	select {
	case n = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return n
}

// TestStatusPageInChromium opens a server daemon's status page in headless
// Chromium and watches it, without reloading, show the syncgroup and its
// members, a referenced blob no one can serve yet (at risk, queued, with
// its failed attempts and error from the journal), and then the blob
// arriving once its writer holds it: held, off the queue, at risk 0.
func TestStatusPageInChromium(t *testing.T) {
	browser := chromium(t)
	dir := filepath.Join(t.TempDir(), "server")
	srv := runDaemon(t, dir)
	dev := nodetest.Start(t)
	spec, err := srv.CreateGroup("photos", []string{"photos/"}, true, syncnode.Server)
	if err != nil {
		t.Fatal(err)
	}
	g := spec.ID
	nodetest.Join(t, srv, dev, g, syncnode.Normal)
	url, err := PageURL(dir)
	if err != nil {
		t.Fatal(err)
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(browser),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelA := chromedp.NewExecAllocator(t.Context(), opts...)
	defer cancelA()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	// until waits for a JavaScript condition on the page.
	until := func(what, js string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
				t.Fatalf("the page never showed %s; it shows:\n%s", what, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	text := func(sel string) string {
		return fmt.Sprintf(`((document.querySelector(%q)||{}).textContent||"")`, sel)
	}
	until("the syncgroup with both members", fmt.Sprintf(
		`!!document.querySelector('[data-group=%q] [data-peer=%q]') && !!document.querySelector('[data-group=%q] [data-peer=%q]')`,
		g, srv.ID().String(), g, dev.ID().String()))
	until("the daemon's name beside its peer ID", fmt.Sprintf(`%s === "page-test"`, text(fmt.Sprintf("[data-group=%q] [data-peer=%q] .name", g, srv.ID().String()))))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded = true`)); err != nil {
		t.Fatal(err)
	}

	// A row names a blob its writer does not hold yet: at risk, queued.
	data := bytes.Repeat([]byte("syncnode status page "), 50_000)
	ref := testkit.Ref(data)
	v, _ := msgpack.Marshal(map[string]any{"photo": ref})
	if _, err := dev.PutRow(g, "photos/1", v); err != nil {
		t.Fatal(err)
	}
	atRisk := fmt.Sprintf(`.at-risk[data-group=%q]`, g)
	queued := fmt.Sprintf(`#queue tr[data-ref=%q]`, ref)
	until("the blob at risk", text(atRisk)+` === "1"`)
	until("the blob queued with a failed attempt and its error", fmt.Sprintf(
		`(() => { const tr = document.querySelector(%q); return !!tr && tr.cells[2].textContent !== "0" && tr.cells[5].textContent.includes("no holder"); })()`, queued))

	// The writer gets the blob and writes the row again: the server
	// fetches it and the same page shows it arrive.
	if _, err := dev.PutBlob(t.Context(), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.PutRow(g, "photos/1", v); err != nil {
		t.Fatal(err)
	}
	until("the blob held", fmt.Sprintf(`!!document.querySelector('#blobs tr[data-ref=%q]')`, ref))
	until("the blob off the queue and no longer at risk", fmt.Sprintf(`!document.querySelector(%q) && `, queued)+text(atRisk)+` === "0"`)
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded === true`)); err != nil || !same {
		t.Fatalf("the page reloaded instead of refreshing in place (%v)", err)
	}
	shares, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector('#blobs tr[data-ref=%q]').cells[2].textContent`, ref)))
	t.Logf("page showed the blob queued and at risk, then held (shares %q) and safe, without reloading", shares)
}

func TestPageFilesCarryNoDataAndStateNeedsTheToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n")
	runDaemon(t, dir)
	cfg, _, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/ui", "/ui/page.js", "/ui/page.css"} {
		resp, err := http.Get("http://" + cfg.API + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("%s: %s, CSP %q", path, resp.Status, resp.Header.Get("Content-Security-Policy"))
		}
	}
	resp, err := http.Get("http://" + cfg.API + "/ui/state")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/ui/state without the token: %s", resp.Status)
	}
	cl, err := Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.PageState(t.Context())
	if err != nil || st.Status.ID == "" {
		t.Fatalf("/ui/state with the token: %+v %v", st, err)
	}
}
