package shares

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/p2p"
)

// fuzzMsg feeds bytes to the share protocol's decoder for one message
// type: every input decodes or fails as a framing or message error.
func fuzzMsg[T any](f *testing.F, seeds ...T) {
	for _, s := range seeds {
		var buf bytes.Buffer
		if err := p2p.WriteMsg(&buf, s, 0); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v T
		err := p2p.ReadMsg(bufio.NewReader(bytes.NewReader(b)), nil, &v, p2p.MaxFrame, 0)
		if err != nil && !errors.Is(err, p2p.ErrFrameTooLarge) && !errors.Is(err, p2p.ErrBadMessage) && !strings.Contains(err.Error(), "read frame") {
			t.Fatalf("unclassified error: %v", err)
		}
	})
}

func FuzzRequest(f *testing.F) {
	fuzzMsg(f, request{Op: "offer", Ref: syncnode.RefFromHash([32]byte{7}), Group: "photos"},
		request{Op: opOffers, Items: []request{{Ref: syncnode.RefFromHash([32]byte{7}), Group: "photos", Proof: []byte{1, 2}}}})
}

func FuzzResponse(f *testing.F) {
	fuzzMsg(f, response{Transfer: &ownership.Transfer{Group: "photos", N: 1}, Keeps: true}, response{Err: "refused"},
		response{Items: []response{{Nonce: make([]byte, ProofSize)}, {Err: "refused"}}})
}
