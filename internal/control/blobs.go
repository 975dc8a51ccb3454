package control

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/node"
)

// The blob handlers, and why.

func (s *server) blobInfo(i blobstore.Info) api.BlobInfo {
	sh, _ := s.n.BlobShares(i.Ref)
	return api.BlobInfo{Ref: i.Ref.String(), Hex: i.Ref.Hex(), Size: i.Size, Shares: sh, Pinned: s.n.Pinned(i.Ref)}
}

func (s *server) putBlob(r *http.Request) (api.BlobInfo, error) {
	info, err := s.n.PutBlob(r.Context(), r.Body)
	if err != nil {
		return api.BlobInfo{}, err
	}
	return s.blobInfo(info), nil
}

func (s *server) listBlobs(*http.Request) ([]api.BlobInfo, error) {
	out := []api.BlobInfo{}
	err := s.n.ListBlobs(func(i blobstore.Info) error { out = append(out, s.blobInfo(i)); return nil })
	return out, err
}

func (s *server) statBlob(r *http.Request) (api.BlobInfo, error) {
	ref, err := refParam(r)
	if err != nil {
		return api.BlobInfo{}, err
	}
	info, err := s.n.StatBlob(ref)
	if err != nil {
		return api.BlobInfo{}, err
	}
	return s.blobInfo(info), nil
}

// readBlob streams a range of a blob. The first span is read (and
// verified) before the answer starts, so a damaged copy is a clear error
// status; damage found later ends the body early with the error in the
// api.TrailerError trailer, which the client reports.
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
	off, length, err := blobRange(r, br.Size())
	if err != nil {
		fail(w, err)
		return
	}
	sr := io.NewSectionReader(br, off, length)
	first := make([]byte, min(length, 1<<20))
	if _, err := io.ReadFull(sr, first); err != nil {
		fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(api.HeaderBlobLength, strconv.FormatInt(length, 10))
	w.Header().Set("Trailer", api.TrailerError)
	if _, err := w.Write(first); err == nil {
		if _, err := io.Copy(w, sr); err != nil {
			w.Header().Set(api.TrailerError, err.Error())
		}
	}
}

// blobRange reads the offset and length a read asks for, within size.
func blobRange(r *http.Request, size int64) (off, length int64, err error) {
	length = size
	if v := r.URL.Query().Get("offset"); v != "" {
		if off, err = strconv.ParseInt(v, 10, 64); err != nil || off < 0 || off > size {
			return 0, 0, badRequest("offset %q outside the blob's %d bytes", v, size)
		}
		length = size - off
	}
	if v := r.URL.Query().Get("length"); v != "" {
		l, err := strconv.ParseInt(v, 10, 64)
		if err != nil || l < 0 {
			return 0, 0, badRequest("bad length %q", v)
		}
		length = min(l, size-off)
	}
	return off, length, nil
}

