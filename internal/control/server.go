// Package control is the daemon: its data directory and config, the
// server of the control API (whose contract is package api), its metrics
// and its status page.
package control

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
)

// Handler serves the control API for n to holders of token.
func Handler(n *node.Node, token string, log *slog.Logger) http.Handler {
	return newServer(n, log).handler(token)
}

func newServer(n *node.Node, log *slog.Logger) *server {
	return &server{n: n, log: log, hist: &history{}}
}

// handler serves the control API to holders of token.
func (s *server) handler(token string) http.Handler {
	n := s.n
	mux := http.NewServeMux()
	mux.HandleFunc(api.RoutePutBlob, answer(s.putBlob))
	mux.HandleFunc(api.RoutePutBlobs, answer(s.putBlobs))
	mux.HandleFunc(api.RouteListBlobs, answer(s.listBlobs))
	mux.HandleFunc(api.RouteReadBlob, s.readBlob)
	mux.HandleFunc(api.RouteStatBlob, answer(s.statBlob))
	mux.HandleFunc(api.RouteFetchBlob, s.fetchBlob)
	mux.HandleFunc(api.RouteRemoveBlob, answer(s.removeBlob))
	mux.HandleFunc(api.RoutePinBlob, answer(s.pinBlob))
	mux.HandleFunc(api.RouteUnpinBlob, answer(s.unpinBlob))
	mux.HandleFunc(api.RouteWhy, answer(s.why))
	mux.HandleFunc(api.RouteCreate, answer(s.createGroup))
	mux.HandleFunc(api.RouteGroups, answer(s.listGroups))
	mux.HandleFunc(api.RouteInvite, answer(s.invite))
	mux.HandleFunc(api.RouteJoin, answer(s.join))
	mux.HandleFunc(api.RouteLeave, answer(s.leave))
	mux.HandleFunc(api.RouteEject, answer(s.eject))
	mux.HandleFunc(api.RouteChangeSpec, answer(s.changeSpec))
	mux.HandleFunc(api.RouteMembers, answer(s.members))
	mux.HandleFunc(api.RoutePutRow, answer(s.putRow))
	mux.HandleFunc(api.RoutePutRows, answer(s.putRows))
	mux.HandleFunc(api.RouteGetRows, answer(s.getRows))
	mux.HandleFunc(api.RouteRowsPage, answer(s.rowsPage))
	mux.HandleFunc(api.RouteDeleteRow, answer(s.deleteRow))
	mux.HandleFunc(api.RoutePeers, answer(s.peers))
	mux.HandleFunc(api.RouteStatus, answer(s.status))
	mux.Handle(api.RouteMetrics, metricsHandler(n))
	mux.HandleFunc(api.RoutePageState, answer(s.pageState))
	mux.HandleFunc(api.RouteWatch, s.watch)
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
	n    *node.Node
	log  *slog.Logger
	hist *history
}

// counters reads what the page's graph samples.
func (s *server) counters() counters {
	st := s.n.Stats()
	return counters{in: st.BytesIn, out: st.BytesOut, queue: st.FetchQueue}
}

// answer adapts a handler that returns its answer or an error: the answer
// is written as JSON, the error as api.Error with a status code that
// fits it.
func answer[T any](fn func(r *http.Request) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r)
		if err != nil {
			fail(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
}

func httpError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
}

// fail maps an error to a status code.
func fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, syncnode.ErrNotFound), errors.Is(err, node.ErrNoHolder):
		code = http.StatusNotFound
	case errors.Is(err, node.ErrPinned), errors.Is(err, node.ErrUserPinned), errors.Is(err, node.ErrAtRisk), errors.Is(err, syncgroup.ErrLastAdmin):
		code = http.StatusConflict
	case errors.Is(err, node.ErrAdminUnreachable):
		code = http.StatusBadGateway
	case errors.Is(err, feed.ErrExpired):
		code = http.StatusGone
	case errors.Is(err, feed.ErrBadMarker):
		code = http.StatusBadRequest
	case errors.Is(err, syncnode.ErrBadBlobRef), errors.Is(err, errBadRequest),
		errors.Is(err, syncgroup.ErrOutsideGroup), errors.Is(err, syncgroup.ErrInvitation),
		errors.Is(err, syncgroup.ErrNotMember), errors.Is(err, syncgroup.ErrNotAllowed), errors.Is(err, syncgroup.ErrBadChange):
		code = http.StatusBadRequest
	}
	httpError(w, code, err)
}

var errBadRequest = errors.New("bad request")

// badRequest wraps err as errBadRequest.
func badRequest(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, a...))
}

func decode(r *http.Request, v any) error {
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(v); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

func refParam(r *http.Request) (syncnode.BlobRef, error) {
	return syncnode.ParseBlobRef(r.PathValue("ref"))
}
