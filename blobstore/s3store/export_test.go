package s3store

// SetBeforeObjectDelete makes Delete run f after it listed the markers
// and before it deletes the objects.
func SetBeforeObjectDelete(s *Store, f func()) { s.beforeObjectDelete = f }
