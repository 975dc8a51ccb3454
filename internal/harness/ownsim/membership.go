package ownsim

import (
	"context"
	"fmt"
	"time"

	"github.com/syncnode/syncnode/node"
)

// leave has m leave the group, as a user would: refused if it would leave
// a blob at risk.
func (s *sim) leave(ctx context.Context, m *member) string {
	if m.n == nil || m.out {
		return fmt.Sprintf("%s leaves: skipped", m.name)
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := m.n.LeaveGroupWith(lctx, s.g, node.LeaveOptions{})
	m.out = err == nil
	return fmt.Sprintf("%s leaves: %v", m.name, errString(err))
}

// eject has the admin eject m: refused if a blob only m keeps cannot be
// fetched first.
func (s *sim) eject(ctx context.Context, m *member) string {
	admin := s.ms[phone]
	if admin.n == nil || m.out {
		return fmt.Sprintf("eject %s: skipped", m.name)
	}
	ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	e, err := admin.n.EjectMemberWith(ectx, s.g, m.id, node.EjectOptions{})
	m.out = err == nil
	return fmt.Sprintf("eject %s: %d kept, %d at risk: %v", m.name, len(e.Kept), len(e.AtRisk), errString(err))
}

// rejoin has the admin invite m back, and m join.
func (s *sim) rejoin(ctx context.Context, m *member) string {
	admin := s.ms[phone]
	if admin.n == nil || m.n == nil || !m.out {
		return fmt.Sprintf("%s joins again: skipped", m.name)
	}
	inv, err := admin.n.Invite(s.g, m.id, devTypes[m.idx()], time.Hour)
	if err == nil {
		jctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = m.n.JoinGroup(jctx, inv)
		cancel()
	}
	m.out = err != nil
	return fmt.Sprintf("%s joins again: %v", m.name, errString(err))
}
