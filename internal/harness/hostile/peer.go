package hostile

// The hostile member: a bare libp2p host that joined the group with the
// real join protocol and then speaks syncnode's wire format itself, with
// its own copies of the wire structs. It records every row that reaches it.

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"lukechampine.com/blake3"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore/baotree"
	"github.com/syncnode/syncnode/internal/syncer"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// The wire messages, as the hostile member writes them (see
// docs/PROTOCOL.md; the node's own structs are unexported).
type (
	joinRequest struct {
		Invitation syncgroup.Invitation `msgpack:"i"`
		TS         syncgroup.Timestamp  `msgpack:"t,omitempty"`
	}
	joinResponse struct {
		Err  string         `msgpack:"e,omitempty"`
		Spec syncgroup.Spec `msgpack:"s"`
	}
	hello struct {
		Group syncnode.GroupID        `msgpack:"g"`
		VV    syncgroup.VersionVector `msgpack:"v"`
		Self  *syncgroup.Row          `msgpack:"s,omitempty"`
		Prio  syncnode.Priority       `msgpack:"p"`
		Chain []syncgroup.Row         `msgpack:"c,omitempty"`
	}
	batch struct {
		Err       string                  `msgpack:"e,omitempty"`
		Prio      *syncnode.Priority      `msgpack:"p,omitempty"`
		VV        syncgroup.VersionVector `msgpack:"v,omitempty"`
		Rows      []syncgroup.Row         `msgpack:"r,omitempty"`
		Signposts []syncer.SignpostEntry  `msgpack:"sp,omitempty"`
		Done      bool                    `msgpack:"d,omitempty"`
	}
	pushMsg struct {
		Group     syncnode.GroupID       `msgpack:"g"`
		Rows      []syncgroup.Row        `msgpack:"r"`
		Signposts []syncer.SignpostEntry `msgpack:"sp,omitempty"`
		Prio      *syncnode.Priority     `msgpack:"p,omitempty"`
	}
	pushAck struct {
		Prios map[syncnode.GroupID]syncnode.Priority `msgpack:"p"`
	}
	sharesReq struct {
		Op       string               `msgpack:"o"`
		ID       ownership.TransferID `msgpack:"i"`
		Ref      syncnode.BlobRef     `msgpack:"r"`
		Group    syncnode.GroupID     `msgpack:"g"`
		Accepted bool                 `msgpack:"a,omitempty"`
		Proof    []byte               `msgpack:"p,omitempty"`
		Leaving  bool                 `msgpack:"lv,omitempty"`
		Ejecting bool                 `msgpack:"ej,omitempty"`
		Want     int                  `msgpack:"wa,omitempty"`
		Items    []sharesReq          `msgpack:"b,omitempty"`
	}
	sharesResp struct {
		Err      string               `msgpack:"e,omitempty"`
		Transfer *ownership.Transfer  `msgpack:"t,omitempty"`
		Keeps    bool                 `msgpack:"k,omitempty"`
		Accepted bool                 `msgpack:"a,omitempty"`
		Taken    int                  `msgpack:"n,omitempty"`
		Surplus  bool                 `msgpack:"su,omitempty"`
		Held     int                  `msgpack:"h,omitempty"`
		Escrow   []ownership.Transfer `msgpack:"es,omitempty"`
		Nonce    []byte               `msgpack:"c,omitempty"`
		Nothing  bool                 `msgpack:"z,omitempty"`
		Items    []sharesResp         `msgpack:"b,omitempty"`
	}
	blobReq struct {
		Ref   []byte `msgpack:"r"`
		Off   int64  `msgpack:"o"`
		Len   int64  `msgpack:"l"`
		Tree  bool   `msgpack:"t,omitempty"`
		Whole int64  `msgpack:"w,omitempty"`
	}
	blobResp struct {
		Code    uint8  `msgpack:"c"`
		Msg     string `msgpack:"m,omitempty"`
		Have    bool   `msgpack:"h"`
		Size    int64  `msgpack:"s"`
		TreeLen int64  `msgpack:"t"`
		Len     int64  `msgpack:"l"`
	}
)

// arrival is a row that reached the hostile member, and when.
type arrival struct {
	row syncgroup.Row
	at  time.Time
}

