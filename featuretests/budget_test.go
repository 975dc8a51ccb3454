package featuretests

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
)

// TestGroupBudgetRaiseReachesEveryMember: a group made with a budget of
// 5 rows a writer binds the writer's own writes (the sixth is refused,
// saying how to raise it) and every member alike; once the admin raises
// it, the writer writes on, and every member, bound by the same budget,
// takes every row.
func TestGroupBudgetRaiseReachesEveryMember(t *testing.T) {
	t.Parallel()
	admin, writer, member := nodetest.Start(t), nodetest.Start(t), nodetest.Start(t)
	spec, err := admin.CreateGroupWith(node.GroupOptions{Name: "photos", Prefixes: []string{"photos/"}, Private: true, DevType: syncnode.Server, Budget: syncgroup.Budget{Rows: 5}})
	if err != nil {
		t.Fatal(err)
	}
	g := spec.ID
	nodetest.Join(t, admin, writer, g, syncnode.Normal)
	nodetest.Join(t, admin, member, g, syncnode.Normal)
	caption, _ := msgpack.Marshal("a photo")
	put := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := writer.PutRow(g, fmt.Sprintf("photos/%02d", i), caption); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 5)
	_, err = writer.PutRow(g, "photos/05", caption)
	if !errors.Is(err, syncgroup.ErrOverBudget) || !strings.Contains(err.Error(), "sg budget") {
		t.Fatalf("the writer's sixth row under a budget of 5: %v", err)
	}
	held := func(n *node.Node) int {
		rows, err := n.ListRows(g, "photos/")
		if err != nil {
			t.Fatal(err)
		}
		return len(rows)
	}
	testkit.WaitFor(t, 20*time.Second, "the member to hold the writer's 5 rows", func() bool { return held(member) == 5 })
	if _, err := admin.ChangeGroup(g, syncgroup.Change{Op: syncgroup.SetBudget, Budget: &syncgroup.Budget{Rows: 20}}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 20*time.Second, "the writer to learn of the raise", func() bool {
		s, err := writer.GroupSpec(g)
		return err == nil && s.Budget != nil && s.Budget.Rows == 20
	})
	put(5, 20)
	if _, err := writer.PutRow(g, "photos/20", caption); !errors.Is(err, syncgroup.ErrOverBudget) {
		t.Fatalf("the writer's 21st row under the group's budget of 20: %v", err)
	}
	testkit.WaitFor(t, 20*time.Second, "the member and the admin to hold all 20", func() bool {
		return held(member) == 20 && held(admin) == 20
	})
	if n := member.Stats().RowsRefused[writer.ID()]; n != 0 {
		t.Fatalf("the member refused %d of the writer's rows", n)
	}
}
