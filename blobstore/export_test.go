package blobstore

// PutPrefix returns how the files of d's small puts under way are named.
func PutPrefix(d *Disk) string { return d.putPrefix }

// OnDirSync has fn told of every directory d syncs. Set it before any
// put.
func OnDirSync(d *Disk, fn func(dir string)) { d.dirSynced = fn }

// SetPackLimit makes d's packs take no more records past n bytes. Set it
// before any put.
func SetPackLimit(d *Disk, n int64) { d.pack.limit = n }

// OnPackCompacted has fn told of each pack d's compaction removes. Set it
// before any put.
func OnPackCompacted(d *Disk, fn func(n uint32)) {
	d.pack.mu.Lock()
	defer d.pack.mu.Unlock()
	d.pack.compacted = fn
}

// OnCompactionEnd has fn told of the end of each compaction of d, with
// its error (nil: the pack was removed). Set it before any put.
func OnCompactionEnd(d *Disk, fn func(n uint32, err error)) {
	d.pack.mu.Lock()
	defer d.pack.mu.Unlock()
	d.pack.attempted = fn
}
