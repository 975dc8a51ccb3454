package feed

import (
	"errors"
	"testing"
)

// FuzzParseMarker: any string parses to a cursor or ErrBadMarker, never a
// panic, and a cursor parsed writes back as the same marker.
func FuzzParseMarker(f *testing.F) {
	for _, c := range []cursor{
		{Pos: 7, Done: true},
		{Pos: 3, Spans: []span{{Base: 3, Upto: "k/a"}, {Base: 9, Upto: "k/b"}}},
		{Pos: 3, Spans: []span{{Base: 3, Upto: "\x00m/x"}, {Base: 9, Open: true}}, Done: true},
	} {
		f.Add(string(c.marker("abc", 2)))
	}
	f.Add("abc.g1.p1.2:zz")
	f.Add("abc.g1.p5.2:61.~")
	f.Fuzz(func(t *testing.T, m string) {
		c, gen, err := parseMarker(Marker(m), "abc")
		if err != nil {
			if !errors.Is(err, ErrBadMarker) {
				t.Fatalf("%q: %v is not ErrBadMarker", m, err)
			}
			return
		}
		again, gen2, err := parseMarker(c.marker("abc", gen), "abc")
		if err != nil || gen2 != gen || again.Pos != c.Pos || again.Done != c.Done || len(again.Spans) != len(c.Spans) {
			t.Fatalf("%q → %+v does not write back: %+v, %v", m, c, again, err)
		}
	})
}

// TestCursorMergesSpans: spans the log has passed merge, and the cursor is
// free once the replay is done and every span is current.
func TestCursorMergesSpans(t *testing.T) {
	var c cursor
	c.replayed(10, "a")
	c.replayed(12, "c")
	c.finish(15)
	for _, w := range []struct {
		pos  uint64
		key  string
		want bool
	}{{11, "a", true}, {11, "b", false}, {12, "c", false}, {13, "c", true}, {14, "z", false}, {16, "z", true}} {
		if got := c.wants(w.pos, w.key); got != w.want {
			t.Errorf("wants(%d, %q) = %v for %+v", w.pos, w.key, got, c)
		}
	}
	c.advance(12)
	if len(c.Spans) != 2 || c.Spans[0].Base != 12 {
		t.Fatalf("after 12: %+v", c)
	}
	c.advance(15)
	if c.Spans != nil || c.Pos != 15 {
		t.Fatalf("after 15: %+v, want free at 15", c)
	}
}
