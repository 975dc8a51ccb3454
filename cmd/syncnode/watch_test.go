package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/api"
)

// watchLines runs `syncnode watch` with args until ctx ends, sending each
// NDJSON line it prints.
func watchLines(ctx context.Context, t *testing.T, data string, args ...string) <-chan api.Event {
	pr, pw := io.Pipe()
	out := make(chan api.Event, 64)
	go func() {
		defer pw.Close()
		run(ctx, append([]string{"-data", data, "watch"}, args...), strings.NewReader(""), pw, io.Discard)
	}()
	go func() {
		defer close(out)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var e api.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("watch line %q: %v", sc.Text(), err)
				return
			}
			out <- e
		}
	}()
	return out
}

func nextEvent(t *testing.T, ch <-chan api.Event, kind string) api.Event {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("watch ended before a %s event", kind)
			}
			if e.Kind == kind {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s event", kind)
		}
	}
}

// TestWatchCommandResumesFromItsMarker follows a group from the shell,
// stops, and resumes from the last marker: the row written meanwhile
// arrives, the ones before it do not come again.
func TestWatchCommandResumesFromItsMarker(t *testing.T) {
	t.Parallel()
	a := daemon(t)
	gid := strings.TrimSpace(must(t, a, "sg", "create", "notes", "-prefix", "n/"))
	must(t, a, "row", "put", gid, "n/1", `{"text": "one"}`)

	ctx, cancel := context.WithCancel(t.Context())
	ch := watchLines(ctx, t, a, gid, "-json", "-prefix", "n/")
	first := nextEvent(t, ch, "row.put")
	if first.Key != "n/1" || !first.Initial || string(first.Value) != `{"text":"one"}` {
		t.Fatalf("replayed row %+v", first)
	}
	nextEvent(t, ch, "caught-up")
	must(t, a, "row", "put", gid, "n/2", `{"text": "two"}`)
	second := nextEvent(t, ch, "row.put")
	if second.Key != "n/2" || second.Initial || !second.Local {
		t.Fatalf("followed row %+v", second)
	}
	cancel()

	must(t, a, "row", "put", gid, "n/3", `{"text": "three"}`)
	ch = watchLines(t.Context(), t, a, gid, "-json", "-prefix", "n/", "-from", second.Marker)
	if e := nextEvent(t, ch, "row.put"); e.Key != "n/3" {
		t.Fatalf("resumed watch's first row %q, want n/3", e.Key)
	}
}

// TestWatchCommandRefusesABadMarker: a marker from nowhere is an error,
// not a silent replay.
func TestWatchCommandRefusesABadMarker(t *testing.T) {
	t.Parallel()
	a := daemon(t)
	gid := strings.TrimSpace(must(t, a, "sg", "create", "notes", "-prefix", "n/"))
	_, err := cli(t, a, "watch", gid, "-from", "nonsense")
	if err == nil || !strings.Contains(err.Error(), "bad marker") {
		t.Fatalf("watch -from nonsense: %v", err)
	}
	if _, err := cli(t, a, "watch", "no/such-group"); err == nil {
		t.Fatal("watch of an unknown group succeeded")
	}
}
