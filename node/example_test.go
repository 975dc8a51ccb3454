package node_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
	"github.com/syncnode/syncnode/value"
)

// Photo is the row value of the examples: a struct whose BlobRef field
// value.Marshal writes as a blob ref, which every node finds in the row.
type Photo struct {
	Title string           `json:"title"`
	Image syncnode.BlobRef `json:"image"`
}

// A node keeps its identity and stores in a data directory and listens
// where Config says; these examples use loopback, short sync rounds and
// no LAN discovery, so that the nodes of one process find only each
// other.
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "syncnode-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	n, err := node.Open(node.Config{
		DataDir:      dir,
		Name:         "laptop",
		ListenAddrs:  []string{"/ip4/127.0.0.1/tcp/0"},
		SyncInterval: 200 * time.Millisecond,
		// Members are reached at the addresses their invitations and
		// membership rows carry, not by multicast DNS.
		NoLAN: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()

	fmt.Println("listening:", len(n.Addrs()) > 0)
	fmt.Println("groups:", len(n.Groups()))
	// Output:
	// listening: true
	// groups: 0
}

// An admin creates a group and invites a second node by its peer ID; the
// invitation carries the admin's addresses, where the second node joins.
func ExampleNode_JoinGroup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	phone, closePhone := open("phone", 0)
	defer closePhone()
	laptop, closeLaptop := open("laptop", 0)
	defer closeLaptop()

	spec, err := phone.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		log.Fatal(err)
	}
	inv, err := phone.Invite(spec.ID, laptop.ID(), syncnode.Normal, time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	joined, err := join(ctx, laptop, inv) // laptop.JoinGroup(ctx, inv)
	if err != nil {
		log.Fatal(err)
	}
	dev, _ := laptop.DevType(spec.ID)
	fmt.Println("joined:", joined.ID == spec.ID)
	fmt.Println("as:", dev)
	fmt.Println("members the admin sees:", len(phone.Members(spec.ID)))
	// Output:
	// joined: true
	// as: normal
	// members the admin sees: 2
}

// A row names a blob by holding its ref: value.Marshal writes a
// syncnode.BlobRef field as one, and the node takes the blob into its
// custody as the row's blob.
func ExampleNode_PutRow() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	phone, closePhone := open("phone", 0)
	defer closePhone()
	spec, err := phone.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		log.Fatal(err)
	}

	img, err := phone.PutBlob(ctx, bytes.NewReader([]byte("the bytes of beach.jpg")))
	if err != nil {
		log.Fatal(err)
	}
	v, err := value.Marshal(Photo{Title: "beach", Image: img.Ref})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := phone.PutRow(spec.ID, "photos/beach", v); err != nil {
		log.Fatal(err)
	}

	row, ok, err := phone.GetRow(spec.ID, "photos/beach")
	if err != nil || !ok {
		log.Fatal("no row: ", err)
	}
	var p Photo
	if err := value.Unmarshal(row.Value, &p); err != nil {
		log.Fatal(err)
	}
	refs, _ := value.Refs(row.Value)
	fmt.Println(p.Title, p.Image == img.Ref, len(refs), "ref")
	// Output:
	// beach true 1 ref
}

// Watch from the zero marker replays the group's current state, ends the
// replay with CaughtUp, then follows changes: here a row the laptop
// writes.
func ExampleNode_Watch() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	phone, closePhone := open("phone", 0)
	defer closePhone()
	laptop, closeLaptop := open("laptop", 0)
	defer closeLaptop()
	g := group(ctx, phone, laptop, syncnode.Normal)

	for e, err := range phone.Watch(ctx, g, node.WatchOptions{Prefix: "photos/"}) {
		if err != nil {
			log.Fatal(err)
		}
		switch e.Kind {
		case feed.CaughtUp:
			fmt.Println(e.Kind)
			v, _ := value.Marshal(Photo{Title: "cat"})
			if _, err := laptop.PutRow(g, "photos/cat", v); err != nil {
				log.Fatal(err)
			}
		case feed.RowPut:
			var p Photo
			if err := value.Unmarshal(e.Row.Value, &p); err != nil {
				log.Fatal(err)
			}
			fmt.Println(e.Kind, e.Key, p.Title, "from the laptop:", e.Peer == laptop.ID())
			return
		}
	}
	// Output:
	// caught-up
	// row.put photos/cat cat from the laptop: true
}

