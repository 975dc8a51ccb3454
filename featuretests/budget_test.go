package featuretests

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
)

// TestGroupBudgetRaiseReachesEveryMember: the writer's 12 rows were
// written before the admin lowered the group's budget to 5; a member
// that joins after the lowering refuses 7 of them and counts them known,
// while the admin (a server) and the writer hold all 12. Once the admin
// raises the budget, the member's vector comes back below the refused
// rows and its next rounds bring all 12; the writer, bound by the group's
// budget in its own writes, is refused past it with a clear error.
func TestGroupBudgetRaiseReachesEveryMember(t *testing.T) {
	t.Parallel()
	admin, writer, member := nodetest.Start(t), nodetest.Start(t), nodetest.Start(t)
	g := nodetest.CreateGroup(t, admin, "photos", syncnode.Server)
	nodetest.Join(t, admin, writer, g, syncnode.Normal)
	caption, _ := msgpack.Marshal("a photo")
	for i := range 12 {
		if _, err := writer.PutRow(g, fmt.Sprintf("photos/%02d", i), caption); err != nil {
			t.Fatal(err)
		}
	}
	held := func(n *node.Node) int {
		rows, err := n.ListRows(g, "photos/")
		if err != nil {
			t.Fatal(err)
		}
		k := 0
		for _, r := range rows {
			if r.Writer == writer.ID() {
				k++
			}
		}
		return k
	}
	testkit.WaitFor(t, 20*time.Second, "the admin to hold the 12 rows", func() bool { return held(admin) == 12 })
	if _, err := admin.ChangeGroup(g, syncgroup.Change{Op: syncgroup.SetBudget, Budget: &syncgroup.Budget{Rows: 5}}); err != nil {
		t.Fatal(err)
	}
	nodetest.Join(t, admin, member, g, syncnode.Normal)
	testkit.WaitFor(t, 20*time.Second, "the member to refuse 7 of the writer's rows", func() bool {
		return member.Stats().RowsRefused[writer.ID()] >= 7
	})
	// Rounds go on (the member sends 20 more frames); the refused rows
	// are known and do not come.
	sent := member.Stats().SyncMessages
	testkit.WaitFor(t, 20*time.Second, "more rounds of the member's", func() bool { return member.Stats().SyncMessages >= sent+20 })
	if n := held(member); n != 5 {
		t.Fatalf("the member holds %d of the writer's rows under a budget of 5", n)
	}
	spec, err := admin.ChangeGroup(g, syncgroup.Change{Op: syncgroup.SetBudget, Budget: &syncgroup.Budget{Rows: 20}})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Budget == nil || spec.Budget.Rows != 20 {
		t.Fatalf("the spec after the change: %+v", spec.Budget)
	}
	testkit.WaitFor(t, 20*time.Second, "the member to hold the writer's 12 rows after the raise", func() bool {
		return held(member) == 12
	})
	testkit.WaitFor(t, 20*time.Second, "the writer to learn of the raise", func() bool {
		s, err := writer.GroupSpec(g)
		return err == nil && s.Budget != nil && s.Budget.Rows == 20
	})
	for i := 12; i < 20; i++ {
		if _, err := writer.PutRow(g, fmt.Sprintf("photos/%02d", i), caption); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := writer.PutRow(g, "photos/20", caption); !errors.Is(err, syncgroup.ErrOverBudget) {
		t.Fatalf("the writer's 21st row under the group's budget of 20: %v", err)
	}
	testkit.WaitFor(t, 20*time.Second, "the member to hold all 20", func() bool { return held(member) == 20 })
}
