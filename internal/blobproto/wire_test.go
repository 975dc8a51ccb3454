package blobproto

import (
	"bufio"
	"bytes"
	"errors"
	"testing"

	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/signpost"
)

func frame(t testing.TB, v any) []byte {
	var buf bytes.Buffer
	if err := p2p.WriteMsg(&buf, v, 0); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fuzzDecode feeds bytes to ReadMsg for one message type: every input either
// decodes or fails with a framing or message error; nothing panics and no
// frame beyond the limit is read.
func fuzzDecode[T any](f *testing.F, seeds ...T) {
	for _, s := range seeds {
		f.Add(frame(f, s))
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		var v T
		err := p2p.ReadMsg(bufio.NewReader(bytes.NewReader(b)), nil, &v, p2p.MaxFrame, 0)
		if err != nil && !errors.Is(err, p2p.ErrFrameTooLarge) && !errors.Is(err, p2p.ErrBadMessage) && !bytes.Contains([]byte(err.Error()), []byte("read frame")) {
			t.Fatalf("unclassified error: %v", err)
		}
	})
}

func FuzzGetRequest(f *testing.F) {
	fuzzDecode(f, getRequest{Ref: make([]byte, 32), Off: 16384, Len: 1 << 20, Tree: true})
}

func FuzzGetResponse(f *testing.F) {
	fuzzDecode(f, getResponse{Size: 1 << 30, TreeLen: 4096, Len: 1 << 20}, getResponse{Code: codeBusy, Msg: "busy"})
}

func FuzzHaveRequest(f *testing.F) { fuzzDecode(f, haveRequest{Ref: make([]byte, 32)}) }

func FuzzHaveResponse(f *testing.F) {
	w := signpost.Wire{Groups: []string{"g"}, Locs: []signpost.WireLoc{{Peer: []byte("x"), Addrs: []string{"/ip4/127.0.0.1/tcp/1"}}}}
	fuzzDecode(f, haveResponse{Have: true, Size: 5}, haveResponse{Code: codeNotFound, Signpost: &w})
}

func TestOversizedFrameIsRefused(t *testing.T) {
	b := []byte{0x80, 0x80, 0x80, 0x01} // announces 2 MiB
	var v getRequest
	if err := p2p.ReadMsg(bufio.NewReader(bytes.NewReader(b)), nil, &v, p2p.MaxFrame, 0); !errors.Is(err, p2p.ErrFrameTooLarge) {
		t.Fatalf("2 MiB frame: %v", err)
	}
	if err := p2p.ReadMsg(bufio.NewReader(bytes.NewReader([]byte{3, 0xc1, 0, 0})), nil, &v, p2p.MaxFrame, 0); !errors.Is(err, p2p.ErrBadMessage) {
		t.Fatalf("garbage frame: %v", err)
	}
}
