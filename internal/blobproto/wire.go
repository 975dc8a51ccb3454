// Package blobproto fetches and serves content-addressed blobs between
// peers over the have and get protocols, verifying every byte against
// the blob's ref.
package blobproto

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/signpost"
)

// Response codes of the have and get protocols.
const (
	codeOK uint8 = iota
	codeNotFound
	codeDenied
	codeBusy
	codeBadRequest
)

// RemoteError is an error a peer reported in a have or get response.
type RemoteError struct {
	Peer string
	Code uint8
	Msg  string
}

// Error says which peer reported what.
func (e *RemoteError) Error() string { return fmt.Sprintf("blobproto: peer %s: %s", e.Peer, e.Msg) }

// Is makes a remote "not found" match syncnode.ErrNotFound.
func (e *RemoteError) Is(target error) bool {
	return e.Code == codeNotFound && target == syncnode.ErrNotFound
}

// haveRequest asks whether a peer holds a blob.
type haveRequest struct {
	Ref []byte `msgpack:"r"`
}

// haveResponse answers a haveRequest: the size if the blob is held and
// final, else what the peer knows of where it is.
type haveResponse struct {
	Code     uint8          `msgpack:"c"`
	Msg      string         `msgpack:"m,omitempty"`
	Have     bool           `msgpack:"h"`
	Size     int64          `msgpack:"s"`
	Signpost *signpost.Wire `msgpack:"p,omitempty"`
}

// getRequest asks for a byte range of a blob and, if Tree, its outboard
// tree first.
type getRequest struct {
	Ref  []byte `msgpack:"r"`
	Off  int64  `msgpack:"o"`
	Len  int64  `msgpack:"l"`
	Tree bool   `msgpack:"t,omitempty"`
	// Whole, if not 0, asks for the tree and every byte of the blob, Off
	// and Len aside, when the blob is at most Whole bytes and an upload
	// slot is free at once: a small blob comes whole on one stream.
	// Otherwise the answer is what Off and Len ask for.
	Whole int64 `msgpack:"w,omitempty"`
}

// getResponse precedes TreeLen bytes of tree, then Len bytes of blob.
type getResponse struct {
	Code    uint8  `msgpack:"c"`
	Msg     string `msgpack:"m,omitempty"`
	Size    int64  `msgpack:"s"`
	TreeLen int64  `msgpack:"t"`
	Len     int64  `msgpack:"l"`
	// via is the relay the answer came through, if any (not on the wire).
	via peer.ID
}

// maxRequest bounds a request frame: a ref and a few integers.
const maxRequest = 4 << 10