// peerHost is the hostile member.
type peerHost struct {
	h   host.Host
	key crypto.PrivKey
	g   syncnode.GroupID
	io  time.Duration
	// lyingHolder: asked for shares, it claims two of any blob and offers
	// them; otherwise it resets share streams (does not answer).
	lyingHolder bool
	// rightBytes: asked for a blob it knows, it serves the true bytes;
	// otherwise every byte range comes back damaged.
	rightBytes bool

	mu       sync.Mutex
	self     syncgroup.Row // its membership row
	seq      uint64        // its last own sequence number
	arrivals []arrival
	genuine  []syncgroup.Row // rows of others received, for replays
	known    map[syncnode.BlobRef][]byte
	proofs   [][]byte // proofs it sent, for replays
}

func newPeerHost(g syncnode.GroupID, io time.Duration) (*peerHost, error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	cfg := p2p.DefaultHostConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	h, err := p2p.NewHost(cfg)
	if err != nil {
		return nil, err
	}
	// NewHost draws its own key: the member's identity is the host's.
	key = h.Peerstore().PrivKey(h.ID())
	p := &peerHost{h: h, key: key, g: g, io: io, known: map[syncnode.BlobRef][]byte{}}
	h.SetStreamHandler(p2p.ProtoSync, p.handleSync)
	h.SetStreamHandler(p2p.ProtoPush, p.handlePush)
	h.SetStreamHandler(p2p.ProtoShares, p.handleShares)
	h.SetStreamHandler(p2p.ProtoHaveBlob, p.handleHave)
	h.SetStreamHandler(p2p.ProtoGetBlob, p.handleGet)
	return p, nil
}

func (p *peerHost) id() peer.ID { return p.h.ID() }

// join presents inv to the admin, and writes its own membership row.
func (p *peerHost) join(ctx context.Context, inv syncgroup.Invitation, admin peer.AddrInfo) error {
	p.h.Peerstore().AddAddrs(admin.ID, admin.Addrs, time.Hour)
	var resp joinResponse
	if err := p.call(ctx, admin.ID, p2p.ProtoJoin, joinRequest{Invitation: inv}, &resp); err != nil {
		return err
	}
	if resp.Err != "" {
		return fmt.Errorf("hostile: join refused: %s", resp.Err)
	}
	grp, err := syncgroup.NewGroup(resp.Spec, p.id(), time.Minute)
	if err != nil {
		return err
	}
	if err := grp.SetKey(p.key); err != nil {
		return err
	}
	row, err := grp.Join(inv, nil, time.Now())
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.self, p.seq = row, row.Seq
	p.mu.Unlock()
	_, err = p.round(ctx, admin.ID, hello{Group: p.g, VV: syncgroup.VersionVector{}, Self: &row}, batch{Done: true, VV: syncgroup.VersionVector{}})
	return err
}

// call sends one request on a new stream of proto and reads one answer.
func (p *peerHost) call(ctx context.Context, to peer.ID, proto protocol.ID, req, resp any) error {
	st, err := p.h.NewStream(ctx, to, proto)
	if err != nil {
		return err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	if err := p2p.WriteMsg(st, req, p.io); err != nil {
		st.Reset()
		return err
	}
	if err := p2p.ReadMsg(bufio.NewReader(st), st, resp, p2p.MaxFrame, p.io); err != nil {
		st.Reset()
		return err
	}
	return nil
}

// round runs a sync round with to: h, then the responder's batches
// (recorded), then mine. It returns how many rows came back.
func (p *peerHost) round(ctx context.Context, to peer.ID, h hello, mine batch) (int, error) {
	st, err := p.h.NewStream(ctx, to, p2p.ProtoSync)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	if err := p2p.WriteMsg(st, h, p.io); err != nil {
		st.Reset()
		return 0, err
	}
	br := bufio.NewReader(st)
	got, err := p.readBatches(br, st)
	if err != nil {
		st.Reset()
		return got, err
	}
	if err := p2p.WriteMsg(st, mine, p.io); err != nil {
		st.Reset()
		return got, err
	}
	st.CloseWrite()
	br.ReadByte() // the responder closes once it has applied mine
	return got, nil
}

// readBatches records the rows of a peer's batches up to its last.
func (p *peerHost) readBatches(br *bufio.Reader, st network.Stream) (int, error) {
	got := 0
	for {
		var b batch
		if err := p2p.ReadMsg(br, st, &b, p2p.MaxFrame, p.io); err != nil {
			return got, err
		}
		if b.Err != "" {
			return got, fmt.Errorf("hostile: round refused: %s", b.Err)
		}
		p.record(b.Rows)
		got += len(b.Rows)
		if b.Done {
			return got, nil
		}
	}
}

func (p *peerHost) record(rows []syncgroup.Row) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rows {
		p.arrivals = append(p.arrivals, arrival{r, now})
		if r.Writer != p.id() && len(p.genuine) < 4096 {
			p.genuine = append(p.genuine, r)
		}
	}
}

