package control

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/value"
)

// watch streams a group's changes as NDJSON, one api.Event per line,
// flushed as each is read; an error ends the stream as a last line. The
// events are read from the node's feed as the client takes them, so a
// slow client holds no memory here.
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
	if _, err := s.n.GroupSpec(g); err != nil {
		fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	for e, err := range s.n.Watch(r.Context(), g, o) {
		line := s.eventView(e)
		if err != nil {
			line = api.Event{Error: err.Error(), Expired: errors.Is(err, feed.ErrExpired)}
		}
		if enc.Encode(line) != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// eventView is e as the API shows it: values as JSON, peers with names.
func (s *server) eventView(e node.Event) api.Event {
	out := api.Event{Marker: string(e.Marker), Kind: string(e.Kind), Group: string(e.Group), Local: e.Local,
		Size: e.Size, Shares: e.Shares, Initial: e.Initial, Time: e.Time.UTC()}
	if e.Peer != "" {
		out.Peer, out.Name = e.Peer.String(), s.n.NameOf(e.Peer)
	}
	if !e.Ref.IsZero() {
		out.Ref = e.Ref.String()
	}
	if e.IsRow() {
		out.Key = e.Key
	}
	if e.Kind == feed.RowPut {
		v, err := value.ToJSON(e.Row.Value)
		if err != nil {
			v, _ = json.Marshal(map[string]string{"$undecodable": err.Error()})
		}
		out.Value = v
	}
	if e.Time.IsZero() {
		out.Time = time.Time{}
	}
	return out
}
