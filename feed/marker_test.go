package feed

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseMarker: any string parses to a cursor or ErrBadMarker, never a
// panic, and a cursor parsed writes back as the same marker.
func FuzzParseMarker(f *testing.F) {
	for _, c := range []cursor{
		{Pos: 7, Done: true},
		{Pos: 3},
		{Pos: 3, Upto: "k/a", Begun: true},
		{Pos: 9, Upto: "\x00m/x", Begun: true},
	} {
		f.Add(string(c.marker("abc", 2, "s1")))
	}
	f.Add("abc.g1.ss1.p1.~.kzz")
	f.Add("abc.g1.ss1.p5.x")
	f.Fuzz(func(t *testing.T, m string) {
		c, gen, err := parseMarker(Marker(m), "abc", "s1")
		if err != nil {
			if !errors.Is(err, ErrBadMarker) {
				t.Fatalf("%q: %v is not ErrBadMarker", m, err)
			}
			return
		}
		again, gen2, err := parseMarker(c.marker("abc", gen, "s1"), "abc", "s1")
		if err != nil || gen2 != gen || again != c {
			t.Fatalf("%q → %+v does not write back: %+v, %v", m, c, again, err)
		}
	})
}

// TestMarkerCutsALongKeyBefore: a marker names at most maxMarkerKey bytes
// of a key, a prefix that sorts before it: resuming repeats that row, never
// misses it.
func TestMarkerCutsALongKeyBefore(t *testing.T) {
	key := "k/" + strings.Repeat("x", 3*maxMarkerKey)
	c := cursor{Pos: 4, Upto: key, Begun: true}
	m := c.marker("abc", 1, "s")
	if len(m) > 64+2*maxMarkerKey {
		t.Fatalf("marker of %d bytes", len(m))
	}
	back, _, err := parseMarker(m, "abc", "s")
	if err != nil {
		t.Fatal(err)
	}
	if back.Upto >= key || !strings.HasPrefix(key, back.Upto) {
		t.Fatalf("marker's key %q… does not sort before the row's", back.Upto[:10])
	}
}

// TestMarkerOfAnotherScopeRefused: a marker names the group and prefix it
// was issued for.
func TestMarkerOfAnotherScopeRefused(t *testing.T) {
	m := cursor{Pos: 4, Upto: "k/b", Begun: true}.marker("abc", 1, scope("g1", ""))
	if _, _, err := parseMarker(m, "abc", scope("g2", "")); !errors.Is(err, ErrBadMarker) {
		t.Fatalf("another group: %v", err)
	}
	if _, _, err := parseMarker(m, "abc", scope("g1", "k/")); !errors.Is(err, ErrBadMarker) {
		t.Fatalf("another prefix: %v", err)
	}
	if _, _, err := parseMarker(m, "abc", scope("g1", "")); err != nil {
		t.Fatal(err)
	}
}
