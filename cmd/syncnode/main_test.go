package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/syncnode/syncnode"
)

func cli(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out)
	return out.String(), err
}

func TestBlobCommands(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "in.txt")
	os.WriteFile(file, []byte("hello, syncnode"), 0o600)
	data := filepath.Join(dir, "data")

	out, err := cli(t, "", "-data", data, "blob", "put", file)
	if err != nil {
		t.Fatal(err)
	}
	ref := strings.TrimSpace(out)
	if _, err := syncnode.ParseBlobRef(ref); err != nil {
		t.Fatalf("put printed %q: %v", out, err)
	}
	if out, err := cli(t, "", "-data", data, "blob", "cat", ref, "-offset", "7", "-length", "4"); err != nil || out != "sync" {
		t.Fatalf("cat range = %q, %v", out, err)
	}
	dst := filepath.Join(dir, "out.txt")
	if _, err := cli(t, "", "-data", data, "blob", "get", ref, "-o", dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "hello, syncnode" {
		t.Fatalf("get wrote %q", b)
	}
	out, err = cli(t, "", "-data", data, "blob", "ls", "-json")
	var infos []infoJSON
	if err != nil || json.Unmarshal([]byte(out), &infos) != nil || len(infos) != 1 || infos[0].Size != 15 {
		t.Fatalf("ls -json = %q, %v", out, err)
	}
	if _, err := cli(t, "from stdin", "-data", data, "blob", "put", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, "", "-data", data, "blob", "rm", ref); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, "", "-data", data, "blob", "stat", ref); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("stat after rm: %v", err)
	}
	for _, bad := range [][]string{
		{"blob", "stat", "not-a-ref"},
		{"blob", "frobnicate"},
		{"nonsense"},
		{},
	} {
		if _, err := cli(t, "", append([]string{"-data", data}, bad...)...); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}
