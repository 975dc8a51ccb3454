package node

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/feed"
)

// collector gathers a watch's events in a goroutine.
type collector struct {
	ch chan Event
}

func gatherEvents(ctx context.Context, t *testing.T, n *Node, g syncnode.GroupID, o WatchOptions) *collector {
	c := &collector{ch: make(chan Event, 1024)}
	go func() {
		for e, err := range n.Watch(ctx, g, o) {
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("watch: %v", err)
				}
				return
			}
			e.Marker = Marker(fmt.Sprint(time.Now().UnixNano())) // receipt time
			select {
			case c.ch <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	return c
}

// next waits for the first event that match accepts.
func (c *collector) next(t *testing.T, what string, match func(Event) bool) Event {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case e := <-c.ch:
			if match(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s event", what)
		}
	}
}

func receivedAt(e Event) time.Time {
	var ns int64
	fmt.Sscan(string(e.Marker), &ns)
	return time.Unix(0, ns)
}

// TestWatchFollowsAGroupAcrossNodes watches a device and a server while
// the device writes a row naming a blob: the server's watcher sees the row
// (written by the device) within milliseconds of applying it, then the
// blob fetched and the shares taken; the device's watcher sees its shares
// go to the server and the server's copy; a delete reaches both.
func TestWatchFollowsAGroupAcrossNodes(t *testing.T) {
	t.Parallel()
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Server)
	dev, srv := nodes[0], nodes[1]
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	// The replay: both members, then caught up.
	var members []string
	for e, err := range dev.Watch(ctx, g, WatchOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == feed.CaughtUp {
			break
		}
		if e.Kind != feed.MemberJoined || !e.Initial {
			t.Fatalf("replay event %+v", e)
		}
		members = append(members, e.Peer.String())
	}
	slices.Sort(members)
	want := []string{dev.ID().String(), srv.ID().String()}
	slices.Sort(want)
	if !slices.Equal(members, want) {
		t.Fatalf("replayed members %v, want %v", members, want)
	}

	dw := gatherEvents(ctx, t, dev, g, WatchOptions{Now: true})
	sw := gatherEvents(ctx, t, srv, g, WatchOptions{Now: true, Prefix: "photos/"})
	ref := putBlobRow(t, dev, g, "photos/1", 64<<10, 1)
	row := sw.next(t, "row put", func(e Event) bool { return e.Kind == feed.RowPut && e.Key == "photos/1" })
	if row.Peer != dev.ID() || row.Local {
		t.Errorf("row event: writer %s, local %v; want the device's, remote", row.Peer, row.Local)
	}
	if d := receivedAt(row).Sub(row.Time); d > 50*time.Millisecond {
		t.Errorf("row reached the watcher %v after it was applied", d)
	}
	sw.next(t, "blob fetched", func(e Event) bool { return e.Kind == feed.BlobFetched && e.Ref == ref })
	sw.next(t, "shares in", func(e Event) bool { return e.Kind == feed.SharesIn && e.Ref == ref && e.Peer == dev.ID() })
	dw.next(t, "own row", func(e Event) bool { return e.Kind == feed.RowPut && e.Local })
	dw.next(t, "shares out", func(e Event) bool { return e.Kind == feed.SharesOut && e.Ref == ref && e.Peer == srv.ID() })
	dw.next(t, "server copy", func(e Event) bool { return e.Kind == feed.ServerCopy && e.Ref == ref && e.Peer == srv.ID() })

	if _, err := dev.DeleteRow(g, "photos/1"); err != nil {
		t.Fatal(err)
	}
	sw.next(t, "row deleted", func(e Event) bool { return e.Kind == feed.RowDeleted && e.Key == "photos/1" })
}

// TestRowLatencyToAWatcher measures, on a second node, how long after a
// row is applied its watcher has it.
func TestRowLatencyToAWatcher(t *testing.T) {
	t.Parallel()
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal)
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := gatherEvents(ctx, t, b, g, WatchOptions{Now: true})
	var lat []time.Duration
	for i := range 30 {
		v, _ := msgpack.Marshal(i)
		key := fmt.Sprintf("photos/%d", i)
		if _, err := a.PutRow(g, key, v); err != nil {
			t.Fatal(err)
		}
		e := w.next(t, key, func(e Event) bool { return e.Key == key })
		lat = append(lat, receivedAt(e).Sub(e.Time))
	}
	slices.Sort(lat)
	t.Logf("applied → watcher: p50 %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
	if lat[len(lat)/2] > 10*time.Millisecond {
		t.Errorf("median latency %v, want at most 10ms", lat[len(lat)/2])
	}
}