// push sends rows (and signposts, and a priority) on one push stream.
func (p *peerHost) push(ctx context.Context, to peer.ID, m pushMsg) error {
	st, err := p.h.NewStream(ctx, to, p2p.ProtoPush)
	if err != nil {
		return err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	if err := p2p.WriteMsg(st, m, p.io); err != nil {
		st.Reset()
		return err
	}
	st.CloseWrite()
	var ack pushAck
	return p2p.ReadMsg(bufio.NewReader(st), st, &ack, 64<<10, p.io)
}

// sign makes a row written by the hostile member itself.
func (p *peerHost) sign(key string, value []byte, deleted bool, ts syncgroup.Timestamp, seq uint64) syncgroup.Row {
	r := syncgroup.Row{Key: key, Value: value, Deleted: deleted, TS: ts, Writer: p.id(), Seq: seq}
	if err := syncgroup.SignRow(p.key, p.g, &r); err != nil {
		panic(err) // an Ed25519 key always signs
	}
	return r
}

// nextSeq returns its next own sequence number (or a jump ahead).
func (p *peerHost) nextSeq(jump uint64) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq += 1 + jump
	return p.seq
}

// handleSync answers a round an honest member starts: it sends a lying
// version vector and no rows, and records the rows it is sent.
func (p *peerHost) handleSync(st network.Stream) {
	defer st.Close()
	br := bufio.NewReader(st)
	var h hello
	if err := p2p.ReadMsg(br, st, &h, 256<<10, p.io); err != nil {
		st.Reset()
		return
	}
	prio := bogusPrio()
	if err := p2p.WriteMsg(st, batch{Prio: &prio, VV: syncgroup.VersionVector{p.id(): 1 << 40}, Done: true}, p.io); err != nil {
		st.Reset()
		return
	}
	p.readBatches(br, st)
}

func (p *peerHost) handlePush(st network.Stream) {
	defer st.Close()
	br := bufio.NewReader(st)
	for {
		var m pushMsg
		if err := p2p.ReadMsg(br, st, &m, p2p.MaxFrame, p.io); err != nil {
			break
		}
		p.record(m.Rows)
	}
	p2p.WriteMsg(st, pushAck{Prios: map[syncnode.GroupID]syncnode.Priority{p.g: bogusPrio()}}, p.io)
}

// handleShares plays a holder that has shares of everything: it answers
// every challenge with a nonce, offers two shares whatever it holds, and
// takes every settle; or, not lyingHolder, it does not answer at all.
func (p *peerHost) handleShares(st network.Stream) {
	defer st.Close()
	var req sharesReq
	if err := p2p.ReadMsg(bufio.NewReader(st), st, &req, p2p.MaxFrame, p.io); err != nil || !p.lyingHolder {
		st.Reset()
		return
	}
	answer := func(r sharesReq) sharesResp {
		switch r.Op {
		case "challenge", "challenges":
			nonce := make([]byte, 32)
			rand.Read(nonce)
			// It keeps every share there is, and more.
			return sharesResp{Nonce: nonce, Held: 1 << 20}
		case "offer", "offers":
			if r.Ejecting {
				// To the admin ejecting it: all in escrow, for members
				// that never heard of the transfers.
				return sharesResp{Err: "ownership: shares in escrow for an unsettled transfer", Escrow: p.inventedEscrow(r)}
			}
			return sharesResp{Transfer: &ownership.Transfer{ID: r.ID, Ref: r.Ref, Group: r.Group, N: ownership.CreatorShares, At: time.Now().UnixNano()}}
		case "resolve":
			return sharesResp{Accepted: true}
		case "ask":
			// It took them, and the asker's are surplus: a server's
			// answer, from a member that is none.
			return sharesResp{Taken: ownership.CreatorShares, Surplus: true}
		}
		return sharesResp{}
	}
	resp := answer(req)
	if len(req.Items) > 0 {
		resp = sharesResp{}
		for _, it := range req.Items {
			it.Op = req.Op
			resp.Items = append(resp.Items, answer(it))
		}
	}
	p2p.WriteMsg(st, resp, p.io)
}

