// Package workgroup runs a component's goroutines and calls so that its
// Close can stop them and wait until every one has returned.
package workgroup

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrStopped reports a call made once the group was stopping.
var ErrStopped = errors.New("workgroup: stopped")

// Group is the goroutines and calls of one component. Its zero value is
// not usable: make one with New.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// New returns a running group.
func New() *Group {
	g := &Group{}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g
}

// Context ends when the group stops.
func (g *Group) Context() context.Context { return g.ctx }

// Go runs fn in a goroutine that Wait waits for, and reports whether it
// did: once Stop has begun it runs nothing.
func (g *Group) Go(fn func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn()
	}()
	return true
}

// Enter starts a call that Wait waits for; it fails with ErrStopped once
// Stop has begun. The context returned ends with ctx or when Stop begins;
// done must be called when the call ends.
func (g *Group) Enter(ctx context.Context) (_ context.Context, done func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ctx, nil, ErrStopped
	}
	g.wg.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(g.ctx, cancel)
	return ctx, func() { stop(); cancel(); g.wg.Done() }, nil
}

// Stop refuses new goroutines and calls and ends the group's context.
func (g *Group) Stop() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.cancel()
}

// Wait waits for every goroutine and call of the group to return.
func (g *Group) Wait() { g.wg.Wait() }

// Close stops the group and waits for it.
func (g *Group) Close() {
	g.Stop()
	g.Wait()
}

// Sleep waits d, and reports false if the group stopped meanwhile.
func (g *Group) Sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-g.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
