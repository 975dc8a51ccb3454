package blobstore

// PutPrefix returns how the files of d's small puts under way are named.
func PutPrefix(d *Disk) string { return d.putPrefix }

// OnDirSync has fn told of every directory d syncs. Set it before any
// put.
func OnDirSync(d *Disk, fn func(dir string)) { d.dirSynced = fn }
