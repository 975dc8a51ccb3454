// Package grouprecord keeps, beside the blobs in an object store, a
// record of each group a node is in, signed with its key, and takes the
// groups up again when the node reopens without its database.
package grouprecord

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/connectivity"
	"github.com/syncnode/syncnode/internal/msgpackx"
	"github.com/syncnode/syncnode/internal/workgroup"
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

// Store is a blob store that keeps small records of the node's beside
// its blobs (an object store shared beyond this machine).
type Store interface {
	PutRecord(name string, b []byte) error
	DeleteRecord(name string) error
	Records() (map[string][]byte, error)
}

// record is what a node needs to take up a group again.
type record struct {
	// Spec is the group's spec as created (its chain, synced with the
	// members, brings the changes since).
	Spec    syncgroup.Spec `msgpack:"s"`
	Members []Member       `msgpack:"m"`
}

// Member is a member a record names, with where it was.
type Member struct {
	Peer  peer.ID  `msgpack:"p"`
	Addrs []string `msgpack:"a,omitempty"`
}

// signed is a record with the node's signature: others with write
// access to the bucket cannot make the node take up a group of theirs.
type signed struct {
	Body []byte `msgpack:"b"`
	Sig  []byte `msgpack:"s"`
}

// maxRecordMembers bounds the members a group record names.
const maxRecordMembers = 64

func recordName(g syncnode.GroupID) string {
	return "groups/" + hex.EncodeToString([]byte(g))
}

// Keep writes group g's record, if the store keeps records.
func (k *Keeper) Keep(g syncnode.GroupID) error {
	if k.store == nil {
		return nil
	}
	// One write at a time, each reading the group when it starts: the
	// record written last is the newest.
	k.mu.Lock()
	defer k.mu.Unlock()
	spec, err := k.groups.Genesis(g)
	if err != nil {
		return err
	}
	rec := record{Spec: spec}
	recorded := map[peer.ID]bool{}
	for _, m := range k.groups.Members(g) {
		if m.Peer != k.h.ID() && len(rec.Members) < maxRecordMembers {
			rec.Members = append(rec.Members, Member{Peer: m.Peer, Addrs: m.Addrs})
			recorded[m.Peer] = true
		}
	}
	k.recorded[g] = recorded
	body, err := msgpack.Marshal(rec)
	if err != nil {
		return err
	}
	sig, err := k.h.Peerstore().PrivKey(k.h.ID()).Sign(body)
	if err != nil {
		return err
	}
	b, err := msgpack.Marshal(signed{Body: body, Sig: sig})
	if err != nil {
		return err
	}
	return k.store.PutRecord(recordName(g), b)
}

// Met writes group g's record again, in the background, when
// member p, with whom this node has just exchanged rows, is not in it yet:
// a recovery must find members that are still there, not only those of
// the day this node joined.
func (k *Keeper) Met(g syncnode.GroupID, p peer.ID) {
	if k.store == nil {
		return
	}
	k.mu.Lock()
	known := k.recorded[g][p]
	k.mu.Unlock()
	if !known {
		k.work.Go(func() { k.KeepOrWarn(g) })
	}
}

// Forget removes group g's record, if the store keeps records.
func (k *Keeper) Forget(g syncnode.GroupID) {
	if k.store != nil {
		if err := k.store.DeleteRecord(recordName(g)); err != nil {
			k.log.Warn("group record not removed from the object store", "group", g, "err", err)
		}
	}
}

// KeepOrWarn writes group g's record, logging a failure: the group
// works without it, only a recovery from the object store would not find
// it.
func (k *Keeper) KeepOrWarn(g syncnode.GroupID) {
	if err := k.Keep(g); err != nil {
		k.log.Warn("group record not written to the object store", "group", g, "err", err)
	}
}

// TakeUp adds the groups the store's records name that this node's
// database lacks, and returns them with their recorded members, to sync
// with once the node runs. The groups it has get their records written
// again.
func (k *Keeper) TakeUp() (map[syncnode.GroupID][]Member, error) {
	if k.store == nil {
		return nil, nil
	}
	recs, err := k.store.Records()
	if err != nil {
		return nil, err
	}
	have := map[syncnode.GroupID]bool{}
	for _, g := range k.groups.Groups() {
		have[g] = true
		// Written again at every open: the members' addresses move.
		k.KeepOrWarn(g)
	}
	out := map[syncnode.GroupID][]Member{}
	for name, b := range recs {
		if !strings.HasPrefix(name, "groups/") {
			continue
		}
		rec, err := k.open(b)
		if err != nil {
			k.log.Warn("group record in the object store refused", "record", name, "err", err)
			continue
		}
		if have[rec.Spec.ID] {
			continue
		}
		if err := rec.Spec.CheckGenesis(); err != nil {
			k.log.Warn("group record in the object store refused", "record", name, "err", err)
			continue
		}
		g, err := syncgroup.NewGroup(rec.Spec, k.h.ID(), time.Minute)
		if err != nil {
			k.log.Warn("group record in the object store refused", "record", name, "err", err)
			continue
		}
		if err := k.groups.Add(g); err != nil {
			return nil, err
		}
		for _, m := range rec.Members {
			connectivity.AddAddrs(k.h, m.Peer, m.Addrs)
		}
		k.log.Info("group taken up again from its record in the object store", "group", rec.Spec.ID, "members", len(rec.Members))
		out[rec.Spec.ID] = rec.Members
	}
	return out, nil
}