// inventedEscrow names transfers of r's blob, of any size, to the honest
// members it knows of.
func (p *peerHost) inventedEscrow(r sharesReq) []ownership.Transfer {
	var out []ownership.Transfer
	for _, to := range p.h.Peerstore().Peers() {
		if to != p.id() {
			out = append(out, ownership.Transfer{ID: ownership.NewTransferID(), Ref: r.Ref, Group: r.Group, From: p.id(), To: to, N: 1 << 20})
		}
	}
	return out
}

func (p *peerHost) data(raw []byte) ([]byte, bool) {
	ref, err := syncnode.RefFromBytes(raw)
	if err != nil {
		return nil, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.known[ref]
	return d, ok
}

// handleHave claims every blob it knows, and a huge one it does not.
func (p *peerHost) handleHave(st network.Stream) {
	defer st.Close()
	var req blobReq
	if err := p2p.ReadMsg(bufio.NewReader(st), st, &req, 4<<10, p.io); err != nil {
		st.Reset()
		return
	}
	d, ok := p.data(req.Ref)
	size := int64(len(d))
	if !ok {
		size = 1 << 40
	}
	p2p.WriteMsg(st, blobResp{Have: true, Size: size}, p.io)
}

// handleGet serves a blob it knows, with its true tree and true or
// damaged bytes.
func (p *peerHost) handleGet(st network.Stream) {
	defer st.Close()
	var req blobReq
	if err := p2p.ReadMsg(bufio.NewReader(st), st, &req, 4<<10, p.io); err != nil {
		st.Reset()
		return
	}
	d, ok := p.data(req.Ref)
	if !ok || req.Off < 0 || req.Len < 0 || req.Off+req.Len > int64(len(d)) {
		p2p.WriteMsg(st, blobResp{Code: 1, Msg: "blob not held"}, p.io)
		return
	}
	if req.Tree && req.Whole >= int64(len(d)) {
		req.Off, req.Len = 0, int64(len(d))
	}
	var tree []byte
	if req.Tree {
		var h baotree.Hasher
		h.Write(d)
		_, tree = h.Sum()
	}
	if err := p2p.WriteMsg(st, blobResp{Size: int64(len(d)), TreeLen: int64(len(tree)), Len: req.Len}, p.io); err != nil {
		st.Reset()
		return
	}
	st.Write(tree)
	body := append([]byte(nil), d[req.Off:req.Off+req.Len]...)
	if !p.rightBytes {
		for i := 0; i < len(body); i += 512 {
			body[i] ^= 0xa5
		}
	}
	st.Write(body)
}

// prove is the possession proof of data under nonce.
func prove(data, nonce []byte) []byte {
	h := blake3.New(32, nonce)
	h.Write(data)
	return h.Sum(nil)
}

// bogusPrio is the best priority a member can claim: a server's device
// type, no distance, a server time a year ahead.
func bogusPrio() syncnode.Priority {
	return syncnode.Priority{DevType: syncnode.Server, Distance: 0, ServerTime: time.Now().Add(365 * 24 * time.Hour)}
}

// fakeLocs names others as holders and servers of a blob, at addresses
// that lead nowhere.
func fakeLocs(ids []peer.ID, g syncnode.GroupID) signpost.Wire {
	w := signpost.Wire{Groups: []string{string(g), "invented-group"}}
	for _, id := range ids {
		w.Locs = append(w.Locs, signpost.WireLoc{Peer: []byte(id), WhenSeen: time.Now().Add(time.Hour).UnixNano(), Server: true,
			Addrs: []string{"/ip4/10.255.255.1/tcp/9", "/dns4/example.invalid/tcp/1"}})
	}
	return w
}
