package handoff

import (
	"context"
	"time"
)

// recoverTransfers settles share transfers a crash or a lost answer left
// in escrow: at start, then with a delay that doubles from one second to
// ten while any remain unsettled. Otherwise it sleeps until an offer puts
// shares in escrow (and then gives the acceptor 2 × IOTimeout to settle by
// itself), or a minute passes.
func (h *Handoffs) recoverTransfers() {
	delay := time.Second
	for {
		pending, err := h.shares.Unfinished()
		if err == nil && pending > 0 {
			ctx, cancel := context.WithTimeout(h.ctx, 2*h.cfg.IOTimeout)
			k, err := h.shares.Recover(ctx)
			cancel()
			h.log.Info("share transfers recovered", "settled", k, "pending", pending, "err", err)
			if k == pending {
				delay = time.Second
			} else {
				delay = min(2*delay, 10*time.Second)
			}
		} else {
			delay = time.Minute
		}
		t := time.NewTimer(delay)
		select {
		case <-h.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-h.shares.Escrowed():
			t.Stop()
			if !h.work.Sleep(2 * h.cfg.IOTimeout) {
				return
			}
		}
	}
}
