package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/control"
)

// TestManyFilesInOneCommand: `blob put -r` stores a folder in one request
// and, with -group, writes one row per file (name, blob, size and
// modification time) as one batch; `blob get -d` writes several blobs
// into a directory; `row put -f` writes JSON lines as one batch. A file
// that cannot be read is named, what was stored before it listed, and no
// row written; a bad line of a batch writes nothing.
func TestManyFilesInOneCommand(t *testing.T) {
	t.Parallel()
	a := daemon(t, "-no-lan")
	gid := strings.TrimSpace(must(t, a, "sg", "create", "photos", "-prefix", "photos/"))
	dir := t.TempDir()
	files := map[string]string{"a.jpg": "the first photo", "sub/b.jpg": "the second photo", "sub/c.jpg": "the third"}
	mtime := time.Date(2026, 7, 14, 10, 30, 0, 0, time.UTC)
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mtime, mtime)
	}
	if _, err := cli(t, a, "blob", "put", dir); err == nil || !strings.Contains(err.Error(), "-r") {
		t.Fatalf("a directory without -r: %v", err)
	}
	var res api.StoredFiles
	out := must(t, a, "blob", "put", "-r", "-group", gid, "-prefix", "photos/trip/", "--json", dir)
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Files) != 3 || res.Rows != 3 {
		t.Fatalf("blob put -r -group: %+v %v\n%s", res, err, out)
	}
	var row struct {
		Name  string            `json:"name"`
		Blob  map[string]string `json:"blob"`
		Size  int               `json:"size"`
		Mtime time.Time         `json:"mtime"`
	}
	got := must(t, a, "row", "get", gid, "photos/trip/sub/b.jpg")
	if err := json.Unmarshal([]byte(got), &row); err != nil {
		t.Fatalf("%v: %s", err, got)
	}
	var refB string
	for _, f := range res.Files {
		if f.Path == "sub/b.jpg" {
			refB = f.Ref
		}
	}
	if row.Name != "sub/b.jpg" || row.Blob["$blob"] != refB || row.Size != len(files["sub/b.jpg"]) || !row.Mtime.Equal(mtime) {
		t.Fatalf("the row of sub/b.jpg: %+v (blob %s)", row, refB)
	}
	// Several refs into a directory.
	outDir := filepath.Join(t.TempDir(), "out")
	var refs []string
	for _, f := range res.Files {
		refs = append(refs, f.Ref)
	}
	must(t, a, append([]string{"blob", "get", "-d", outDir}, refs...)...)
	for _, f := range res.Files {
		if b, err := os.ReadFile(filepath.Join(outDir, f.Ref)); err != nil || string(b) != files[f.Path] {
			t.Fatalf("blob get -d: %s: %q %v", f.Path, b, err)
		}
	}
	if _, err := cli(t, a, "blob", "get", refs[0], refs[1]); err == nil {
		t.Fatal("several refs without -d written to stdout")
	}
	// A prefix outside the group is refused before anything is stored.
	if _, err := cli(t, a, "blob", "put", "-r", "-group", gid, "-prefix", "docs/", dir); err == nil || !strings.Contains(err.Error(), "not under the prefixes") {
		t.Fatalf("a prefix outside the group: %v", err)
	}

	// A file that cannot be read, second of three: the first is stored
	// and listed, the failing one named, no row written.
	cl, err := control.Dial(a)
	if err != nil {
		t.Fatal(err)
	}
	open := func(s string) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(s)), nil }
	}
	put := []api.PutFile{{Path: "x/1", Open: open("one")}, {Path: "x/2", Open: func() (io.ReadCloser, error) {
		return nil, errors.New("permission denied")
	}}, {Path: "x/3", Open: open("three")}}
	res, err = cl.PutBlobs(t.Context(), put, api.PutBlobsOptions{Group: gid, Prefix: "photos/failed/"}, nil)
	if err == nil || !strings.Contains(err.Error(), "x/2") || res.Failed != "x/2" || len(res.Files) != 1 || res.Files[0].Path != "x/1" || res.Rows != 0 {
		t.Fatalf("a file that cannot be read: %+v %v", res, err)
	}
	if rows := must(t, a, "row", "ls", gid, "-prefix", "photos/failed/"); strings.Contains(rows, "photos/failed/") {
		t.Fatalf("rows written though a file failed:\n%s", rows)
	}

	// JSON lines as one batch; a bad line writes nothing.
	lines := `{"key": "photos/l1", "value": {"n": 1}}` + "\n" + `{"key": "photos/l2", "value": "two"}` + "\n"
	batch := filepath.Join(t.TempDir(), "rows.jsonl")
	os.WriteFile(batch, []byte(lines+`{"key": "docs/x", "value": 3}`+"\n"), 0o644)
	if _, err := cli(t, a, "row", "put", gid, "-f", batch); err == nil || !strings.Contains(err.Error(), "docs/x") {
		t.Fatalf("a batch with a row outside the group: %v", err)
	}
	if _, err := cli(t, a, "row", "get", gid, "photos/l1"); err == nil {
		t.Fatal("a refused batch wrote its first row")
	}
	os.WriteFile(batch, []byte(lines), 0o644)
	if out := must(t, a, "row", "put", gid, "-f", batch); !strings.Contains(out, "2 rows written") {
		t.Fatalf("row put -f: %s", out)
	}
	if got := must(t, a, "row", "get", gid, "photos/l2"); !bytes.Contains([]byte(got), []byte(`"two"`)) {
		t.Fatalf("row from the batch: %s", got)
	}
}

// TestRowsInPages: `row ls -limit` pages through a group's rows in key
// order, each page starting where the last said; together they are every
// row once.
func TestRowsInPages(t *testing.T) {
	t.Parallel()
	a := daemon(t, "-no-lan")
	gid := strings.TrimSpace(must(t, a, "sg", "create", "photos", "-prefix", "photos/"))
	var lines strings.Builder
	for i := range 7 {
		fmt.Fprintf(&lines, `{"key": "photos/%02d", "value": %d}`+"\n", i, i)
	}
	batch := filepath.Join(t.TempDir(), "rows.jsonl")
	os.WriteFile(batch, []byte(lines.String()), 0o644)
	must(t, a, "row", "put", gid, "-f", batch)
	var keys []string
	start := ""
	for pages := 0; ; pages++ {
		if pages > 4 {
			t.Fatalf("more than 4 pages of 2 for 7 rows: %v", keys)
		}
		var p api.RowsPage
		out := must(t, a, "row", "ls", gid, "-limit", "2", "-start", start, "--json")
		if err := json.Unmarshal([]byte(out), &p); err != nil || len(p.Rows) > 2 {
			t.Fatalf("page %d: %v\n%s", pages, err, out)
		}
		for _, r := range p.Rows {
			keys = append(keys, r.Key)
		}
		if p.Next == "" {
			break
		}
		start = p.Next
	}
	if len(keys) != 7 || keys[0] != "photos/00" || keys[6] != "photos/06" || !slices.IsSorted(keys) {
		t.Fatalf("pages gave %v", keys)
	}
	if _, err := cli(t, a, "row", "ls", gid, "-limit", "-1"); err != nil {
		t.Fatalf("a negative limit lists everything: %v", err)
	}
}