// fetchBlob fetches a blob and streams its progress as NDJSON lines of
// api.FetchEvent, the last one Done or Failed.
func (s *server) fetchBlob(w http.ResponseWriter, r *http.Request) {
	ref, err := refParam(r)
	if err != nil {
		fail(w, err)
		return
	}
	urgency := node.UrgencyNormal
	if v := r.URL.Query().Get("urgency"); v != "" {
		if urgency, err = strconv.Atoi(v); err != nil {
			fail(w, badRequest("bad urgency %q", v))
			return
		}
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 {
			fail(w, badRequest("bad wait %q: want a duration such as 1m", v))
			return
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	events := make(chan api.FetchEvent, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		last, lastState := time.Time{}, ""
		for ev := range events {
			// Progress lines are thinned; a change of state never is.
			if ev.State == node.Fetching.String() && lastState == ev.State && time.Since(last) < 100*time.Millisecond {
				continue
			}
			last, lastState = time.Now(), ev.State
			enc.Encode(ev)
			if flusher != nil {
				flusher.Flush()
			}
		}
	}()
	_, err = s.n.FetchBlob(r.Context(), ref, node.FetchOptions{Urgency: urgency, WaitForHolder: wait, Status: func(st node.Status) {
		ev := api.FetchEvent{State: st.State.String(), Received: st.Received, Total: st.Total, Holders: len(st.Holders)}
		if st.Err != nil {
			ev.Error = st.Err.Error()
		}
		if !st.Until.IsZero() {
			until := st.Until
			ev.Until = &until
		}
		select {
		case events <- ev:
		default: // a slow reader skips progress lines, never the end
		}
	}})
	if err != nil {
		events <- api.FetchEvent{State: node.Failed.String(), Error: err.Error()}
	} else if info, serr := s.n.StatBlob(ref); serr == nil {
		events <- api.FetchEvent{State: node.Done.String(), Received: info.Size, Total: info.Size}
	}
	close(events)
	<-done
}

func (s *server) removeBlob(r *http.Request) (api.Removed, error) {
	ref, err := refParam(r)
	if err != nil {
		return api.Removed{}, err
	}
	force := false
	switch v := r.URL.Query().Get("force"); v {
	case "":
	case "1", "true":
		force = true
	default:
		return api.Removed{}, badRequest("bad force %q: want 1", v)
	}
	if err := s.n.RemoveBlobWith(ref, node.RemoveOptions{Force: force}); err != nil {
		return api.Removed{}, err
	}
	return api.Removed{Removed: ref.String()}, nil
}

// pinBlob pins a blob for the user, fetching it first if it is not held.
func (s *server) pinBlob(r *http.Request) (api.Pin, error) {
	ref, err := refParam(r)
	if err != nil {
		return api.Pin{}, err
	}
	was := s.n.Pinned(ref)
	if err := s.n.PinBlob(r.Context(), ref); err != nil {
		return api.Pin{}, err
	}
	return api.Pin{Ref: ref.String(), Pinned: true, WasPinned: was}, nil
}

// unpinBlob drops the user's pin of a blob.
func (s *server) unpinBlob(r *http.Request) (api.Pin, error) {
	ref, err := refParam(r)
	if err != nil {
		return api.Pin{}, err
	}
	was := s.n.Pinned(ref)
	if err := s.n.UnpinBlob(ref); err != nil {
		return api.Pin{}, err
	}
	return api.Pin{Ref: ref.String(), Pinned: s.n.Pinned(ref), WasPinned: was}, nil
}

func (s *server) why(r *http.Request) (api.Why, error) {
	ref, err := refParam(r)
	if err != nil {
		return api.Why{}, err
	}
	w, err := s.n.Why(ref)
	if err != nil {
		return api.Why{}, err
	}
	out := whyView(w)
	store, serr := s.n.StoreInfo()
	out.Store = store
	if serr != nil {
		out.StoreErr = serr.Error()
	}
	return out, nil
}

// whyView is node.Why as the API shows it.
func whyView(w node.Why) api.Why {
	out := api.Why{Ref: w.Ref.String(), Held: w.Held, Size: w.Size, Shares: w.Shares, Pinned: w.Pinned, PinnedAt: w.PinnedAt, ServerIn: w.ServerIn,
		Queued: w.Queued, Running: w.Running, Attempts: w.Attempts, NextAttempt: w.NextAttempt,
		LastAttempt: w.LastAttempt, LastErr: w.LastErr, Tried: w.Tried, Holders: w.Holders,
		Restoring: w.Restoring, Handoff: w.Handoff, HandoffAt: w.HandoffAt,
		Route: w.Route, RouteAt: w.RouteAt}
	for _, g := range w.Groups {
		out.Groups = append(out.Groups, string(g))
	}
	for _, l := range w.Locations {
		out.Locations = append(out.Locations, api.WhyLocation{Peer: l.Peer, Name: l.Name, WhenSeen: l.WhenSeen, Server: l.Server, Proxy: l.Proxy, Addrs: l.Addrs})
	}
	for _, c := range w.Copies {
		out.Copies = append(out.Copies, api.WhyCopies{Group: string(c.Group), Known: c.Known, Want: c.Want})
	}
	for _, u := range w.Unreferenced {
		out.Unreferenced = append(out.Unreferenced, api.WhyUnreferenced{Group: string(u.Group), Since: u.Since, Due: u.Due, Collected: u.Collected})
	}
	return out
}
