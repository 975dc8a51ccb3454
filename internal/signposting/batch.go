package signposting

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/signpost"
)

// MergeAll is Merge for many signposts from one peer, in few
// transactions. It returns the merged signposts of the refs kept, in
// the order of refs.
func (b *Book) MergeAll(from peer.ID, refs []syncnode.BlobRef, sps []signpost.Signpost) ([]syncnode.BlobRef, []signpost.Signpost) {
	var kept []syncnode.BlobRef
	var theirs []signpost.Signpost
	for i, ref := range refs {
		if b.admit(from, ref, &sps[i]) {
			kept = append(kept, ref)
			theirs = append(theirs, sps[i])
		}
	}
	merged, err := b.store.UpdateAll(kept, func(i int, sp *signpost.Signpost) { sp.Merge(theirs[i]) })
	if err != nil {
		b.log.Error("signposts not merged", "blobs", len(kept), "err", err)
		return nil, nil
	}
	return kept, merged
}

// ForAll is For for many refs: what requester may see of each signpost
// that names a location it may see, by ref.
func (b *Book) ForAll(requester peer.ID, refs []syncnode.BlobRef) map[syncnode.BlobRef]signpost.Signpost {
	sps, ok, err := b.store.GetAll(refs)
	if err != nil {
		b.log.Error("signposts unreadable", "blobs", len(refs), "err", err)
		return nil
	}
	out := map[syncnode.BlobRef]signpost.Signpost{}
	for i, ref := range refs {
		if ok[i] {
			if f := signpost.Filter(sps[i], requester, b.groups); len(f.Locations) > 0 {
				out[ref] = f
			}
		}
	}
	return out
}

// Found is a blob ref found in a row, as Record takes it.
type Found struct {
	Groups       []syncnode.GroupID
	Writer, From peer.ID
	Ref          syncnode.BlobRef
	Holds        bool
}

// RecordAll is Record for many refs found in rows of group g, in few
// transactions.
func (b *Book) RecordAll(g syncnode.GroupID, found []Found) error {
	refs := make([]syncnode.BlobRef, len(found))
	for i, f := range found {
		refs[i] = f.Ref
	}
	_, err := b.store.UpdateAll(refs, func(i int, sp *signpost.Signpost) {
		groups, writer, from, holds := found[i].Groups, found[i].Writer, found[i].From, found[i].Holds
		for _, gg := range groups {
			sp.AddGroup(gg)
		}
		if writer == b.self {
			if holds {
				sp.AddLocation(b.self, b.Location(g, b.self, false))
			}
			return
		}
		sp.AddLocation(writer, b.Location(g, writer, false))
		if from != writer {
			sp.AddLocation(from, b.Location(g, from, true))
		}
	})
	return err
}
