package syncgroup

import (
	"fmt"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

// govState is what a path through the chain makes of the group: its
// admins in order of seniority, prefixes, server copies, budget per
// writer and the admissions.
type govState struct {
	admins   []peer.ID
	prefixes []string
	copies   int
	budget   Budget
	adm      map[peer.ID]admission
}

func (s govState) clone() govState {
	s.admins, s.prefixes = slices.Clone(s.admins), slices.Clone(s.prefixes)
	adm := make(map[peer.ID]admission, len(s.adm))
	for p, a := range s.adm {
		adm[p] = a
	}
	s.adm = adm
	return s
}

// rank is p's seniority among the admins: 0 for the most senior, and
// len(admins) for a peer that is not one.
func (s *govState) rank(p peer.ID) int {
	if i := slices.Index(s.admins, p); i >= 0 {
		return i
	}
	return len(s.admins)
}

// allows reports whether admin w may make change c in state s.
func (s *govState) allows(w peer.ID, c Change) error {
	if !slices.Contains(s.admins, w) {
		return fmt.Errorf("%w: %s is not an admin", ErrNotAllowed, w)
	}
	switch c.Op {
	case AddAdmin:
		switch {
		case c.Peer.Validate() != nil:
			return fmt.Errorf("%w: admin to add: %w", ErrBadChange, c.Peer.Validate())
		case slices.Contains(s.admins, c.Peer):
			return fmt.Errorf("%w: %s is an admin already", ErrNotAllowed, c.Peer)
		case len(s.admins) >= MaxAdmins:
			return fmt.Errorf("%w: at most %d admins", ErrNotAllowed, MaxAdmins)
		}
	case RemoveAdmin:
		return s.demotable(w, c.Peer)
	case AddPrefix:
		switch {
		case c.Prefix == "" || strings.HasPrefix(c.Prefix, "\x00"):
			return fmt.Errorf("%w: prefix %q is reserved", ErrBadChange, c.Prefix)
		case slices.Contains(s.prefixes, c.Prefix):
			return fmt.Errorf("%w: the group syncs %q already", ErrNotAllowed, c.Prefix)
		case len(s.prefixes) >= MaxPrefixes:
			return fmt.Errorf("%w: at most %d prefixes", ErrNotAllowed, MaxPrefixes)
		case len(c.Prefix) > 1024:
			return fmt.Errorf("%w: prefix of %d bytes, at most 1024", ErrBadChange, len(c.Prefix))
		}
	case RemovePrefix:
		switch {
		case !slices.Contains(s.prefixes, c.Prefix):
			return fmt.Errorf("%w: the group does not sync %q", ErrNotAllowed, c.Prefix)
		case len(s.prefixes) == 1:
			return fmt.Errorf("%w: a group syncs at least one prefix", ErrNotAllowed)
		}
	case SetCopies:
		if c.N < 1 || c.N > MaxCopies {
			return fmt.Errorf("%w: %d server copies asked; from 1 to %d", ErrBadChange, c.N, MaxCopies)
		}
	case SetBudget:
		if c.Budget == nil {
			return fmt.Errorf("%w: a budget change names no budget", ErrBadChange)
		}
		return c.Budget.Validate()
	case opAdmit, opReadmit:
		if len(c.Nonce) == 0 || len(c.Nonce) > 64 || c.Peer.Validate() != nil || c.DevType > syncnode.Leaf {
			return fmt.Errorf("%w: malformed admission of %s", ErrNotAllowed, c.Peer)
		}
	case opEject:
		if err := c.Peer.Validate(); err != nil {
			return fmt.Errorf("%w: peer to eject: %w", ErrBadChange, err)
		}
		if slices.Contains(s.admins, c.Peer) {
			return s.demotable(w, c.Peer)
		}
	case opRevoke:
		if err := c.Peer.Validate(); err != nil {
			return fmt.Errorf("%w: peer to revoke: %w", ErrBadChange, err)
		}
	default:
		return fmt.Errorf("%w: unknown change %q", ErrBadChange, c.Op)
	}
	return nil
}

// demotable reports whether w may take p's admin role away: p is an
// admin, not the last, and w is p or senior to it.
func (s *govState) demotable(w, p peer.ID) error {
	switch {
	case !slices.Contains(s.admins, p):
		return fmt.Errorf("%w: %s is not an admin", ErrNotAllowed, p)
	case len(s.admins) == 1:
		return fmt.Errorf("%w: %s is its only admin; add another first", ErrLastAdmin, p)
	case w != p && s.rank(w) > s.rank(p):
		return fmt.Errorf("%w: %s is senior to %s; only it, or an admin senior to it, removes it", ErrNotAllowed, p, w)
	}
	return nil
}

// apply makes the change of l, which allows passed, in s.
func (s *govState) apply(l link) {
	c := l.c
	a := s.adm[c.Peer]
	switch c.Op {
	case AddAdmin:
		s.admins = append(s.admins, c.Peer)
		a.Demoted = false
	case RemoveAdmin:
		s.admins = slices.DeleteFunc(s.admins, func(p peer.ID) bool { return p == c.Peer })
		// An admin needs no invitation: taken down, it stays a member
		// by this mark, as by an admission.
		a.Demoted = true
	case AddPrefix:
		s.prefixes = append(s.prefixes, c.Prefix)
		return
	case RemovePrefix:
		s.prefixes = slices.DeleteFunc(s.prefixes, func(p string) bool { return p == c.Prefix })
		return
	case SetCopies:
		s.copies = c.N
		return
	case SetBudget:
		s.budget = *c.Budget
		return
	case opAdmit:
		if a.Ejected && string(a.Readmit) != string(c.Nonce) {
			return // banned: only the readmitting invitation lets it in
		}
		a = admission{Nonce: c.Nonce, DevType: c.DevType, Demoted: a.Demoted, At: l.ts}
	case opEject:
		s.admins = slices.DeleteFunc(s.admins, func(p peer.ID) bool { return p == c.Peer })
		a.Revoked, a.Ejected, a.Readmit, a.UpTo, a.Demoted = true, true, nil, c.UpTo, false
		if len(c.Nonce) > 0 {
			a.Nonce, a.DevType = c.Nonce, c.DevType
		}
	case opReadmit:
		if !a.Ejected {
			return
		}
		a.Readmit = c.Nonce
	case opRevoke:
		a.Revoked, a.Demoted = true, false
	}
	s.adm[c.Peer] = a
}
