package writeback

import (
	"os"

	"golang.org/x/sys/unix"
)

// Start asks the kernel to start writing f's dirty pages back, without
// waiting for them (sync_file_range(2)). A failure is left for the fsync
// to report.
func Start(f *os.File) {
	unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
