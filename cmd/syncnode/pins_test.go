package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/control"
)

// putFile stores content as a blob on dir's daemon and returns its ref.
func putFile(t *testing.T, dir, content string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, []byte(content), 0o600)
	return strings.TrimSpace(must(t, dir, "blob", "put", file))
}

// removeStatus is the HTTP status of DELETE /blobs/REF on dir's daemon.
func removeStatus(t *testing.T, dir, ref string) int {
	t.Helper()
	cfg, token, err := control.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), "DELETE", "http://"+cfg.API+"/blobs/"+ref, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestPinAndRemoveFromTheCLI: `blob pin` keeps a blob (ls, stat and why
// say so), `blob rm` of a pinned blob fails with the unpin hint (409 in
// the API), `-force` removes it, and `blob rm` of a blob with shares
// names the group and what would move them.
func TestPinAndRemoveFromTheCLI(t *testing.T) {
	t.Parallel()
	a := daemon(t, "-no-lan")
	ref := putFile(t, a, "a photo to keep")
	if out := must(t, a, "blob", "pin", ref); strings.TrimSpace(out) != "pinned "+ref {
		t.Fatalf("pin printed %q", out)
	}
	if out := must(t, a, "blob", "pin", ref); !strings.Contains(out, "pinned already") {
		t.Fatalf("second pin printed %q", out)
	}
	ls := must(t, a, "blob", "ls")
	if !strings.Contains(strings.Split(ls, "\n")[0], "PINNED") || !strings.Contains(ls, ref) || !strings.Contains(ls, "yes") {
		t.Fatalf("ls:\n%s", ls)
	}
	var info api.BlobInfo
	if err := json.Unmarshal([]byte(must(t, a, "blob", "stat", ref, "--json")), &info); err != nil || !info.Pinned {
		t.Fatalf("stat --json: %+v %v", info, err)
	}
	if out := must(t, a, "why", ref); !strings.Contains(out, "pinned    yes") {
		t.Fatalf("why:\n%s", out)
	}
	if st := statusOf(t, a); st.Pinned != 1 {
		t.Fatalf("status counts %d pinned", st.Pinned)
	}
	if out := must(t, a, "status"); !strings.Contains(out, "1 pinned here") || !strings.Contains(out, "COPIES WANTED") {
		t.Fatalf("status:\n%s", out)
	}
	cl, err := control.Dial(a)
	if err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	if err := cl.Metrics(t.Context(), &metrics); err != nil || !strings.Contains(metrics.String(), "syncnode_blobs_pinned 1") {
		t.Fatalf("metrics: %v\n%s", err, metrics.String())
	}
	_, err = cli(t, a, "blob", "rm", ref)
	if err == nil || !strings.Contains(err.Error(), "syncnode blob unpin "+ref) {
		t.Fatalf("rm of a pinned blob: %v", err)
	}
	if code := removeStatus(t, a, ref); code != http.StatusConflict {
		t.Fatalf("DELETE of a pinned blob: %d, want 409", code)
	}
	if out := must(t, a, "blob", "unpin", ref); strings.TrimSpace(out) != "unpinned "+ref {
		t.Fatalf("unpin printed %q", out)
	}
	if out := must(t, a, "blob", "unpin", ref); !strings.Contains(out, "not pinned") {
		t.Fatalf("second unpin printed %q", out)
	}
	must(t, a, "blob", "pin", ref)
	must(t, a, "blob", "rm", "-force", ref)
	if out := must(t, a, "blob", "ls", "--json"); strings.Contains(out, ref) {
		t.Fatalf("ls after rm -force:\n%s", out)
	}

	// Shares: the refusal names the group and says what would move them.
	gid := strings.TrimSpace(must(t, a, "sg", "create", "photos", "-prefix", "photos/", "-private"))
	shared := putFile(t, a, "a photo in a group")
	must(t, a, "row", "put", gid, "photos/one", `{"image": {"$blob": "`+shared+`"}}`)
	_, err = cli(t, a, "blob", "rm", shared)
	t.Logf("blob rm: %v", err)
	if err == nil || !strings.Contains(err.Error(), "2 shares in group photos") || !strings.Contains(err.Error(), "run a server") {
		t.Fatalf("rm of a blob with shares: %v", err)
	}
	if _, err := cli(t, a, "blob", "rm", "-force", shared); err == nil {
		t.Fatal("rm -force removed a blob with shares")
	}
	if code := removeStatus(t, a, shared); code != http.StatusConflict {
		t.Fatalf("DELETE of a blob with shares: %d, want 409", code)
	}
}
