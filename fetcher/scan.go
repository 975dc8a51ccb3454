package fetcher

import (
	"context"
	"log/slog"

	"github.com/syncnode/syncnode/internal/clock"
)

// RunScans calls scan after cfg.FirstScan, then again
// cfg.ScanInterval + cfg.ScanFactor × (the last scan's duration) after each
// scan ends, until ctx is done. A failed scan is logged and the schedule
// goes on.
func RunScans(ctx context.Context, cfg Config, clk clock.Clock, log *slog.Logger, scan func(context.Context) error) {
	first, last := true, 0*cfg.FirstScan
	for {
		t := clk.NewTimer(cfg.ScanDelay(first, last))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		first = false
		start := clk.Now()
		if err := scan(ctx); err != nil && ctx.Err() == nil {
			log.Error("blob scan failed", "err", err)
		}
		last = clk.Now().Sub(start)
	}
}