// open checks a signed record against this node's key and decodes
// it. The bytes are read as untrusted: anyone who can write to the bucket
// can put bytes there.
func (k *Keeper) open(b []byte) (record, error) {
	var sr signed
	if err := msgpackx.Unmarshal(b, &sr); err != nil {
		return record{}, err
	}
	ok, err := k.h.Peerstore().PubKey(k.h.ID()).Verify(sr.Body, sr.Sig)
	if err != nil || !ok {
		return record{}, errors.New("not signed by this node")
	}
	var rec record
	if err := msgpackx.Unmarshal(sr.Body, &rec); err != nil {
		return record{}, err
	}
	if len(rec.Members) > maxRecordMembers {
		return record{}, fmt.Errorf("%d members recorded, over %d", len(rec.Members), maxRecordMembers)
	}
	return rec, nil
}

// Rejoin syncs group g with the members its record named until one
// round succeeds: they send back its rows. The members are asked all at
// once: one that is gone must not hold up those that are there.
func (k *Keeper) Rejoin(g syncnode.GroupID, members []Member) {
	for delay := time.Second; ; delay = min(2*delay, time.Minute) {
		ctx, cancel := context.WithTimeout(k.ctx, k.ioTimeout)
		done := make(chan peer.ID, len(members))
		for _, m := range members {
			go func() {
				if k.groups.SyncWith(ctx, g, m.Peer) == nil {
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
			k.log.Info("group rows back from a member", "group", g, "peer", from)
			if k.rejoined != nil {
				k.rejoined(g)
			}
			return
		}
		select {
		case <-k.ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// Groups is the node's groups as records are kept and taken up.
type Groups interface {
	// Groups lists the groups this node is in.
	Groups() []syncnode.GroupID
	// Genesis returns g's spec as created: a replica taken up again
	// starts from it, and its chain brings the rest.
	Genesis(g syncnode.GroupID) (syncgroup.Spec, error)
	// Members lists g's members.
	Members(g syncnode.GroupID) []syncgroup.Member
	// Add takes up a group.
	Add(g *syncgroup.Group) error
	// SyncWith runs a round of g with p.
	SyncWith(ctx context.Context, g syncnode.GroupID, p peer.ID) error
}

// Keeper keeps one node's group records.
type Keeper struct {
	store     Store
	h         host.Host
	groups    Groups
	ioTimeout time.Duration
	log       *slog.Logger
	// rejoined is told of a group whose rows came back.
	rejoined func(g syncnode.GroupID)
	work     *workgroup.Group
	ctx      context.Context

	// mu serialises writes of records, and guards recorded: the members
	// each group's record names.
	mu       sync.Mutex
	recorded map[syncnode.GroupID]map[peer.ID]bool
}

// New returns the keeper of the records of the node on h in blobs, if
// blobs keeps records (it is a Store); otherwise a keeper that keeps
// none. rejoined, if not nil, is told of each group taken up whose rows
// came back.
func New(blobs any, h host.Host, groups Groups, ioTimeout time.Duration, rejoined func(g syncnode.GroupID), log *slog.Logger) *Keeper {
	store, _ := blobs.(Store)
	work := workgroup.New()
	return &Keeper{store: store, h: h, groups: groups, ioTimeout: ioTimeout, log: log, rejoined: rejoined,
		work: work, ctx: work.Context(), recorded: map[syncnode.GroupID]map[peer.ID]bool{}}
}

// Close stops the keeper's writes and rejoins, and waits for them.
func (k *Keeper) Close() { k.work.Close() }

// RejoinAll runs Rejoin for each group taken up, in the background.
func (k *Keeper) RejoinAll(taken map[syncnode.GroupID][]Member) {
	for g, ms := range taken {
		k.work.Go(func() { k.Rejoin(g, ms) })
	}
}
