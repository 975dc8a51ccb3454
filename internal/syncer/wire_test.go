package syncer

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// fuzzFrame decodes arbitrary bytes as a T frame: errors are fine, panics
// and runaway allocations are not.
func fuzzFrame[T any](f *testing.F, seed T) {
	b, _ := msgpack.Marshal(seed)
	var buf bytes.Buffer
	p2p.WriteFrame(&buf, b, 0)
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		var v T
		p2p.ReadMsg(bufio.NewReader(bytes.NewReader(in)), nil, &v, p2p.MaxFrame, 0)
	})
}

func FuzzHello(f *testing.F) {
	fuzzFrame(f, hello{Group: "g", VV: syncgroup.VersionVector{"p": 3}, Self: &syncgroup.Row{Key: "\x00m/p", Value: []byte{0x80}}})
}

func FuzzBatch(f *testing.F) {
	fuzzFrame(f, batch{VV: syncgroup.VersionVector{"p": 1}, Rows: []syncgroup.Row{{Key: "photos/1", Value: []byte{0xa1, 'x'}, Seq: 1}}, Done: true})
}

func FuzzJoinRequest(f *testing.F) {
	fuzzFrame(f, joinRequest{Invitation: syncgroup.Invitation{Group: "g", Joiner: "j", Admin: "a", Sig: []byte{1}}})
}

func FuzzPush(f *testing.F) {
	prio := syncnode.Priority{DevType: syncnode.Normal, Distance: 2}
	fuzzFrame(f, pushMsg{Group: "g", Rows: []syncgroup.Row{{Key: "photos/1", Value: []byte{0xa1, 'x'}, Seq: 1}}, Prio: &prio})
}

func FuzzPushAck(f *testing.F) {
	fuzzFrame(f, pushAck{Prios: map[syncnode.GroupID]syncnode.Priority{"g": {DevType: syncnode.Server}}})
}
