package feed

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/syncnode/syncnode"
)

// Marker is where a watch stands, as an opaque string: pass the marker of
// the last event handled as Options.From to resume just after it.
type Marker string

// maxMarkerKey bounds the key a marker carries, so that a marker always
// fits in a URL; a longer key is cut, which may repeat a row on resume but
// never misses one (see cursor.Upto).
const maxMarkerKey = 512

// cursor is where a watch stands: every log entry up to Pos was handled.
// Until the replay is Done, the rows with keys up to Upto (once Begun)
// were delivered as they stood at Pos, and the others are still to come
// from the replay's snapshots.
type cursor struct {
	Pos   uint64
	Upto  string
	Begun bool
	Done  bool
}

// wants reports whether a row entry for key is news to the watcher.
func (c *cursor) wants(key string) bool { return c.Done || c.Begun && key <= c.Upto }

// scope names what a marker was issued for: a group and a prefix.
func scope(g syncnode.GroupID, prefix string) string {
	h := sha256.Sum256([]byte(string(g) + "\x00" + prefix))
	return hex.EncodeToString(h[:4])
}

// marker encodes c for generation gen of the log named id, watching the
// scope sc: "ID.gGEN.sSCOPE.pPOS", then while the replay runs ".~" and,
// once begun, ".kHEXKEY".
func (c cursor) marker(id string, gen uint64, sc string) Marker {
	var b strings.Builder
	fmt.Fprintf(&b, "%s.g%d.s%s.p%d", id, gen, sc, c.Pos)
	if !c.Done {
		b.WriteString(".~")
		if c.Begun {
			upto := c.Upto
			if len(upto) > maxMarkerKey {
				upto = upto[:maxMarkerKey] // sorts before the key: a repeat, not a miss
			}
			b.WriteString(".k")
			b.WriteString(hex.EncodeToString([]byte(upto)))
		}
	}
	return Marker(b.String())
}

// parseMarker decodes m, which must come from the log named id and have
// been issued for scope sc (an empty sc accepts any), and returns the
// generation that wrote it.
func parseMarker(m Marker, id, sc string) (cursor, uint64, error) {
	bad := func(why string) (cursor, uint64, error) {
		return cursor{}, 0, fmt.Errorf("%w: %s", ErrBadMarker, why)
	}
	if len(m) > 64+2*maxMarkerKey {
		return bad("too long")
	}
	parts := strings.Split(string(m), ".")
	if len(parts) < 4 || len(parts) > 6 {
		return bad(fmt.Sprintf("%q is not a marker", m))
	}
	if parts[0] != id {
		return bad("from another log (another node, or this node's database was replaced)")
	}
	num := func(s, tag string) (uint64, bool) {
		if !strings.HasPrefix(s, tag) {
			return 0, false
		}
		n, err := strconv.ParseUint(s[len(tag):], 10, 64)
		return n, err == nil
	}
	gen, ok := num(parts[1], "g")
	if !ok {
		return bad("no generation")
	}
	if !strings.HasPrefix(parts[2], "s") {
		return bad("no scope")
	}
	if sc != "" && parts[2][1:] != sc {
		return bad("issued for another group or prefix")
	}
	c := cursor{Done: true}
	if c.Pos, ok = num(parts[3], "p"); !ok {
		return bad("no position")
	}
	rest := parts[4:]
	if len(rest) > 0 {
		if rest[0] != "~" {
			return bad("trailing data")
		}
		c.Done, rest = false, rest[1:]
	}
	if len(rest) > 0 {
		if !strings.HasPrefix(rest[0], "k") {
			return bad("trailing data")
		}
		k, err := hex.DecodeString(rest[0][1:])
		if err != nil {
			return bad("key")
		}
		c.Upto, c.Begun = string(k), true
	}
	return c, gen, nil
}

// clamp moves the cursor back to upTo, the last position known to have
// survived: entries it handled past it may be gone, and their positions
// hold other events now.
func (c *cursor) clamp(upTo uint64) { c.Pos = min(c.Pos, upTo) }
