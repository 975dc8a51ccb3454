// Command photodrop shares a folder between devices with syncnode: a file
// dropped into the folder of one device appears in the folders of the
// others, and a server keeps every file, so that a device with a blob
// budget may drop its copies from its store.
//
//	photodrop -data DIR -watch FOLDER [-create | -join INVITATION] [-server] [-budget BYTES] [-listen ADDR] [-invite PEER[:server]]...
//
// See README.md for three devices on one machine.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
)

// groupName is the name of the group a photo drop is.
const groupName = "photodrop"

func main() {
	var invites []string
	data := flag.String("data", "", "the node's data directory (required)")
	folder := flag.String("watch", "", "the folder to share (required)")
	create := flag.Bool("create", false, "create the photo drop, this device its admin")
	invitation := flag.String("join", "", "join the photo drop with an invitation its admin printed")
	server := flag.Bool("server", false, "this device is the drop's server: it keeps every file")
	budget := flag.Int64("budget", 0, "the most bytes of blobs this device's store keeps (0: no limit)")
	listen := flag.String("listen", "/ip4/127.0.0.1/tcp/0", "the address to listen on")
	flag.Func("invite", "print an invitation for `PEER` (PEER:server for a server); admin only, repeatable", func(s string) error {
		invites = append(invites, s)
		return nil
	})
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("photodrop: ")
	if *data == "" || *folder == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.Open(node.Config{DataDir: *data, ListenAddrs: []string{*listen}, BlobBudget: *budget})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	check := func(err error) {
		if err != nil {
			n.Close()
			log.Fatal(err)
		}
	}
	g, err := setup(ctx, n, *create, *invitation, *server)
	check(err)
	for _, to := range invites {
		line, err := invite(n, g, to)
		check(err)
		fmt.Printf("invitation for %s\n%s\n", to, line)
	}
	check(os.MkdirAll(*folder, 0o755))
	dev, _ := n.DevType(g)
	fmt.Printf("sharing %s as a %s device; peer ID %s\n", *folder, dev, n.ID())
	d := &Drop{Node: n, Group: g, Folder: *folder, Log: log.New(os.Stdout, "", log.Ltime)}
	check(d.Run(ctx))
}

// setup returns the group of the photo drop: the one created (create), the
// one joined with invitation, or the one this device is in.
func setup(ctx context.Context, n *node.Node, create bool, invitation string, server bool) (syncnode.GroupID, error) {
	var in []syncnode.GroupID
	for _, s := range n.Groups() {
		if s.Name == groupName {
			in = append(in, s.ID)
		}
	}
	dev := syncnode.Normal
	if server {
		dev = syncnode.Server
	}
	switch {
	case create && invitation != "":
		return "", errors.New("-create or -join, not both")
	case create && len(in) > 0:
		return "", fmt.Errorf("this device is in a photo drop already (%s)", in[0])
	case create:
		s, err := n.CreateGroup(groupName, []string{prefix}, true, dev)
		return s.ID, err
	case invitation != "":
		inv, err := parseInvitation(invitation)
		if err != nil {
			return "", err
		}
		if inv.DevType != dev {
			return "", fmt.Errorf("the invitation is for a %s device, and this one is started as a %s", inv.DevType, dev)
		}
		if slices.Contains(in, inv.Group) {
			return inv.Group, nil // joined at an earlier start
		}
		s, err := join(ctx, n, inv)
		return s.ID, err
	case len(in) == 0:
		as := n.ID().String()
		if server {
			as += ":server"
		}
		return "", fmt.Errorf("this device is in no photo drop: ask its admin to start with -invite %s, then start this one with -join INVITATION", as)
	}
	return in[0], nil
}

// join joins with an invitation: every JoinGroup of this file.
func join(ctx context.Context, n *node.Node, inv syncgroup.Invitation) (syncgroup.Spec, error) {
	return n.JoinGroup(ctx, inv)
}

// invite returns an invitation for the peer to, "PEER" or "PEER:server",
// to join group g, valid for a day: the signed invitation, which carries
// where to reach the admin and the servers, in base64 — as `syncnode sg
// invite` prints it.
func invite(n *node.Node, g syncnode.GroupID, to string) (string, error) {
	if spec, err := n.GroupSpec(g); err != nil || !slices.Contains(spec.Admins, n.ID()) {
		return "", errors.New("only the photo drop's admin invites")
	}
	id, role, _ := strings.Cut(to, ":")
	p, err := peer.Decode(id)
	if err != nil {
		return "", fmt.Errorf("-invite %s: %w", to, err)
	}
	dev := syncnode.Normal
	if role == "server" {
		dev = syncnode.Server
	} else if role != "" {
		return "", fmt.Errorf("-invite %s: PEER or PEER:server", to)
	}
	inv, err := n.Invite(g, p, dev, 24*time.Hour)
	if err != nil {
		return "", err
	}
	b, err := inv.Marshal()
	return base64.RawURLEncoding.EncodeToString(b), err
}

// parseInvitation reads what invite returns.
func parseInvitation(s string) (syncgroup.Invitation, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return syncgroup.Invitation{}, fmt.Errorf("-join: not an invitation: %w", err)
	}
	return syncgroup.UnmarshalInvitation(b)
}
