package feed

import (
	"context"
	"log/slog"
	"time"
)

// PrunePeriod is how often Keep drops events past the retention;
// SyncDelay is how long entries that no sync followed wait for one before
// Keep syncs them itself.
const (
	PrunePeriod = time.Minute
	SyncDelay   = 2 * time.Millisecond
)

// Keep puts on stable storage, and so hands to watchers, the entries of
// saves that no sync followed (a node syncs rows received from peers only
// before it sends them on), as they come, calling sync, which must sync
// the database; and it drops the events beyond the retention every
// PrunePeriod. It returns when ctx ends.
func (l *Log) Keep(ctx context.Context, sync func() error, log *slog.Logger) {
	prune := time.NewTicker(PrunePeriod)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.Unsynced():
			// A writer that waits for stable storage syncs at once; give
			// it the moment, then sync what is left, sharing the store's
			// flush with the writers'.
			select {
			case <-ctx.Done():
				return
			case <-time.After(SyncDelay):
			}
			if l.Pending() {
				if err := sync(); err != nil {
					log.Error("feed not synced", "err", err)
				}
			}
		case <-prune.C:
			if err := l.Prune(); err != nil {
				log.Error("feed not pruned", "err", err)
			}
		}
	}
}
