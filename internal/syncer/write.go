package syncer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/syncgroup"
)

// Put writes a row and pushes it to the members that are online.
func (s *Syncer) Put(id syncnode.GroupID, key string, value []byte) (syncgroup.Row, error) {
	if err := s.CheckPut(id, key, value); err != nil {
		return syncgroup.Row{}, err
	}
	return s.write(id, func(g *syncgroup.Group) (syncgroup.Row, error) { return g.Put(key, value, time.Now()) })
}

// PutAll writes every row of kvs in group id as one batch, or none (see
// syncgroup.Group.PutAll), saves them in one write and pushes them.
func (s *Syncer) PutAll(id syncnode.GroupID, kvs []syncgroup.KV) ([]syncgroup.Row, error) {
	for i, kv := range kvs {
		if len(kv.Value) > MaxValue {
			return nil, fmt.Errorf("row %d (%q): %w: %d bytes, at most %d", i+1, kv.Key, ErrTooLarge, len(kv.Value), MaxValue)
		}
	}
	return s.writeAll(id, func(g *syncgroup.Group) ([]syncgroup.Row, error) { return g.PutAll(kvs, time.Now()) })
}

// CheckPut reports whether Put would accept value at key in group id —
// a known group, a key under its prefixes, this node a member, a msgpack
// value of at most MaxValue bytes — changing nothing.
func (s *Syncer) CheckPut(id syncnode.GroupID, key string, value []byte) error {
	if len(value) > MaxValue {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(value), MaxValue)
	}
	return s.With(id, func(g *syncgroup.Group) error { return g.CheckPut(key, value) })
}

// Delete writes a tombstone and pushes it.
func (s *Syncer) Delete(id syncnode.GroupID, key string) (syncgroup.Row, error) {
	return s.write(id, func(g *syncgroup.Group) (syncgroup.Row, error) { return g.Delete(key, time.Now()) })
}

// SetName writes this device's name into its membership row of group id,
// if it differs, and pushes the row.
func (s *Syncer) SetName(id syncnode.GroupID, name string) error {
	_, err := s.updateSelf(id, func(g *syncgroup.Group) (syncgroup.Row, bool, error) { return g.SetName(name, time.Now()) })
	return err
}

// SetAddrs writes the addresses this device is reachable at into its
// membership row of group id, if they changed, and pushes the row; it
// reports whether they changed.
func (s *Syncer) SetAddrs(id syncnode.GroupID, addrs []string) (bool, error) {
	return s.updateSelf(id, func(g *syncgroup.Group) (syncgroup.Row, bool, error) { return g.SetAddrs(addrs, time.Now()) })
}

// updateSelf writes what update changes in this device's membership row,
// if anything, and pushes it, reporting whether it wrote.
func (s *Syncer) updateSelf(id syncnode.GroupID, update func(*syncgroup.Group) (syncgroup.Row, bool, error)) (bool, error) {
	_, err := s.write(id, func(g *syncgroup.Group) (syncgroup.Row, error) {
		row, changed, err := update(g)
		if err == nil && !changed {
			err = errNothingWritten
		}
		return row, err
	})
	if errors.Is(err, errNothingWritten) {
		return false, nil
	}
	return err == nil, err
}

// errNothingWritten tells write that its function had nothing to write.
var errNothingWritten = errors.New("syncer: nothing to write")

// write applies a local write under the group's lock and spreads it.
func (s *Syncer) write(id syncnode.GroupID, fn func(*syncgroup.Group) (syncgroup.Row, error)) (syncgroup.Row, error) {
	rows, err := s.writeAll(id, func(g *syncgroup.Group) ([]syncgroup.Row, error) {
		row, err := fn(g)
		return []syncgroup.Row{row}, err
	})
	if err != nil {
		return syncgroup.Row{}, err
	}
	return rows[0], nil
}

// writeAll is write for any number of rows, which may be none.
func (s *Syncer) writeAll(id syncnode.GroupID, fn func(*syncgroup.Group) ([]syncgroup.Row, error)) ([]syncgroup.Row, error) {
	_, done, err := s.enter(context.Background())
	if err != nil {
		return nil, err
	}
	defer done()
	r, err := s.replica(id)
	if err != nil {
		return nil, err
	}
	r.applying.Lock()
	r.mu.Lock()
	rows, err := fn(r.g)
	if err == nil && len(rows) > 0 {
		err = s.save(r, rows)
	}
	r.mu.Unlock()
	r.applying.Unlock()
	if err == nil && len(rows) > 0 {
		err = s.flush()
	}
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	s.spread(id, rows, "")
	return rows, nil
}
