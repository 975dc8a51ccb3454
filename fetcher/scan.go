package fetcher

import (
	"context"
	"log/slog"
	"time"
)

// RunScans calls scan after cfg.FirstScan, then again
// cfg.ScanInterval + cfg.ScanFactor × (the last scan's duration) after each
// scan ends, until ctx is done. A failed scan is logged and the schedule
// goes on.
func RunScans(ctx context.Context, cfg Config, log *slog.Logger, scan func(context.Context) error) {
	first, last := true, 0*cfg.FirstScan
	for {
		t := time.NewTimer(cfg.ScanDelay(first, last))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		first = false
		start := time.Now()
		if err := scan(ctx); err != nil && ctx.Err() == nil {
			log.Error("blob scan failed", "err", err)
		}
		last = time.Since(start)
	}
}
