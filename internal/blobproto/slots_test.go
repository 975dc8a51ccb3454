package blobproto

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestFairSlotsShareAmongPeers(t *testing.T) {
	f := newFairSlots(4, 2, 8, 3)
	hog, a, b := peer.ID("hog"), peer.ID("a"), peer.ID("b")
	for range 2 {
		if err := f.acquire(hog, 0); err != nil {
			t.Fatal(err)
		}
	}
	// The hog's third request waits (its share is 2) though slots are free.
	got := make(chan error, 8)
	for range 3 {
		go func() { got <- f.acquire(hog, time.Hour) }()
	}
	waitQueued := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, q := f.counts(); q == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue never reached %d", n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitQueued(3)
	if err := f.acquire(hog, time.Hour); !errors.Is(err, errBusy) {
		t.Fatalf("the hog's fourth queued request: %v, want busy", err)
	}
	// Others take the free slots at once.
	if err := f.acquire(a, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.acquire(b, 0); err != nil {
		t.Fatal(err)
	}
	// All 4 run; a waits behind the hog's 3, but a freed slot goes to the
	// waiting peer running the fewest: a (1 running) before the hog (2).
	go func() { got <- f.acquire(a, time.Hour) }()
	waitQueued(4)
	f.release(b)
	waitQueued(3)
	if r, _ := f.counts(); r != 4 {
		t.Fatalf("running %d, want 4", r)
	}
	f.mu.Lock()
	ar := f.peers[a].running
	f.mu.Unlock()
	if ar != 2 {
		t.Fatalf("the freed slot went to the hog; a runs %d", ar)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

func TestFairSlotsWaitEnds(t *testing.T) {
	f := newFairSlots(1, 1, 1, 1)
	if err := f.acquire("a", 0); err != nil {
		t.Fatal(err)
	}
	if err := f.acquire("b", 10*time.Millisecond); !errors.Is(err, errBusy) {
		t.Fatalf("wait ended: %v, want busy", err)
	}
	if r, q := f.counts(); r != 1 || q != 0 {
		t.Fatalf("after the wait: running %d, queued %d", r, q)
	}
	f.release("a")
	if err := f.acquire("b", 0); err != nil {
		t.Fatal(err)
	}
}
