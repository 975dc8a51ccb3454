// Package collect collects the blobs that no live row of a group
// references any more: once a grace period has passed, the group's shares
// of such a blob dissolve, and a copy that nothing else keeps is deleted.
package collect

import (
	"time"
)

// Action is what a pass does about one blob in one group.
type Action int

// The actions of a pass.
const (
	// Keep: nothing to do.
	Keep Action = iota
	// Clear: a row references the blob again; forget when it stopped.
	Clear
	// Note: no row references it; remember from now.
	Note
	// Wait: unreferenced, and the grace has not run out.
	Wait
	// Collect: unreferenced for the whole grace, while this node was up
	// and after it last heard from the group.
	Collect
)

// Facts are what a pass knows of one blob in one group.
type Facts struct {
	// Referenced reports a live row of the group that references it;
	// Seen that this node saw one before. A blob this node never saw a
	// row name (its shares or signpost came first, the row is still on
	// its way) is not unreferenced: it is not referenced yet.
	Referenced, Seen bool
	// Since is when this node found it unreferenced, zero if it has not.
	Since time.Time
	// Opened is when this node last opened: grace counts only while the
	// node is up, when it can hear of a row that references the blob
	// again.
	Opened time.Time
	// Heard is when this node last finished a round with another member
	// of the group; Alone reports a group with no other member.
	Heard time.Time
	Alone bool
	// Watched is when this node, up since, last found the blob
	// unreferenced or opened, whichever is later, as time.Now gives it:
	// the grace must also have passed since then on the clock that only
	// moves forward, so that a wall clock set forward after a boot (from
	// a stale time to the right one) does not cut the grace short.
	Watched time.Time
}

// Due returns when a blob unreferenced since since, on a node opened at
// opened, may be collected.
func Due(since, opened time.Time, grace time.Duration) time.Time {
	if since.Before(opened) {
		since = opened
	}
	return since.Add(grace)
}

// Plan returns what to do at now, given f and the grace.
func Plan(f Facts, now time.Time, grace time.Duration) Action {
	switch {
	case f.Referenced && f.Since.IsZero():
		return Keep
	case f.Referenced:
		return Clear
	case f.Since.IsZero() && !f.Seen:
		return Keep
	case f.Since.IsZero():
		return Note
	}
	due := Due(f.Since, f.Opened, grace)
	// A round finished after the grace ran out brings every row the
	// member had by then: a reference written elsewhere within the grace
	// has had the time to arrive.
	if now.Before(due) || !f.Alone && !f.Heard.After(due) || !f.Watched.IsZero() && now.Sub(f.Watched) < grace {
		return Wait
	}
	return Collect
}