// TestSlowWatcherSlowsNothing keeps one watcher stalled mid-stream while
// rows are written: writes and another watcher go on.
func TestSlowWatcherSlowsNothing(t *testing.T) {
	t.Parallel()
	nodes, g := mesh(t, true, syncnode.Normal)
	n := nodes[0]
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	next, stop := iter.Pull2(n.Watch(ctx, g, WatchOptions{Now: true}))
	defer stop()
	fast := gatherEvents(ctx, t, n, g, WatchOptions{Now: true})
	v, _ := msgpack.Marshal(1)
	if _, err := n.PutRow(g, "photos/first", v); err != nil {
		t.Fatal(err)
	}
	if e, err, _ := next(); err != nil || e.Key != "photos/first" {
		t.Fatalf("slow watcher's first event %+v, %v", e, err)
	}
	// The slow watcher reads nothing more.
	for i := range 2000 {
		if _, err := n.PutRow(g, fmt.Sprintf("photos/%d", i), v); err != nil {
			t.Fatal(err)
		}
	}
	fast.next(t, "last row", func(e Event) bool { return e.Key == "photos/1999" })
	// And it resumes where it stopped, in order.
	if e, err, _ := next(); err != nil || e.Key != "photos/0" {
		t.Fatalf("slow watcher's next event %+v, %v; want photos/0", e, err)
	}
}

// TestWatchEndsWithErrClosed closes a node under a watcher.
func TestWatchEndsWithErrClosed(t *testing.T) {
	t.Parallel()
	n := openNode(t, t.TempDir())
	spec, err := n.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		for _, err := range n.Watch(context.Background(), spec.ID, WatchOptions{Now: true}) {
			errc <- err
			return
		}
		errc <- nil
	}()
	time.Sleep(50 * time.Millisecond)
	n.Close()
	select {
	case err := <-errc:
		if err != ErrClosed {
			t.Fatalf("watch ended with %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end at Close")
	}
}

// TestWatchResumesAcrossARestart: a marker taken before the node closed
// resumes after it opened again, with what was written meanwhile and
// nothing twice.
func TestWatchResumesAcrossARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := openNode(t, dir)
	spec, err := n.CreateGroup("notes", []string{"n/"}, true, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := msgpack.Marshal("x")
	if _, err := n.PutRow(spec.ID, "n/1", v); err != nil {
		t.Fatal(err)
	}
	var marker Marker
	for e, err := range n.Watch(t.Context(), spec.ID, WatchOptions{Prefix: "n/"}) {
		if err != nil {
			t.Fatal(err)
		}
		if marker = e.Marker; e.Kind == feed.CaughtUp {
			break
		}
	}
	if _, err := n.PutRow(spec.ID, "n/2", v); err != nil {
		t.Fatal(err)
	}
	n.Close()

	n = openNode(t, dir)
	defer n.Close()
	if _, err := n.PutRow(spec.ID, "n/3", v); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for e, err := range n.Watch(t.Context(), spec.ID, WatchOptions{From: marker, Prefix: "n/"}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.IsRow() {
			keys = append(keys, e.Key)
		}
		if e.Key == "n/3" {
			break
		}
	}
	if fmt.Sprint(keys) != "[n/2 n/3]" {
		t.Fatalf("resumed after a restart: %v, want [n/2 n/3]", keys)
	}
}

// TestCloseFromInsideAWatch: a watch holds nothing of the node's while
// its consumer runs, so the consumer may close the node.
func TestCloseFromInsideAWatch(t *testing.T) {
	t.Parallel()
	n := openNode(t, t.TempDir())
	spec, err := n.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		var last error
		for e, err := range n.Watch(context.Background(), spec.ID, WatchOptions{}) {
			if err != nil {
				last = err
				break
			}
			if e.Kind == feed.CaughtUp {
				n.Close()
			}
		}
		done <- last
	}()
	select {
	case err := <-done:
		if err != ErrClosed {
			t.Fatalf("watch ended with %v, want ErrClosed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close from inside a watch did not return")
	}
}
