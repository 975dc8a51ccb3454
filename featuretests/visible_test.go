package featuretests

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/node"
)

// TestRowVisibleMeansBlobFetchable: the moment a member sees a row, it can
// fetch the blob the row names: where the blob is was learnt before the
// row became visible, whether or not the writer holds it alone.
func TestRowVisibleMeansBlobFetchable(t *testing.T) {
	t.Parallel()
	a, b := start(t), start(t)
	g := createGroup(t, a, "photos", syncnode.Normal)
	join(t, a, b, g, syncnode.Normal)
	for i := range 20 {
		key := fmt.Sprintf("photos/%02d", i)
		ref := putBlobRow(t, a, g, key, randomBytes(64<<10, uint64(i)))
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, ok, _ := b.GetRow(g, key); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("row %s never reached the member", key)
			}
			runtime.Gosched()
		}
		if _, err := b.FetchBlob(t.Context(), ref, node.FetchOptions{}); err != nil {
			t.Fatalf("row %s visible, its blob not fetchable: %v", key, err)
		}
	}
}
