package control

import (
	"context"
	"sync"
	"time"

	"github.com/syncnode/syncnode/internal/api"
)

// historyLen and historyStep make the status page's graph: a sample every
// 10 s for the last hour.
const (
	historyLen  = 360
	historyStep = 10 * time.Second
)

// history keeps the last historyLen samples of the node's transfer rates
// and fetch queue length. It is pure data; sample drives it.
type history struct {
	mu      sync.Mutex
	samples []api.Sample // oldest first, at most historyLen
	last    counters
	lastAt  time.Time
}

// counters are the cumulative figures a sample is taken from.
type counters struct {
	in, out int64
	queue   int
}

// add records the counters read at now: the rates are the bytes moved
// since the previous reading over the time between them.
func (h *history) add(now time.Time, c counters) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lastAt.IsZero() {
		secs := now.Sub(h.lastAt).Seconds()
		s := api.Sample{Time: now.UTC(), Queue: c.queue}
		if secs > 0 {
			s.InRate = float64(max(0, c.in-h.last.in)) / secs
			s.OutRate = float64(max(0, c.out-h.last.out)) / secs
		}
		h.samples = append(h.samples, s)
		if len(h.samples) > historyLen {
			h.samples = h.samples[len(h.samples)-historyLen:]
		}
	}
	h.last, h.lastAt = c, now
}

// list returns the samples, oldest first.
func (h *history) list() []api.Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]api.Sample{}, h.samples...)
}

// sample reads the counters every step until ctx ends.
func (h *history) sample(ctx context.Context, step time.Duration, read func() counters) {
	h.add(time.Now(), read())
	t := time.NewTicker(step)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.add(now, read())
		}
	}
}
