// Package control is the daemon's local control API: JSON over HTTP on a
// loopback address, every request carrying the token kept in the data
// directory. The server drives a node; the client is what the syncnode
// subcommands use.
package control

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
)

// Handler serves the control API for n to holders of token.
func Handler(n *node.Node, token string, log *slog.Logger) http.Handler {
	s := &server{n: n, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /blobs", s.putBlob)
	mux.HandleFunc("GET /blobs", s.listBlobs)
	mux.HandleFunc("GET /blobs/{ref}", s.readBlob)
	mux.HandleFunc("GET /blobs/{ref}/stat", s.statBlob)
	mux.HandleFunc("POST /blobs/{ref}/fetch", s.fetchBlob)
	mux.HandleFunc("DELETE /blobs/{ref}", s.removeBlob)
	mux.HandleFunc("GET /why/{ref}", s.why)
	mux.HandleFunc("POST /groups", s.createGroup)
	mux.HandleFunc("GET /groups", s.listGroups)
	mux.HandleFunc("POST /groups/invite", s.invite)
	mux.HandleFunc("POST /groups/join", s.join)
	mux.HandleFunc("POST /groups/leave", s.leave)
	mux.HandleFunc("GET /groups/members", s.members)
	mux.HandleFunc("POST /rows", s.putRow)
	mux.HandleFunc("GET /rows", s.getRows)
	mux.HandleFunc("DELETE /rows", s.deleteRow)
	mux.HandleFunc("GET /peers", s.peers)
	mux.HandleFunc("GET /status", s.status)
	mux.Handle("GET /metrics", metricsHandler(n))
	mux.HandleFunc("GET /ui/state", s.pageState)
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && servePage(w, r) {
			return // the status page's static files carry no data
		}
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			httpError(w, http.StatusUnauthorized, errors.New("missing or wrong control token"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

type server struct {
	n   *node.Node
	log *slog.Logger
}

// apiError is the body of every failed request.
type apiError struct {
	Error string `json:"error"`
}

func httpError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(apiError{err.Error()})
}

// fail maps an error to a status code.
func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, syncnode.ErrNotFound), errors.Is(err, node.ErrNoHolder):
		code = http.StatusNotFound
	case errors.Is(err, node.ErrPinned):
		code = http.StatusConflict
	case errors.Is(err, syncnode.ErrBadBlobRef), errors.Is(err, errBadRequest),
		errors.Is(err, syncgroup.ErrOutsideGroup), errors.Is(err, syncgroup.ErrInvitation),
		errors.Is(err, syncgroup.ErrNotMember), errors.Is(err, syncgroup.ErrNotAllowed):
		code = http.StatusBadRequest
	}
	httpError(w, code, err)
}

var errBadRequest = errors.New("bad request")

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func decode(r *http.Request, v any) error {
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return nil
}

func refParam(r *http.Request) (syncnode.BlobRef, error) {
	return syncnode.ParseBlobRef(r.PathValue("ref"))
}

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Ref    string                   `json:"ref"`
	Hex    string                   `json:"hex"`
	Size   int64                    `json:"size"`
	Shares map[syncnode.GroupID]int `json:"shares,omitempty"`
}

func (s *server) blobInfo(i blobstore.Info) BlobInfo {
	sh, _ := s.n.BlobShares(i.Ref)
	return BlobInfo{Ref: i.Ref.String(), Hex: i.Ref.Hex(), Size: i.Size, Shares: sh}
}

func (s *server) putBlob(w http.ResponseWriter, r *http.Request) {
	info, err := s.n.PutBlob(r.Context(), r.Body)
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, s.blobInfo(info))
}

func (s *server) listBlobs(w http.ResponseWriter, r *http.Request) {
	out := []BlobInfo{}
	err := s.n.ListBlobs(func(i blobstore.Info) error { out = append(out, s.blobInfo(i)); return nil })
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, out)
}

func (s *server) statBlob(w http.ResponseWriter, r *http.Request) {
	ref, err := refParam(r)
	if err != nil {
		fail(w, err)
		return
	}
	info, err := s.n.StatBlob(ref)
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, s.blobInfo(info))
}

