package control

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/value"
)

// watchWriteWait bounds how long one event may take to reach a client:
// one that stops reading is cut off, and holds nothing of the node's.
const watchWriteWait = 30 * time.Second

// watch streams a group's changes (every group's, without a group: from
// now or a marker) as NDJSON, one api.Event per line, flushed as each is
// read; an error ends the stream as a last line. The group and marker
// are checked before the answer starts, so a bad one is a 400 (or 404 for
// no such group, 410 for an expired marker). The events are read from
// the node's feed as the client takes them.
func (s *server) watch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	g := syncnode.GroupID(q.Get("group"))
	o := node.WatchOptions{From: node.Marker(q.Get("from")), Prefix: q.Get("prefix")}
	if v := q.Get("now"); v != "" {
		now, err := strconv.ParseBool(v)
		if err != nil {
			fail(w, badRequest("bad now %q", v))
			return
		}
		o.Now = now
	}
	if err := s.n.CheckWatch(g, o); err != nil {
		fail(w, err)
		return
	}
	events := s.n.WatchAll(r.Context(), o)
	if g != "" {
		events = s.n.Watch(r.Context(), g, o)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	names := map[peer.ID]string{}
	for e, err := range events {
		line := s.eventView(e, names)
		if err != nil {
			line = api.Event{Error: err.Error(), Expired: errors.Is(err, feed.ErrExpired), BadMarker: errors.Is(err, feed.ErrBadMarker)}
		}
		rc.SetWriteDeadline(time.Now().Add(watchWriteWait))
		if enc.Encode(line) != nil || rc.Flush() != nil {
			return
		}
	}
}

// eventView is e as the API shows it: values as JSON, peers with names
// (looked up once per watch).
func (s *server) eventView(e node.Event, names map[peer.ID]string) api.Event {
	out := api.Event{Marker: string(e.Marker), Kind: string(e.Kind), Group: string(e.Group), Local: e.Local,
		Size: e.Size, Shares: e.Shares, Initial: e.Initial, Time: e.Time.UTC()}
	if e.Peer != "" {
		name, ok := names[e.Peer]
		if !ok {
			name = s.n.NameOf(e.Peer)
			names[e.Peer] = name
		}
		out.Peer, out.Name = e.Peer.String(), name
	}
	if !e.Ref.IsZero() {
		out.Ref = e.Ref.String()
	}
	if e.IsRow() || e.Kind == feed.MemberJoined || e.Kind == feed.MemberLeft || e.Kind == feed.MemberEjected {
		out.Key = e.Key
	}
	if e.Kind == feed.RowPut {
		v, err := value.ToJSON(e.Row.Value)
		if err != nil {
			v, _ = json.Marshal(map[string]string{"$undecodable": err.Error()})
		}
		out.Value = v
	}
	return out
}
