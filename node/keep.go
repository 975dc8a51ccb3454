package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/connectivity"
	"github.com/syncnode/syncnode/internal/msgpackx"
	"github.com/syncnode/syncnode/syncgroup"
)

// A node whose blobs live in an object store keeps there, beside them, a
// record of each group it is in: the group's spec and where its members
// were, signed with the node's key. A server that loses its database
// (and its disk) reopens with its identity key and config, takes up every
// group its records name, and syncs with the members recorded: they know
// it as a member still, and send back every row, its own membership
// included. Together with the blobs its markers name, that is all it
// held.

// recordKeeper is a blob store that keeps small records of the node's
// beside its blobs (an object store shared beyond this machine).
type recordKeeper interface {
	PutRecord(name string, b []byte) error
	DeleteRecord(name string) error
	Records() (map[string][]byte, error)
}

// groupRecord is what a node needs to take up a group again.
type groupRecord struct {
	Spec    syncgroup.Spec `msgpack:"s"`
	Members []memberAddrs  `msgpack:"m"`
}

type memberAddrs struct {
	Peer  peer.ID  `msgpack:"p"`
	Addrs []string `msgpack:"a,omitempty"`
}

// signedRecord is a record with the node's signature: others with write
// access to the bucket cannot make the node take up a group of theirs.
type signedRecord struct {
	Body []byte `msgpack:"b"`
	Sig  []byte `msgpack:"s"`
}

// maxRecordMembers bounds the members a group record names.
const maxRecordMembers = 64

func groupRecordName(g syncnode.GroupID) string {
	return "groups/" + hex.EncodeToString([]byte(g))
}

// keepGroup writes group g's record, if the store keeps records.
func (n *Node) keepGroup(g syncnode.GroupID) error {
	rk, ok := n.blobs.(recordKeeper)
	if !ok {
		return nil
	}
	// One write at a time, each reading the group when it starts: the
	// record written last is the newest.
	n.keepMu.Lock()
	defer n.keepMu.Unlock()
	rec := groupRecord{}
	if err := n.sync.With(g, func(gr *syncgroup.Group) error { rec.Spec = gr.Spec(); return nil }); err != nil {
		return err
	}
	recorded := map[peer.ID]bool{}
	for _, m := range n.Members(g) {
		if m.Peer != n.h.ID() && len(rec.Members) < maxRecordMembers {
			rec.Members = append(rec.Members, memberAddrs{Peer: m.Peer, Addrs: m.Addrs})
			recorded[m.Peer] = true
		}
	}
	if n.recorded == nil {
		n.recorded = map[syncnode.GroupID]map[peer.ID]bool{}
	}
	n.recorded[g] = recorded
	body, err := msgpack.Marshal(rec)
	if err != nil {
		return err
	}
	sig, err := n.h.Peerstore().PrivKey(n.h.ID()).Sign(body)
	if err != nil {
		return err
	}
	b, err := msgpack.Marshal(signedRecord{Body: body, Sig: sig})
	if err != nil {
		return err
	}
	return rk.PutRecord(groupRecordName(g), b)
}

// keepMember writes group g's record again, in the background, when
// member p, with whom this node has just exchanged rows, is not in it yet:
// a recovery must find members that are still there, not only those of
// the day this node joined.
func (n *Node) keepMember(g syncnode.GroupID, p peer.ID) {
	if _, ok := n.blobs.(recordKeeper); !ok {
		return
	}
	n.keepMu.Lock()
	known := n.recorded[g][p]
	n.keepMu.Unlock()
	if !known {
		n.goRun(func() { n.keepGroupOrWarn(g) })
	}
}

// forgetGroup removes group g's record, if the store keeps records.
func (n *Node) forgetGroup(g syncnode.GroupID) {
	if rk, ok := n.blobs.(recordKeeper); ok {
		if err := rk.DeleteRecord(groupRecordName(g)); err != nil {
			n.log.Warn("group record not removed from the object store", "group", g, "err", err)
		}
	}
}

// keepGroupOrWarn writes group g's record, logging a failure: the group
// works without it, only a recovery from the object store would not find
// it.
func (n *Node) keepGroupOrWarn(g syncnode.GroupID) {
	if err := n.keepGroup(g); err != nil {
		n.log.Warn("group record not written to the object store", "group", g, "err", err)
	}
}

// takeUpGroups adds the groups the store's records name that this node's
// database lacks, and returns them with their recorded members, to sync
// with once the node runs. The groups it has get their records written
// again.
func (n *Node) takeUpGroups() (map[syncnode.GroupID][]memberAddrs, error) {
	rk, ok := n.blobs.(recordKeeper)
	if !ok {
		return nil, nil
	}
	recs, err := rk.Records()
	if err != nil {
		return nil, err
	}
	have := map[syncnode.GroupID]bool{}
	for _, g := range n.sync.Groups() {
		have[g] = true
		// Written again at every open: the members' addresses move.
		n.keepGroupOrWarn(g)
	}
	out := map[syncnode.GroupID][]memberAddrs{}
	for name, b := range recs {
		if !strings.HasPrefix(name, "groups/") {
			continue
		}
		rec, err := n.openRecord(b)
		if err != nil {
			n.log.Warn("group record in the object store refused", "record", name, "err", err)
			continue
		}
		if have[rec.Spec.ID] {
			continue
		}
		g, err := syncgroup.NewGroup(rec.Spec, n.h.ID(), time.Minute)
		if err != nil {
			n.log.Warn("group record in the object store refused", "record", name, "err", err)
			continue
		}
		if err := n.sync.Add(g); err != nil {
			return nil, err
		}
		for _, m := range rec.Members {
			connectivity.AddAddrs(n.h, m.Peer, m.Addrs)
		}
		n.log.Info("group taken up again from its record in the object store", "group", rec.Spec.ID, "members", len(rec.Members))
		out[rec.Spec.ID] = rec.Members
	}
	return out, nil
}

// openRecord checks a signed record against this node's key and decodes
// it. The bytes are read as untrusted: anyone who can write to the bucket
// can put bytes there.
func (n *Node) openRecord(b []byte) (groupRecord, error) {
	var sr signedRecord
	if err := msgpackx.Unmarshal(b, &sr); err != nil {
		return groupRecord{}, err
	}
	ok, err := n.h.Peerstore().PubKey(n.h.ID()).Verify(sr.Body, sr.Sig)
	if err != nil || !ok {
		return groupRecord{}, errors.New("not signed by this node")
	}
	var rec groupRecord
	if err := msgpackx.Unmarshal(sr.Body, &rec); err != nil {
		return groupRecord{}, err
	}
	if len(rec.Members) > maxRecordMembers {
		return groupRecord{}, fmt.Errorf("%d members recorded, over %d", len(rec.Members), maxRecordMembers)
	}
	return rec, nil
}

// rejoin syncs group g with the members its record named until one
// round succeeds: they send back its rows. The members are asked all at
// once: one that is gone must not hold up those that are there.
func (n *Node) rejoin(g syncnode.GroupID, members []memberAddrs) {
	for delay := time.Second; ; delay = min(2*delay, time.Minute) {
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.IOTimeout)
		done := make(chan peer.ID, len(members))
		for _, m := range members {
			go func() {
				if n.sync.SyncWith(ctx, g, m.Peer) == nil {
					done <- m.Peer
					return
				}
				done <- ""
			}()
		}
		var from peer.ID
		for range members {
			if from = <-done; from != "" {
				break
			}
		}
		cancel()
		if from != "" {
			n.log.Info("group rows back from a member", "group", g, "peer", from)
			n.conn.PublishAddrs(true)
			return
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}