func (s *server) readBlob(w http.ResponseWriter, r *http.Request) {
	ref, err := refParam(r)
	if err != nil {
		fail(w, err)
		return
	}
	br, err := s.n.OpenBlob(ref)
	if err != nil {
		fail(w, err)
		return
	}
	defer br.Close()
	off, length := int64(0), br.Size()
	if v := r.URL.Query().Get("offset"); v != "" {
		if off, err = strconv.ParseInt(v, 10, 64); err != nil || off < 0 || off > br.Size() {
			httpError(w, http.StatusBadRequest, fmt.Errorf("offset %q outside the blob's %d bytes", v, br.Size()))
			return
		}
		length = br.Size() - off
	}
	if v := r.URL.Query().Get("length"); v != "" {
		l, err := strconv.ParseInt(v, 10, 64)
		if err != nil || l < 0 {
			httpError(w, http.StatusBadRequest, fmt.Errorf("bad length %q", v))
			return
		}
		length = min(l, br.Size()-off)
	}
	// The first span is read (and verified) before the answer starts, so
	// a damaged copy is a clear error status. A damage found later ends
	// the body early with the error in the TrailerError trailer, which the
	// client reports.
	sr := io.NewSectionReader(br, off, length)
	first := make([]byte, min(length, 1<<20))
	if _, err := io.ReadFull(sr, first); err != nil {
		fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(HeaderBlobLength, strconv.FormatInt(length, 10))
	w.Header().Set("Trailer", TrailerError)
	if _, err := w.Write(first); err == nil {
		if _, err := io.Copy(w, sr); err != nil {
			w.Header().Set(TrailerError, err.Error())
		}
	}
}

// FetchEvent is one line of a fetch's NDJSON status stream.
type FetchEvent struct {
	State    string `json:"state"`
	Received int64  `json:"received"`
	Total    int64  `json:"total"`
	Holders  int    `json:"holders,omitempty"`
	Error    string `json:"error,omitempty"`
}

func (s *server) fetchBlob(w http.ResponseWriter, r *http.Request) {
	ref, err := refParam(r)
	if err != nil {
		fail(w, err)
		return
	}
	prio := node.PriorityNormal
	if v := r.URL.Query().Get("priority"); v != "" {
		if prio, err = strconv.Atoi(v); err != nil {
			httpError(w, http.StatusBadRequest, fmt.Errorf("bad priority %q", v))
			return
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	events := make(chan FetchEvent, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := time.Time{}
		for ev := range events {
			if ev.State == node.Fetching.String() && time.Since(last) < 100*time.Millisecond {
				continue
			}
			last = time.Now()
			enc.Encode(ev)
			if flusher != nil {
				flusher.Flush()
			}
		}
	}()
	_, err = s.n.FetchBlob(r.Context(), ref, node.FetchOptions{Priority: prio, Status: func(st node.Status) {
		ev := FetchEvent{State: st.State.String(), Received: st.Received, Total: st.Total, Holders: len(st.Holders)}
		if st.Err != nil {
			ev.Error = st.Err.Error()
		}
		select {
		case events <- ev:
		default: // a slow reader skips progress lines, never the end
		}
	}})
	if err != nil {
		events <- FetchEvent{State: node.Failed.String(), Error: err.Error()}
	} else if info, serr := s.n.StatBlob(ref); serr == nil {
		events <- FetchEvent{State: node.Done.String(), Received: info.Size, Total: info.Size}
	}
	close(events)
	<-done
}

func (s *server) removeBlob(w http.ResponseWriter, r *http.Request) {
	ref, err := refParam(r)
	if err != nil {
		fail(w, err)
		return
	}
	if err := s.n.RemoveBlob(ref); err != nil {
		fail(w, err)
		return
	}
	reply(w, map[string]string{"removed": ref.String()})
}

func (s *server) why(w http.ResponseWriter, r *http.Request) {
	ref, err := refParam(r)
	if err != nil {
		fail(w, err)
		return
	}
	why, err := s.n.Why(ref)
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, why)
}

// CreateRequest creates a syncgroup.
type CreateRequest struct {
	Name     string   `json:"name"`
	Prefixes []string `json:"prefixes"`
	Private  bool     `json:"private"`
	DevType  string   `json:"devtype"`
}

func (s *server) createGroup(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	dev, err := syncnode.ParseDevType(req.DevType)
	if err != nil {
		fail(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	spec, err := s.n.CreateGroup(req.Name, req.Prefixes, req.Private, dev)
	if err != nil {
		fail(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	reply(w, groupView(spec))
}

// Group describes a syncgroup.
type Group struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Prefixes []string `json:"prefixes"`
	Private  bool     `json:"private"`
	Admins   []string `json:"admins"`
}

func groupView(s syncgroup.Spec) Group {
	g := Group{ID: string(s.ID), Name: s.Name, Prefixes: s.Prefixes, Private: s.Private}
	for _, a := range s.Admins {
		g.Admins = append(g.Admins, a.String())
	}
	return g
}

func (s *server) listGroups(w http.ResponseWriter, r *http.Request) {
	out := []Group{}
	for _, spec := range s.n.Groups() {
		out = append(out, groupView(spec))
	}
	reply(w, out)
}

// InviteRequest asks for an invitation.
type InviteRequest struct {
	Group   string `json:"group"`
	Peer    string `json:"peer"`
	DevType string `json:"devtype"`
	TTL     string `json:"ttl"`
}

// Invitation is an invitation ready to hand to the joiner: the signed
// invitation and where the admin listens.
type Invitation struct {
	Invitation []byte   `json:"invitation"`
	AdminAddrs []string `json:"admin_addrs"`
}

func (s *server) invite(w http.ResponseWriter, r *http.Request) {
	var req InviteRequest
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	p, err := peer.Decode(req.Peer)
	if err != nil {
		fail(w, fmt.Errorf("%w: peer %q: %v", errBadRequest, req.Peer, err))
		return
	}
	dev, err := syncnode.ParseDevType(req.DevType)
	if err != nil {
		fail(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			fail(w, fmt.Errorf("%w: ttl %q", errBadRequest, req.TTL))
			return
		}
	}
	inv, err := s.n.Invite(syncnode.GroupID(req.Group), p, dev, ttl)
	if err != nil {
		fail(w, err)
		return
	}
	b, err := inv.Marshal()
	if err != nil {
		fail(w, err)
		return
	}
	out := Invitation{Invitation: b}
	for _, a := range s.n.Host().Addrs() {
		out.AdminAddrs = append(out.AdminAddrs, a.String())
	}
	reply(w, out)
}

func (s *server) join(w http.ResponseWriter, r *http.Request) {
	var req Invitation
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	inv, err := syncgroup.UnmarshalInvitation(req.Invitation)
	if err != nil {
		fail(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	var addrs []ma.Multiaddr
	for _, a := range req.AdminAddrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			fail(w, fmt.Errorf("%w: address %q: %v", errBadRequest, a, err))
			return
		}
		addrs = append(addrs, m)
	}
	spec, err := s.n.JoinGroup(r.Context(), inv, addrs)
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, groupView(spec))
}

// GroupRequest names a group.
type GroupRequest struct {
	Group string `json:"group"`
}

func (s *server) leave(w http.ResponseWriter, r *http.Request) {
	var req GroupRequest
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	if err := s.n.LeaveGroup(r.Context(), syncnode.GroupID(req.Group)); err != nil {
		fail(w, err)
		return
	}
	reply(w, map[string]string{"left": req.Group})
}

// Member is one member of a group.
type Member struct {
	Peer    string   `json:"peer"`
	DevType string   `json:"devtype"`
	Addrs   []string `json:"addrs,omitempty"`
}

func (s *server) members(w http.ResponseWriter, r *http.Request) {
	g := syncnode.GroupID(r.URL.Query().Get("group"))
	if _, err := s.n.GroupSpec(g); err != nil {
		fail(w, err)
		return
	}
	out := []Member{}
	for _, m := range s.n.Members(g) {
		out = append(out, Member{Peer: m.Peer.String(), DevType: m.DevType.String(), Addrs: m.Addrs})
	}
	reply(w, out)
}

// RowRequest writes a row: Value is JSON, in which {"$blob": "<ref>"}
// stands for a blob ref.
type RowRequest struct {
	Group string          `json:"group"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// Row is a row as the API shows it, its value converted to JSON.
type Row struct {
	Key    string          `json:"key"`
	Value  json.RawMessage `json:"value"`
	Writer string          `json:"writer"`
	Time   time.Time       `json:"time"`
}

func rowView(r syncgroup.Row) Row {
	v, err := ToJSON(r.Value)
	if err != nil {
		v, _ = json.Marshal(map[string]string{"$undecodable": err.Error()})
	}
	return Row{Key: r.Key, Value: v, Writer: r.Writer.String(), Time: time.Unix(0, r.TS.Wall).UTC()}
}

func (s *server) putRow(w http.ResponseWriter, r *http.Request) {
	var req RowRequest
	if err := decode(r, &req); err != nil {
		fail(w, err)
		return
	}
	v, err := FromJSON(req.Value)
	if err != nil {
		fail(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	row, err := s.n.PutRow(syncnode.GroupID(req.Group), req.Key, v)
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, rowView(row))
}

func (s *server) getRows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	g := syncnode.GroupID(q.Get("group"))
	if key := q.Get("key"); key != "" {
		row, ok, err := s.n.GetRow(g, key)
		if err != nil {
			fail(w, err)
			return
		}
		if !ok {
			fail(w, fmt.Errorf("row %q: %w", key, syncnode.ErrNotFound))
			return
		}
		reply(w, []Row{rowView(row)})
		return
	}
	rows, err := s.n.ListRows(g, q.Get("prefix"))
	if err != nil {
		fail(w, err)
		return
	}
	out := []Row{}
	for _, row := range rows {
		out = append(out, rowView(row))
	}
	reply(w, out)
}

func (s *server) deleteRow(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if _, err := s.n.DeleteRow(syncnode.GroupID(q.Get("group")), q.Get("key")); err != nil {
		fail(w, err)
		return
	}
	reply(w, map[string]string{"deleted": q.Get("key")})
}

// Peer is a connected peer.
type Peer struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

func (s *server) peers(w http.ResponseWriter, r *http.Request) {
	out := []Peer{}
	h := s.n.Host()
	for _, p := range h.Network().Peers() {
		pi := Peer{ID: p.String()}
		for _, c := range h.Network().ConnsToPeer(p) {
			pi.Addrs = append(pi.Addrs, c.RemoteMultiaddr().String())
		}
		out = append(out, pi)
	}
	reply(w, out)
}

// Status summarises the node.
type Status struct {
	ID         string   `json:"id"`
	Addrs      []string `json:"addrs"`
	Groups     int      `json:"groups"`
	Peers      int      `json:"peers"`
	Blobs      int      `json:"blobs"`
	BlobBytes  int64    `json:"blob_bytes"`
	FetchQueue int      `json:"fetch_queue"`
	Uploads    int64    `json:"uploads"`
	BytesOut   int64    `json:"bytes_out"`
	BytesIn    int64    `json:"bytes_in"`
	// Durability is, per group, the referenced blobs and those at risk:
	// no verified server copy known.
	Durability []Durability `json:"durability"`
}

// Durability is one group's line of the durability summary.
type Durability struct {
	Group      string   `json:"group"`
	Referenced int      `json:"referenced"`
	AtRisk     int      `json:"at_risk"`
	AtRiskRefs []string `json:"at_risk_refs,omitempty"`
}

func (s *server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.statusView()
	if err != nil {
		fail(w, err)
		return
	}
	reply(w, st)
}

func (s *server) statusView() (Status, error) {
	ns := s.n.Stats()
	st := Status{ID: s.n.ID().String(), Groups: len(s.n.Groups()), Peers: len(s.n.Host().Network().Peers()),
		FetchQueue: ns.FetchQueue, Blobs: ns.Blobs, BlobBytes: ns.BlobBytes,
		Uploads: s.n.UploadStats().Uploads, BytesOut: ns.BytesOut, BytesIn: ns.BytesIn}
	for _, a := range s.n.Addrs() {
		st.Addrs = append(st.Addrs, a.String())
	}
	dur, err := s.n.Durability()
	if err != nil {
		return st, err
	}
	for _, g := range dur {
		d := Durability{Group: string(g.Group), Referenced: g.Referenced, AtRisk: g.AtRisk}
		for _, r := range g.AtRiskRefs {
			d.AtRiskRefs = append(d.AtRiskRefs, r.String())
		}
		st.Durability = append(st.Durability, d)
	}
	return st, nil
}
