package api

import (
	"fmt"
	"net/url"
)

// The routes, as http.ServeMux patterns. The Client builds its paths from
// the helpers below, which follow these patterns; nothing else writes a
// path of the API.
const (
	RoutePutBlob    = "POST /blobs"
	RoutePutBlobs   = "POST /blobs/many"
	RouteListBlobs  = "GET /blobs"
	RouteReadBlob   = "GET /blobs/{ref}"
	RouteStatBlob   = "GET /blobs/{ref}/stat"
	RouteFetchBlob  = "POST /blobs/{ref}/fetch"
	RouteRemoveBlob = "DELETE /blobs/{ref}"
	RoutePinBlob    = "POST /blobs/{ref}/pin"
	RouteUnpinBlob  = "DELETE /blobs/{ref}/pin"
	RouteWhy        = "GET /why/{ref}"
	RouteCreate     = "POST /groups"
	RouteGroups     = "GET /groups"
	RouteInvite     = "POST /groups/invite"
	RouteJoin       = "POST /groups/join"
	RouteLeave      = "POST /groups/leave"
	RouteEject      = "POST /groups/eject"
	RouteChangeSpec = "POST /groups/spec"
	RouteMembers    = "GET /groups/members"
	RoutePutRow     = "POST /rows"
	RoutePutRows    = "POST /rows/batch"
	RouteGetRows    = "GET /rows"
	RouteRowsPage   = "GET /rows/page"
	RouteDeleteRow  = "DELETE /rows"
	RoutePeers      = "GET /peers"
	RouteStatus     = "GET /status"
	RouteMetrics    = "GET /metrics"
	RoutePageState  = "GET /ui/state"
	RouteWatch      = "GET /watch"
)

func blobPath(ref string) string { return "/blobs/" + url.PathEscape(ref) }

func readPath(ref string, offset, length int64) string {
	q := url.Values{"offset": {fmt.Sprint(offset)}}
	if length >= 0 {
		q.Set("length", fmt.Sprint(length))
	}
	return blobPath(ref) + "?" + q.Encode()
}

func statPath(ref string) string { return blobPath(ref) + "/stat" }

func pinPath(ref string) string { return blobPath(ref) + "/pin" }

func removePath(ref string, o RemoveOptions) string {
	if o.Force {
		return blobPath(ref) + "?force=1"
	}
	return blobPath(ref)
}

func fetchPath(ref string, o FetchOptions) string {
	q := url.Values{}
	if o.Urgency != 0 {
		q.Set("urgency", fmt.Sprint(o.Urgency))
	}
	if o.Wait > 0 {
		q.Set("wait", o.Wait.String())
	}
	p := blobPath(ref) + "/fetch"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

func whyPath(ref string) string { return "/why/" + url.PathEscape(ref) }

func membersPath(group string) string {
	return "/groups/members?" + url.Values{"group": {group}}.Encode()
}

func rowsPath(group, key, prefix string) string {
	q := url.Values{"group": {group}}
	if key != "" {
		q.Set("key", key)
	}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	return "/rows?" + q.Encode()
}

func watchPath(group string, o WatchOptions) string {
	q := url.Values{"group": {group}}
	if o.From != "" {
		q.Set("from", o.From)
	}
	if o.Prefix != "" {
		q.Set("prefix", o.Prefix)
	}
	if o.Now {
		q.Set("now", "1")
	}
	return "/watch?" + q.Encode()
}
