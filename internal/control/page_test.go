package control

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/s3test"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
)

// browser starts a headless chromium at path for one test, in UTC and at
// a fixed window size, and returns its context (90 s at most).
func browser(t *testing.T, path string) context.Context {
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("font-render-hinting", "none"),
		chromedp.WindowSize(1000, 800),
		chromedp.Env("TZ=UTC"),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelA := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancelA)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancelT)
	return ctx
}

// chromium finds the browser for page tests. Where SYNCNODE_BROWSER_TESTS
// is set (CI installs Debian's chromium and sets it), a missing browser
// fails the test; elsewhere the test is skipped, and so it is under -short
// unless SYNCNODE_BROWSER_TESTS is set.
func chromium(t *testing.T) string {
	testkit.SkipShortUnless(t, "SYNCNODE_BROWSER_TESTS", "headless Chromium")
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
	return runDaemonWith(t, dir, InitOptions{})
}

// runDaemonWith is runDaemon with further init options.
func runDaemonWith(t *testing.T, dir string, opts InitOptions) *node.Node {
	t.Helper()
	opts.Listen, opts.Name = []string{nodetest.FreeAddr(t)}, "page-test"
	if _, err := Init(dir, opts); err != nil {
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

// pageUntil returns a wait, up to 30 s, for a JavaScript condition on
// the page of ctx; the test fails with the page's text if it never holds.
// openPage opens the status page of the daemon in dir in a headless
// browser at chrome.
func openPage(t *testing.T, chrome, dir string) context.Context {
	t.Helper()
	url, err := PageURL(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := browser(t, chrome)
	if _, err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	return ctx
}

func pageUntil(t *testing.T, ctx context.Context) func(what, js string) {
	return func(what, js string) {
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
}

// TestStatusPageInChromium opens a server daemon's status page in headless
// Chromium and watches it, without reloading, show the syncgroup and its
// members, a referenced blob no one can serve yet (at risk, queued, with
// its failed attempts and error from the journal), and then the blob
// arriving once its writer holds it: held, off the queue, at risk 0.
func TestStatusPageInChromium(t *testing.T) {
	chrome := chromium(t)
	dir := filepath.Join(t.TempDir(), "server")
	srv := runDaemon(t, dir)
	dev := nodetest.Start(t)
	spec, err := srv.CreateGroup("photos", []string{"photos/"}, true, syncnode.Server)
	if err != nil {
		t.Fatal(err)
	}
	g := spec.ID
	nodetest.Join(t, srv, dev, g, syncnode.Normal)
	ctx := openPage(t, chrome, dir)
	until := pageUntil(t, ctx)
	text := func(sel string) string {
		return fmt.Sprintf(`((document.querySelector(%q)||{}).textContent||"")`, sel)
	}
	until("the syncgroup with both members", fmt.Sprintf(
		`!!document.querySelector('[data-group=%q] [data-peer=%q]') && !!document.querySelector('[data-group=%q] [data-peer=%q]')`,
		g, srv.ID().String(), g, dev.ID().String()))
	until("the daemon's name beside its peer ID", fmt.Sprintf(`%s === "page-test"`, text(fmt.Sprintf("[data-group=%q] [data-peer=%q] .name", g, srv.ID().String()))))
	until("the other member online", fmt.Sprintf(`%s === "online"`, text(fmt.Sprintf("[data-group=%q] [data-peer=%q] .seen", g, dev.ID().String()))))
	until("the daemon marked as the group's admin", fmt.Sprintf(`document.querySelector('[data-group=%q] [data-peer=%q]').textContent.includes("server, admin")`, g, srv.ID().String()))
	until("collection counted on the node's line", text("#node")+`.includes("0 collected")`)
	until("the graphs", `document.querySelectorAll("#rate-graph polyline").length === 2 && document.querySelectorAll("#queue-graph polyline").length === 1`)
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
	until("the row among the recent changes", `!!document.querySelector('#recent tr[data-kind="row.put"][data-key="photos/1"]')`)
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
	until("the fetch among the recent changes", fmt.Sprintf(`!!document.querySelector('#recent tr[data-kind="blob.fetched"][data-key=%q]')`, ref))
	until("the blob held", fmt.Sprintf(`!!document.querySelector('#blobs tr[data-ref=%q]')`, ref))
	until("the blob off the queue and no longer at risk", fmt.Sprintf(`!document.querySelector(%q) && `, queued)+text(atRisk)+` === "0"`)
	if same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded === true`)); err != nil || !same {
		t.Fatalf("the page reloaded instead of refreshing in place (%v)", err)
	}
	shares, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector('#blobs tr[data-ref=%q]').cells[2].textContent`, ref)))
	t.Logf("page showed the blob queued and at risk, then held (shares %q) and safe, without reloading", shares)

	// The user pins it here: the page says so, and again once unpinned.
	pinned := fmt.Sprintf(`document.querySelector('#blobs tr[data-ref=%q]').cells[3].textContent`, ref)
	if err := srv.PinBlob(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	until("the blob pinned", pinned+` === "pinned"`)
	if err := srv.UnpinBlob(ref); err != nil {
		t.Fatal(err)
	}
	until("the blob unpinned", pinned+` === ""`)
}

// The status page names the blob store, and raises an alert while an
// object store fails, gone once it answers again.
func TestPageShowsStoreFailing(t *testing.T) {
	chrome := chromium(t)
	s3 := s3test.Start(t, "blobs")
	dir := filepath.Join(t.TempDir(), "server")
	n := runDaemonWith(t, dir, InitOptions{Store: "s3://blobs/page", S3Endpoint: s3.Addr, S3Insecure: true,
		S3AccessKey: s3test.AccessKey, S3SecretKey: s3test.SecretKey})
	ctx := openPage(t, chrome, dir)
	until := pageUntil(t, ctx)
	until("the bucket in the node line", fmt.Sprintf(`document.querySelector("#node").textContent.includes(%q)`, "store s3://blobs/page ("+s3.Addr+")"))
	until("no store alert", `document.querySelector("#store-error").hidden`)
	s3.Stop()
	if _, err := n.PutBlob(t.Context(), bytes.NewReader([]byte("a blob while the store is down"))); err == nil {
		t.Fatal("a put succeeded with the object store down")
	}
	until("the store alert", `!document.querySelector("#store-error").hidden && document.querySelector("#store-error").textContent.includes("object store unavailable")`)
	s3.Restart()
	if _, err := n.PutBlob(t.Context(), bytes.NewReader([]byte("a blob once the store is back"))); err != nil {
		t.Fatal(err)
	}
	until("the alert gone", `document.querySelector("#store-error").hidden`)
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

var updatePage = flag.Bool("update-page", false, "write the status page's reference screenshot, testdata/page.png, from this run")

// The status page looks as it should: a fixed state (two groups, members
// online and away, a queue, an hour of transfers) rendered in chromium at
// a fixed size, in UTC, compared pixel by pixel with the reference
// screenshot. Up to 0.1 % of the pixels may differ (anti-aliasing); a
// larger difference fails and leaves the screenshot beside the reference.
func TestPageLooksAsItShould(t *testing.T) {
	chrome := chromium(t)
	dir := t.TempDir()
	runDaemon(t, dir)
	state, err := json.Marshal(pageFixture())
	if err != nil {
		t.Fatal(err)
	}
	ctx := openPage(t, chrome, dir)
	// Fonts load before the fixed state is drawn and photographed.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.fonts.ready.then(() => true)`, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](fmt.Sprintf("show(%s); null", state))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Sleep(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join("testdata", "page.png")
	if *updatePage {
		if err := os.WriteFile(ref, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", ref)
		return
	}
	want, err := os.ReadFile(ref)
	if err != nil {
		t.Fatalf("%v (write it with -update-page)", err)
	}
	differ, total, err := pixelsDiffer(shot, want)
	if err == nil && differ*1000 > total {
		err = fmt.Errorf("%d of %d pixels differ", differ, total)
	}
	if err != nil {
		actual := filepath.Join(t.TempDir(), "page.actual.png")
		os.WriteFile(actual, shot, 0o644)
		t.Fatalf("the page does not look like %s: %v; this run's screenshot is %s", ref, err, actual)
	}
	t.Logf("%d of %d pixels differ from the reference", differ, total)
}

// pixelsDiffer counts the pixels of two PNGs whose colours differ by more
// than 24 in a channel.
func pixelsDiffer(a, b []byte) (differ, total int, err error) {
	ia, err := png.Decode(bytes.NewReader(a))
	if err != nil {
		return 0, 0, err
	}
	ib, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return 0, 0, err
	}
	if ia.Bounds() != ib.Bounds() {
		return 0, 0, fmt.Errorf("size %v, reference %v", ia.Bounds().Size(), ib.Bounds().Size())
	}
	r := ia.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			r1, g1, b1, _ := ia.At(x, y).RGBA()
			r2, g2, b2, _ := ib.At(x, y).RGBA()
			if far(r1, r2) || far(g1, g2) || far(b1, b2) {
				differ++
			}
		}
	}
	return differ, r.Dx() * r.Dy(), nil
}

func far(a, b uint32) bool { return max(a, b)-min(a, b) > 24<<8 }

// pageFixture is the fixed state TestPageLooksAsItShould draws.
func pageFixture() api.PageState {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	const self, laptop, server = "12D3KooWSelfSelfSelfSelfSelfSelfSelfSelfSelf1111", "12D3KooWLaptopLaptopLaptopLaptopLaptopLap2222", "12D3KooWServerServerServerServerServerSer3333"
	ref := func(i int) string { return fmt.Sprintf("bafkr4i%052d", i) }
	st := api.PageState{Time: t0,
		Status: api.Status{ID: self, Groups: 2, Peers: 1, Blobs: 3, BlobBytes: 7 << 20, FetchQueue: 2, Unreferenced: 5, Collected: 17,
			Durability: []api.Durability{{Group: self + "/photos", Copies: 2, Referenced: 12, AtRisk: 2, AtRiskRefs: []string{ref(1), ref(2)}},
				{Group: self + "/notes", Referenced: 4}}},
		Groups: []api.PageGroup{
			{Group: api.Group{ID: self + "/photos", Name: "photos", Prefixes: []string{"photos/", "videos/"}, Private: true, Admins: []string{self, laptop}}, Members: []api.Member{
				{Peer: self, Name: "phone", DevType: "normal", Online: true},
				{Peer: laptop, Name: "laptop", DevType: "normal", LastSeen: t0.Add(-47 * time.Minute)},
				{Peer: server, Name: "rack server", DevType: "server", Online: true}}},
			{Group: api.Group{ID: self + "/notes", Name: "notes", Prefixes: []string{"notes/"}, Admins: []string{self}}, Members: []api.Member{
				{Peer: self, Name: "phone", DevType: "normal", Online: true}}}},
		Queue: []api.QueueEntry{{Ref: ref(1), State: "fetching"},
			{Ref: ref(2), State: "queued", Attempts: 3, LastErr: "no holder could serve the blob"}},
		Blobs: []api.BlobInfo{{Ref: ref(3), Size: 5 << 20, Shares: map[syncnode.GroupID]int{syncnode.GroupID(self + "/photos"): 2}},
			{Ref: ref(4), Size: 2 << 20, Pinned: true}, {Ref: ref(5), Size: 4096}},
	}
	next, last := t0.Add(90*time.Second), t0.Add(-30*time.Second)
	st.Queue[1].NextAttempt, st.Queue[1].LastAttempt = &next, &last
	for i := range historyLen {
		x := float64(i)
		st.History = append(st.History, api.Sample{Time: t0.Add(time.Duration(i-historyLen) * historyStep),
			InRate: 2e6 * (1 + math.Sin(x/20)), OutRate: 5e5 * (1 + math.Cos(x/35)), Queue: (i / 30) % 7})
	}
	return st
}
