package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/control"
	"github.com/syncnode/syncnode/internal/s3test"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
)

func cli(t *testing.T, data string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(t.Context(), append([]string{"-data", data}, args...), strings.NewReader(""), &out, io.Discard)
	return out.String(), err
}

func must(t *testing.T, data string, args ...string) string {
	t.Helper()
	out, err := cli(t, data, args...)
	if err != nil {
		t.Fatalf("syncnode %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// daemon initialises a data directory (with the init flags given) and
// runs its daemon until the test ends.
func daemon(t *testing.T, init ...string) string {
	t.Helper()
	dir, _ := stoppableDaemon(t, init...)
	return dir
}

func TestDaemonAndCLI(t *testing.T) {
	t.Parallel()
	a, b := daemon(t), daemon(t)
	file := filepath.Join(t.TempDir(), "in.txt")
	os.WriteFile(file, []byte("hello, syncnode"), 0o600)
	ref := strings.TrimSpace(must(t, a, "blob", "put", file))
	if _, err := syncnode.ParseBlobRef(ref); err != nil {
		t.Fatalf("put printed %q: %v", ref, err)
	}
	if out := must(t, a, "blob", "cat", ref, "-offset", "7", "-length", "4"); out != "sync" {
		t.Fatalf("cat range = %q", out)
	}
	var infos []api.BlobInfo
	if err := json.Unmarshal([]byte(must(t, a, "blob", "ls", "--json")), &infos); err != nil || len(infos) != 1 || infos[0].Ref != ref {
		t.Fatalf("ls --json: %v %+v", err, infos)
	}

	gid := strings.TrimSpace(must(t, a, "sg", "create", "photos", "-prefix", "photos/", "-private"))
	var st api.Status
	if err := json.Unmarshal([]byte(must(t, b, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	inv := strings.TrimSpace(must(t, a, "sg", "invite", gid, st.ID, "-type", "server"))
	if out := must(t, b, "sg", "join", inv); !strings.Contains(out, gid) {
		t.Fatalf("join printed %q", out)
	}
	if out := must(t, a, "sg", "members", gid); !strings.Contains(out, "server") || !strings.Contains(out, st.ID) {
		t.Fatalf("members:\n%s", out)
	}
	must(t, a, "row", "put", gid, "photos/hello", `{"title": "hello", "n": 3, "image": {"$blob": "`+ref+`"}}`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := cli(t, b, "row", "get", gid, "photos/hello")
		if err == nil {
			var v map[string]any
			if err := json.Unmarshal([]byte(out), &v); err != nil || v["title"] != "hello" || v["image"].(map[string]any)["$blob"] != ref {
				t.Fatalf("row at b: %q %v", out, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("row never reached b: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	dst := filepath.Join(t.TempDir(), "out.txt")
	must(t, b, "blob", "get", ref, "-o", dst)
	if got, _ := os.ReadFile(dst); string(got) != "hello, syncnode" {
		t.Fatalf("get wrote %q", got)
	}
	if out := must(t, b, "why", ref); !strings.Contains(out, "held      yes") {
		t.Fatalf("why:\n%s", out)
	}
	if out := must(t, b, "row", "ls", gid, "--json"); !strings.Contains(out, "photos/hello") {
		t.Fatalf("row ls: %s", out)
	}
	// A's blob is safe once the server has it; status and metrics say so.
	deadline = time.Now().Add(10 * time.Second)
	for {
		var st api.Status
		json.Unmarshal([]byte(must(t, a, "status", "--json")), &st)
		if len(st.Durability) == 1 && st.Durability[0].Referenced == 1 && st.Durability[0].AtRisk == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("durability at a: %+v", st.Durability)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cl, err := control.Dial(a)
	if err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	if err := cl.Metrics(t.Context(), &metrics); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`syncnode_group_blobs_at_risk{group="` + gid + `"} 0`, `syncnode_group_admins{group="` + gid + `"} 1`, "syncnode_blob_bytes_out_total 15", "syncnode_fetch_queue_length 0"} {
		if !strings.Contains(metrics.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics.String())
		}
	}
	must(t, a, "row", "del", gid, "photos/hello")
	if _, err := cli(t, a, "row", "get", gid, "photos/hello"); err == nil {
		t.Fatal("deleted row still readable")
	}

	// Clear errors, non-zero exit.
	for _, args := range [][]string{
		{"row", "put", gid, "photos/bad", "{not json"},
		{"row", "put", gid, "elsewhere/x", "1"},
		{"blob", "stat", "bafynotaref"},
		// -wait 0: no holder to wait for (the default waits a minute).
		{"blob", "get", "-wait", "0", "bafkr4ian2ztdvrkbzgsurh56ing5646i4xzafp4wuq7wav6jjyxfot7k7y"},
		{"sg", "join", "garbage"},
		{"frobnicate"},
	} {
		if out, err := cli(t, a, args...); err == nil {
			t.Errorf("syncnode %s succeeded: %q", strings.Join(args, " "), out)
		}
	}
	if _, err := cli(t, filepath.Join(t.TempDir(), "none"), "status"); !errors.Is(err, control.ErrNotInitialised) {
		t.Errorf("status without init: %v", err)
	}
}

func TestCommandsNeedTheDaemon(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	must(t, dir, "init")
	if _, err := cli(t, dir, "status"); !errors.Is(err, api.ErrNotRunning) {
		t.Fatalf("status without a daemon: %v", err)
	}
	if _, err := cli(t, dir, "init"); err == nil {
		t.Fatal("second init succeeded")
	}
}

func TestWrongTokenRefused(t *testing.T) {
	t.Parallel()
	dir := daemon(t)
	os.WriteFile(filepath.Join(dir, control.TokenFile), []byte("wrong\n"), 0o600)
	if _, err := cli(t, dir, "status"); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("status with a wrong token: %v", err)
	}
}

// TestCatOfDamagedBlobFails: a blob whose bytes rotted on disk is never
// printed as the blob: `blob cat` and `blob get` fail with a clear error,
// and `why` then says the copy is not held.
func TestCatOfDamagedBlobFails(t *testing.T) {
	t.Parallel()
	a := daemon(t)
	file := filepath.Join(t.TempDir(), "in.bin")
	data := bytes.Repeat([]byte("a photo of the beach "), 100_000)
	os.WriteFile(file, data, 0o600)
	ref := strings.TrimSpace(must(t, a, "blob", "put", file))
	r, _ := syncnode.ParseBlobRef(ref)
	p := filepath.Join(a, "blobs", "blobs", r.Hex()[:2], r.Hex())
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	os.WriteFile(p, b, 0o600)
	out, err := cli(t, a, "blob", "cat", ref)
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("cat of a damaged blob: err %v after %d bytes", err, len(out))
	}
	if len(out) > 0 && !bytes.Equal([]byte(out), data[:len(out)]) {
		t.Fatal("cat printed bytes that are not the blob's")
	}
	// An existing file named by -o is left as it was by a failed get
	// (-wait 0: no other holder to wait for; the default waits a minute).
	dst := filepath.Join(t.TempDir(), "out.bin")
	os.WriteFile(dst, []byte("yesterday's photo"), 0o600)
	if _, err := cli(t, a, "blob", "get", "-wait", "0", ref, "-o", dst); err == nil {
		t.Fatal("get of a damaged blob succeeded")
	}
	if b, _ := os.ReadFile(dst); string(b) != "yesterday's photo" {
		t.Fatalf("a failed get changed the -o file to %d bytes", len(b))
	}
	if ents, _ := os.ReadDir(filepath.Dir(dst)); len(ents) != 1 {
		t.Fatalf("a failed get left files behind: %v", ents)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(must(t, a, "why", ref), "held      no") {
		if time.Now().After(deadline) {
			t.Fatalf("why still claims the damaged copy:\n%s", must(t, a, "why", ref))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A fetch's progress bar counts the bytes this fetch moves: it ends at
// 100 % and its rates are rates a loopback can reach (a bar that counted
// bytes already there as received in no time showed TB/s).
func TestFetchProgressEndsAtFullWithTrueRate(t *testing.T) {
	t.Parallel()
	a, b := daemon(t), daemon(t)
	gid := strings.TrimSpace(must(t, a, "sg", "create", "films", "-prefix", "films/", "-private"))
	var st api.Status
	if err := json.Unmarshal([]byte(must(t, b, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	must(t, b, "sg", "join", strings.TrimSpace(must(t, a, "sg", "invite", gid, st.ID)))
	file := filepath.Join(t.TempDir(), "film")
	data := make([]byte, 24<<20)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	os.WriteFile(file, data, 0o600)
	ref := strings.TrimSpace(must(t, a, "blob", "put", file))
	must(t, a, "row", "put", gid, "films/one", `{"film": {"$blob": "`+ref+`"}}`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := cli(t, b, "row", "get", gid, "films/one"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("row never reached b")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var stderr bytes.Buffer
	dst := filepath.Join(t.TempDir(), "out")
	if err := run(t.Context(), []string{"-data", b, "blob", "get", ref, "-o", dst}, strings.NewReader(""), io.Discard, &stderr); err != nil {
		t.Fatal(err)
	}
	out := stderr.String()
	t.Logf("progress output: %q", out[max(0, len(out)-300):])
	if !strings.Contains(out, "100%") || !strings.Contains(out, fmt.Sprintf("fetched %d bytes", len(data))) {
		t.Fatalf("the bar did not end at 100 %% with the bytes fetched:\n%q", out)
	}
	if m := regexp.MustCompile(`[0-9.]+ (TB|PB|EB)/s`).FindString(out); m != "" {
		t.Fatalf("the bar showed a rate of %s", m)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Fatal("the fetched file differs")
	}
}

// init names the device: -name, else the host's name; the daemon writes
// it into its membership of every group (TestDeviceNamesTravelWithMembership).
func TestInitNamesTheDevice(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "named")
	if out := must(t, dir, "init", "-name", "my laptop"); !strings.Contains(out, "name   my laptop") {
		t.Fatalf("init printed %q", out)
	}
	cfg, _, err := control.LoadConfig(dir)
	if err != nil || cfg.Name != "my laptop" {
		t.Fatalf("config name %q, %v", cfg.Name, err)
	}
	host, _ := os.Hostname()
	dir2 := filepath.Join(t.TempDir(), "unnamed")
	must(t, dir2, "init")
	if cfg, _, _ := control.LoadConfig(dir2); cfg.Name != syncgroup.CleanName(host) {
		t.Fatalf("default name %q, want the host's %q", cfg.Name, host)
	}
}

// A daemon initialised with -store keeps its blobs in the bucket, says so
// in status, and reports the store failing while it is down; the
// credentials come from the environment and are never written down.
func TestDaemonOnObjectStore(t *testing.T) {
	srv := s3test.Start(t, "blobs")
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	if _, err := cli(t, filepath.Join(t.TempDir(), "bad"), "init", "-store", "s3:/blobs"); err == nil {
		t.Fatal("init took a malformed store URL")
	}
	if _, err := cli(t, filepath.Join(t.TempDir(), "bad"), "init", "-store", "s3://blobs/x"); err == nil || !strings.Contains(err.Error(), "s3_endpoint") {
		t.Fatalf("init without an endpoint: %v", err)
	}
	dir := daemon(t, "-store", "s3://blobs/site", "-s3-endpoint", srv.Addr, "-s3-insecure")
	if b, _ := os.ReadFile(filepath.Join(dir, control.ConfigFile)); bytes.Contains(b, []byte(s3test.SecretKey)) || bytes.Contains(b, []byte(s3test.AccessKey)) {
		t.Fatal("the config holds the credentials")
	}
	if out := must(t, dir, "status"); !strings.Contains(out, "s3://blobs/site ("+srv.Addr+")") || strings.Contains(out, "FAILING") {
		t.Fatalf("status does not name the bucket:\n%s", out)
	}
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, testkit.RandomBytes(64<<10, 5), 0o644)
	must(t, dir, "blob", "put", file)
	if keys := srv.Keys("blobs", "site/blobs/"); len(keys) != 1 {
		t.Fatalf("objects in the bucket after a put: %v", keys)
	}
	srv.Stop()
	os.WriteFile(file, testkit.RandomBytes(64<<10, 6), 0o644)
	if _, err := cli(t, dir, "blob", "put", file); err == nil || !strings.Contains(err.Error(), "object store unavailable") {
		t.Fatalf("put with the store down: %v", err)
	}
	if out := must(t, dir, "status"); !strings.Contains(out, "FAILING") {
		t.Fatalf("status does not report the store failing:\n%s", out)
	}
	if out := must(t, dir, "why", testkit.Ref(testkit.RandomBytes(64<<10, 6)).String()); !strings.Contains(out, "store     s3://blobs/site") || !strings.Contains(out, "FAILING") {
		t.Fatalf("why does not name the failing store:\n%s", out)
	}
	srv.Restart()
	if _, err := cli(t, dir, "blob", "put", file); err != nil {
		t.Fatal(err)
	}
	if out := must(t, dir, "status"); strings.Contains(out, "FAILING") {
		t.Fatalf("status still reports a failure:\n%s", out)
	}

	// Wrong credentials: the daemon does not start, and says why.
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	bad := filepath.Join(t.TempDir(), "wrong")
	must(t, bad, "init", "-store", "s3://blobs/other", "-s3-endpoint", srv.Addr, "-s3-insecure")
	err := control.Run(t.Context(), bad, slog.New(slog.DiscardHandler), nil)
	if err == nil || !strings.Contains(err.Error(), "object store unavailable") || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("daemon with wrong credentials: %v", err)
	}
	t.Logf("wrong credentials: %v", err)

	// Credentials given to init are kept apart, readable by the owner only.
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	if _, err := cli(t, filepath.Join(t.TempDir(), "half"), "init", "-store", "s3://blobs/k", "-s3-endpoint", srv.Addr, "-s3-access-key", s3test.AccessKey); err == nil {
		t.Fatal("init took an access key without its secret")
	}
	keyed := filepath.Join(t.TempDir(), "keyed")
	out := must(t, keyed, "init", "-store", "s3://blobs/keyed", "-s3-endpoint", srv.Addr, "-s3-insecure",
		"-s3-access-key", s3test.AccessKey, "-s3-secret-key", s3test.SecretKey)
	cfgBytes, _ := os.ReadFile(filepath.Join(keyed, control.ConfigFile))
	if strings.Contains(out, s3test.SecretKey) || bytes.Contains(cfgBytes, []byte(s3test.SecretKey)) {
		t.Fatal("init printed the secret or put it in the config")
	}
	if fi, err := os.Stat(filepath.Join(keyed, control.S3CredentialsFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", fi, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan error, 1)
	go func() { ran <- control.Run(ctx, keyed, slog.New(slog.DiscardHandler), func(*node.Node) { cancel() }) }()
	if err := <-ran; err != nil {
		t.Fatalf("daemon with the credentials init kept: %v", err)
	}
}
