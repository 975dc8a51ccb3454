package workgroup

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

func TestCloseWaitsAndRefusesAfter(t *testing.T) {
	g := New()
	var ran atomic.Int32
	release := make(chan struct{})
	if !g.Go(func() { <-release; ran.Add(1) }) {
		t.Fatal("Go refused on a running group")
	}
	ctx, done, err := g.Enter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { g.Close(); close(closed) }()
	<-ctx.Done() // Stop ends the calls' contexts
	select {
	case <-closed:
		t.Fatal("Close returned while a goroutine and a call were running")
	default:
	}
	close(release)
	done()
	<-closed
	if ran.Load() != 1 {
		t.Fatal("the goroutine did not run")
	}
	if g.Go(func() { ran.Add(1) }) {
		t.Fatal("Go ran after Close")
	}
	if _, _, err := g.Enter(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Enter after Close: %v, want ErrStopped", err)
	}
}
