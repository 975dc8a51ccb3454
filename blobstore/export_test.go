package blobstore

// PutPrefix returns how the files of d's small puts under way are named.
func PutPrefix(d *Disk) string { return d.putPrefix }
