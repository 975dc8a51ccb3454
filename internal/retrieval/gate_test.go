package retrieval

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
)

func TestGateAdmitsByPriorityThenArrival(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newGate(1)
		if err := g.acquire(t.Context(), UrgencyNormal); err != nil {
			t.Fatal(err)
		}
		var order []int
		done := make(chan struct{})
		prios := []int{UrgencyBackground, UrgencyNormal, UrgencyHigh, UrgencyNormal, UrgencyBackground}
		for i, p := range prios {
			go func() {
				if err := g.acquire(context.Background(), p); err != nil {
					t.Error(err)
				}
				order = append(order, i)
				g.release()
				done <- struct{}{}
			}()
			synctest.Wait() // waiter i is queued before waiter i+1
		}
		// A cancelled waiter leaves the queue without taking a slot.
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error)
		go func() { errc <- g.acquire(ctx, UrgencyHigh+1) }()
		synctest.Wait()
		cancel()
		if err := <-errc; err == nil {
			t.Fatal("cancelled acquire succeeded")
		}
		g.release()
		for range prios {
			<-done
		}
		if want := []int{2, 1, 3, 0, 4}; !slices.Equal(order, want) {
			t.Fatalf("admitted %v, want %v", order, want)
		}
	})
}
