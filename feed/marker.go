package feed

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Marker is where a watch stands, as an opaque string: pass the marker of
// the last event handled as Options.From to resume just after it.
type Marker string

// maxSpans bounds the spans a marker carries; more are merged.
const maxSpans = 16

// span says that the state of the keys up to Upto (all keys when Open)
// was delivered as it stood at log position Base.
type span struct {
	Base uint64
	Upto string
	Open bool
}

// cursor is where a watch stands: every log entry up to Pos was handled.
// While Spans is not nil the replay's keys were delivered at the spans'
// bases, and a log entry is delivered only if it is newer than the base
// of its key's span; Done reports the replay finished (the last span is
// Open). A fresh cursor (no spans, not done) has yet to replay.
type cursor struct {
	Pos   uint64
	Spans []span
	Done  bool
}

// covers returns the span of key, or nil if the replay has not reached it.
func (c *cursor) spanOf(key string) *span {
	for i := range c.Spans {
		if c.Spans[i].Open || key <= c.Spans[i].Upto {
			return &c.Spans[i]
		}
	}
	return nil
}

// wants reports whether a row entry at pos for key is news to the
// watcher, given what the replay delivered.
func (c *cursor) wants(pos uint64, key string) bool {
	s := c.spanOf(key)
	return s == nil || pos > s.Base
}

// advance moves the cursor past log position pos, merging the spans that
// are now all current.
func (c *cursor) advance(pos uint64) {
	c.Pos = pos
	n := 0
	for n < len(c.Spans) && c.Spans[n].Base <= pos {
		n++
	}
	if n == 0 {
		return
	}
	if n == len(c.Spans) && c.Done {
		c.Spans = nil
		return
	}
	merged := span{Base: pos, Upto: c.Spans[n-1].Upto, Open: c.Spans[n-1].Open}
	c.Spans = append([]span{merged}, c.Spans[n:]...)
}

// addSpan records the replay's delivery of key at base.
func (c *cursor) replayed(base uint64, key string) {
	if k := len(c.Spans); k > 0 && c.Spans[k-1].Base == base {
		c.Spans[k-1].Upto = key
		return
	}
	if len(c.Spans) == 0 {
		c.Pos = base
	}
	c.Spans = append(c.Spans, span{Base: base, Upto: key})
	if len(c.Spans) > maxSpans {
		// Merging two spans at the older base repeats some changes but
		// never misses one.
		c.Spans[1].Base = c.Spans[0].Base
		c.Spans = c.Spans[1:]
	}
}

// finish records the end of the replay at base.
func (c *cursor) finish(base uint64) {
	if len(c.Spans) == 0 {
		c.Pos = base
	}
	c.Spans = append(c.Spans, span{Base: base, Open: true})
	c.Done = true
	c.advance(c.Pos)
}

// marker encodes c for generation gen of the log named id: "ID.gGEN.pPOS"
// then, for each span, ".BASE:HEXKEY" (".BASE:*" when open), then ".~"
// while the replay runs.
func (c cursor) marker(id string, gen uint64) Marker {
	var b strings.Builder
	b.WriteString(id)
	b.WriteString(".g")
	b.WriteString(strconv.FormatUint(gen, 10))
	b.WriteString(".p")
	b.WriteString(strconv.FormatUint(c.Pos, 10))
	for _, s := range c.Spans {
		b.WriteByte('.')
		b.WriteString(strconv.FormatUint(s.Base, 10))
		b.WriteByte(':')
		if s.Open {
			b.WriteByte('*')
		} else {
			b.WriteString(hex.EncodeToString([]byte(s.Upto)))
		}
	}
	if !c.Done {
		b.WriteString(".~")
	}
	return Marker(b.String())
}

// parseMarker decodes m, which must come from the log named id, and
// returns the generation that wrote it.
func parseMarker(m Marker, id string) (cursor, uint64, error) {
	parts := strings.Split(string(m), ".")
	bad := func(why string) (cursor, uint64, error) {
		return cursor{}, 0, fmt.Errorf("%w: %q: %s", ErrBadMarker, m, why)
	}
	if len(parts) < 3 || len(parts) > maxSpans+4 {
		return bad("not a marker")
	}
	if parts[0] != id {
		return bad("from another log (the node's database was replaced)")
	}
	if !strings.HasPrefix(parts[1], "g") {
		return bad("no generation")
	}
	gen, err := strconv.ParseUint(parts[1][1:], 10, 64)
	if err != nil {
		return bad("generation")
	}
	parts = parts[1:]
	if !strings.HasPrefix(parts[1], "p") {
		return bad("no position")
	}
	pos, err := strconv.ParseUint(parts[1][1:], 10, 64)
	if err != nil {
		return bad("position")
	}
	c := cursor{Pos: pos, Done: true}
	rest := parts[2:]
	if n := len(rest); n > 0 && rest[n-1] == "~" {
		c.Done, rest = false, rest[:n-1]
	}
	for i, p := range rest {
		base, key, ok := strings.Cut(p, ":")
		s := span{}
		if s.Base, err = strconv.ParseUint(base, 10, 64); !ok || err != nil {
			return bad("span")
		}
		if key == "*" {
			if i != len(rest)-1 || !c.Done {
				return bad("open span not last")
			}
			s.Open = true
		} else {
			k, err := hex.DecodeString(key)
			if err != nil {
				return bad("span key")
			}
			s.Upto = string(k)
		}
		if i > 0 && (s.Base < c.Spans[i-1].Base || s.Upto <= c.Spans[i-1].Upto && !s.Open) {
			return bad("spans out of order")
		}
		c.Spans = append(c.Spans, s)
	}
	if len(c.Spans) > 0 && c.Spans[0].Base < c.Pos {
		return bad("span behind position")
	}
	if c.Done && len(c.Spans) > 0 && !c.Spans[len(c.Spans)-1].Open {
		return bad("finished replay without an open span")
	}
	return c, gen, nil
}

// clamp moves the cursor back to upTo, the last position known to have
// survived: entries it handled past it may be gone, and their positions
// hold other events now. Spans fall back too, so what follows upTo is
// delivered again (a repeat at worst, never a miss).
func (c *cursor) clamp(upTo uint64) {
	c.Pos = min(c.Pos, upTo)
	for i := range c.Spans {
		c.Spans[i].Base = min(c.Spans[i].Base, upTo)
	}
}
