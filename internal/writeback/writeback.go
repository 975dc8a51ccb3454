// Package writeback starts the kernel writing a file's dirty pages back
// while the file is still being written, so that the fsync that ends the
// write waits for little and the disk works while the writer reads its
// input. It is only ever a hint: the fsync decides what is durable.
package writeback

import "os"

// Every is how many bytes are written between two starts of writeback.
const Every = 8 << 20

// Writer writes to F, starting writeback every Every bytes. One goroutine
// writes through it.
type Writer struct {
	F *os.File
	n int64
}

// Write writes b to the file.
func (w *Writer) Write(b []byte) (int, error) {
	n, err := w.F.Write(b)
	if w.n += int64(n); w.n >= Every {
		w.n = 0
		Start(w.F)
	}
	return n, err
}
