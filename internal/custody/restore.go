package custody

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/syncnode/syncnode"
)

// restorer holds the blobs whose copy this node must get back from a peer:
// shares or a user pin found without a copy at open, a copy the scrubber
// found damaged.
type restorer struct {
	mu   sync.Mutex
	want map[syncnode.BlobRef]*restoreState
	wake chan struct{}
}

type restoreState struct {
	next  time.Time
	delay time.Duration
}

func (r *restorer) init() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.want == nil {
		r.want = map[syncnode.BlobRef]*restoreState{}
		r.wake = make(chan struct{}, 1)
	}
}

// done forgets ref: its copy is back.
func (r *restorer) done(ref syncnode.BlobRef) {
	r.init()
	r.mu.Lock()
	delete(r.want, ref)
	r.mu.Unlock()
}

// pending returns the blobs still being restored.
func (r *restorer) pending() []syncnode.BlobRef {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []syncnode.BlobRef
	for ref := range r.want {
		out = append(out, ref)
	}
	slices.SortFunc(out, func(a, b syncnode.BlobRef) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
	return out
}

// Restore queues ref's copy for restoring from a peer now.
func (c *Custody) Restore(ref syncnode.BlobRef) {
	r := &c.restore
	r.init()
	r.mu.Lock()
	if r.want[ref] == nil {
		r.want[ref] = &restoreState{next: time.Now()}
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Restoring returns the blobs whose copy this node is getting back from
// its peers (a damaged copy, or shares found without a copy).
func (c *Custody) Restoring() []syncnode.BlobRef { return c.restore.pending() }

// Restored forgets ref's restore: its copy is back.
func (c *Custody) Restored(ref syncnode.BlobRef) { c.restore.done(ref) }

// runRestore fetches the blobs queued for restoring, each again after a
// delay doubling from one second to ten minutes while no peer has it.
func (c *Custody) runRestore() {
	r := &c.restore
	r.init()
	for {
		now := time.Now()
		var due []syncnode.BlobRef
		wait := 10 * time.Minute
		r.mu.Lock()
		for ref, st := range r.want {
			if d := st.next.Sub(now); d <= 0 {
				due = append(due, ref)
			} else {
				wait = min(wait, d)
			}
		}
		r.mu.Unlock()
		for _, ref := range due {
			ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RestoreTimeout)
			err := c.peers.Refetch(ctx, ref)
			cancel()
			if c.ctx.Err() != nil {
				return
			}
			r.mu.Lock()
			if st := r.want[ref]; st != nil {
				if err == nil {
					delete(r.want, ref)
				} else {
					st.delay = min(max(2*st.delay, time.Second), 10*time.Minute)
					st.next = time.Now().Add(st.delay)
					wait = min(wait, st.delay)
				}
			}
			r.mu.Unlock()
			if err == nil {
				c.log.Info("copy restored from a peer", "blob", ref)
			} else {
				c.log.Warn("copy not restored yet", "blob", ref, "err", err)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-r.wake:
			t.Stop()
		case <-t.C:
		}
	}
}
