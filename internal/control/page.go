package control

import (
	"embed"
	"errors"
	"net/http"
	"time"

	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/node"
)

// ui holds the status page: static files that carry no data. The page
// reads the control token from its URL fragment (never sent to the
// server) and polls /ui/state with it.
//
//go:embed ui/index.html ui/page.js ui/page.css
var ui embed.FS

var pageFiles = map[string]struct{ file, typ string }{
	"/ui":          {"ui/index.html", "text/html; charset=utf-8"},
	"/ui/page.js":  {"ui/page.js", "text/javascript; charset=utf-8"},
	"/ui/page.css": {"ui/page.css", "text/css; charset=utf-8"},
}

// servePage serves a file of the status page, reporting whether r asked
// for one.
func servePage(w http.ResponseWriter, r *http.Request) bool {
	f, ok := pageFiles[r.URL.Path]
	if !ok {
		return false
	}
	b, err := ui.ReadFile(f.file)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err)
		return true
	}
	h := w.Header()
	h.Set("Content-Type", f.typ)
	h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	w.Write(b)
	return true
}

// How many queue entries and held blobs the page lists.
const pageQueue, pageBlobs = 50, 100

// errEnough stops a listing once the page has what it shows.
var errEnough = errors.New("control: listing long enough")

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (s *server) pageState(r *http.Request) (api.PageState, error) {
	st, err := s.status(r)
	if err != nil {
		return api.PageState{}, err
	}
	out := api.PageState{Status: st, History: s.hist.list(), Groups: []api.PageGroup{}, Queue: []api.QueueEntry{}, Blobs: []api.BlobInfo{}, Time: time.Now().UTC()}
	for _, spec := range s.n.Groups() {
		pg := api.PageGroup{Group: groupView(spec), Members: []api.Member{}}
		for _, m := range s.n.Members(spec.ID) {
			online, last := s.n.Seen(m.Peer)
			pg.Members = append(pg.Members, api.Member{Peer: m.Peer.String(), Name: m.Name, DevType: m.DevType.String(),
				Addrs: m.Addrs, Online: online || m.Peer == s.n.ID(), LastSeen: last})
		}
		out.Groups = append(out.Groups, pg)
	}
	queue, err := s.n.FetchQueue(pageQueue)
	if err != nil {
		return api.PageState{}, err
	}
	for _, why := range queue {
		out.Queue = append(out.Queue, queueEntry(why))
	}
	err = s.n.ListBlobs(func(i blobstore.Info) error {
		if len(out.Blobs) == pageBlobs {
			return errEnough
		}
		out.Blobs = append(out.Blobs, s.blobInfo(i))
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return api.PageState{}, err
	}
	return out, nil
}

func queueEntry(w node.Why) api.QueueEntry {
	e := api.QueueEntry{Ref: w.Ref.String(), State: "queued", Attempts: w.Attempts,
		NextAttempt: timePtr(w.NextAttempt), LastAttempt: timePtr(w.LastAttempt),
		LastErr: w.LastErr, Tried: w.Tried, Holders: w.Holders}
	if w.Running {
		e.State, e.NextAttempt = "fetching", nil
	}
	return e
}

// PageURL is the address of the status page of the daemon of data
// directory dir, the control token in its fragment: open it in a browser
// on this machine.
func PageURL(dir string) (string, error) {
	cfg, token, err := LoadConfig(dir)
	if err != nil {
		return "", err
	}
	return "http://" + cfg.API + "/ui#token=" + token, nil
}