// A fetch reports its stages: pending, locating, fetching, done. The
// laptop fetches a blob that a row of the phone names, once the row has
// reached it.
func ExampleNode_FetchBlob() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	phone, closePhone := open("phone", 0)
	defer closePhone()
	laptop, closeLaptop := open("laptop", 0)
	defer closeLaptop()
	g := group(ctx, phone, laptop, syncnode.Normal)
	ref := putPhoto(ctx, phone, g, "photos/beach", bytes.Repeat([]byte("beach "), 100_000))
	awaitRow(ctx, laptop, g, "photos/beach")

	var last node.State = -1
	info, err := laptop.FetchBlob(ctx, ref, node.FetchOptions{
		Urgency: node.UrgencyHigh,
		Status: func(s node.Status) {
			if s.State != last { // fetching is reported again as bytes arrive
				fmt.Println(s.State)
				last = s.State
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Size, "bytes, held:", laptop.HasBlob(ref))
	// Output:
	// pending
	// locating
	// fetching
	// done
	// 600000 bytes, held: true
}

// A server of a group fetches every blob its rows name and takes the
// writer's ownership shares; only then may a device over its blob budget
// evict its own copy. The device learns it from its watch: a ServerCopy
// event.
func Example_server() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	phone, closePhone := open("phone", 64<<10) // keeps 64 KiB of blobs
	defer closePhone()
	server, closeServer := open("server", 0)
	defer closeServer()
	g := group(ctx, phone, server, syncnode.Server)

	// Watched from now: blob events are not replayed.
	events := phone.Watch(ctx, g, node.WatchOptions{Now: true})
	ref := putPhoto(ctx, phone, g, "photos/beach", bytes.Repeat([]byte("beach "), 100_000))
	shares, _ := phone.BlobShares(ref)
	fmt.Println("phone's shares before:", shares[g])

	for e, err := range events {
		if err != nil {
			log.Fatal(err)
		}
		if e.Kind == feed.ServerCopy && e.Ref == ref {
			fmt.Println(e.Kind, "by the server:", e.Peer == server.ID())
			break
		}
	}
	shares, _ = phone.BlobShares(ref)
	fmt.Println("phone's shares after:", shares[g], "server holds it:", server.HasBlob(ref))
	if _, err := phone.Evict(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("phone holds it:", phone.HasBlob(ref))
	// Output:
	// phone's shares before: 2
	// blob.server by the server: true
	// phone's shares after: 0 server holds it: true
	// phone holds it: false
}

// open opens a node for an example, in a fresh temporary directory, on a
// loopback port the system picks, with short sync rounds, no LAN
// discovery and budget bytes of blobs (0: no budget). The function returned closes it and
// removes the directory.
func open(name string, budget int64) (*node.Node, func()) {
	dir, err := os.MkdirTemp("", "syncnode-example-")
	if err != nil {
		log.Fatal(err)
	}
	n, err := node.Open(node.Config{DataDir: dir, Name: name, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		SyncInterval: 200 * time.Millisecond, NoLAN: true, BlobBudget: budget})
	if err != nil {
		log.Fatal(err)
	}
	return n, func() { n.Close(); os.RemoveAll(dir) }
}

// join has n join with an invitation: every JoinGroup of this file.
func join(ctx context.Context, n *node.Node, inv syncgroup.Invitation) (syncgroup.Spec, error) {
	return n.JoinGroup(ctx, inv)
}

// group creates a private group syncing "photos/" with admin as a normal
// device, and has member join it as dev.
func group(ctx context.Context, admin, member *node.Node, dev syncnode.DevType) syncnode.GroupID {
	spec, err := admin.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		log.Fatal(err)
	}
	inv, err := admin.Invite(spec.ID, member.ID(), dev, time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := join(ctx, member, inv); err != nil {
		log.Fatal(err)
	}
	return spec.ID
}

// putPhoto stores data as a blob on n and writes a Photo row at key
// naming it.
func putPhoto(ctx context.Context, n *node.Node, g syncnode.GroupID, key string, data []byte) syncnode.BlobRef {
	info, err := n.PutBlob(ctx, bytes.NewReader(data))
	if err != nil {
		log.Fatal(err)
	}
	v, err := value.Marshal(Photo{Title: key, Image: info.Ref})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := n.PutRow(g, key, v); err != nil {
		log.Fatal(err)
	}
	return info.Ref
}

// awaitRow returns once n has a row at key: from the zero marker, a watch
// replays the rows n has, then follows those that arrive.
func awaitRow(ctx context.Context, n *node.Node, g syncnode.GroupID, key string) {
	for e, err := range n.Watch(ctx, g, node.WatchOptions{Prefix: key}) {
		if err != nil {
			log.Fatal(err)
		}
		if e.Kind == feed.RowPut && e.Key == key {
			return
		}
	}
}
