package control

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/syncgroup"
	"github.com/syncnode/syncnode/value"
)

// Storing many files in one request (blob put -r).

// putAhead is how many small files are stored at once while the next
// ones arrive: each put's syncs overlap the others' and the reading of
// the body. putSmall is the most bytes of a file read ahead into memory;
// a larger one is stored as it arrives, after the ones before it.
const (
	putAhead = 4
	putSmall = 8 << 20
)

// filePut is one file of a putBlobs body: its place in the body, and
// what storing it gave.
type filePut struct {
	path, mtime string
	info        api.StoredFile
	err         error
}

// putBlobs stores each part of a multipart body as a blob and, with a
// group named, writes one row per file (its path under the prefix: name,
// blob, size and modification time) as one batch once all are stored.
// Each blob is verified and synced before it is visible, as any put; the
// puts of small files overlap. A failure ends it: the answer lists what
// was stored, names the first file that failed, and no row is written.
func (s *server) putBlobs(r *http.Request) (api.StoredFiles, error) {
	q := r.URL.Query()
	g, prefix := syncnode.GroupID(q.Get("group")), q.Get("prefix")
	if g != "" {
		spec, err := s.n.GroupSpec(g)
		if err != nil {
			return api.StoredFiles{}, err
		}
		if !spec.Covers(prefix) && !slices.ContainsFunc(spec.Prefixes, func(p string) bool { return strings.HasPrefix(p, prefix) }) {
			return api.StoredFiles{}, badRequest("prefix %q is not under the prefixes of %s (%s)", prefix, g, strings.Join(spec.Prefixes, ", "))
		}
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return api.StoredFiles{}, badRequest("a multipart body: %v", err)
	}
	files, cut := s.storeParts(r, mr, g != "")
	out := api.StoredFiles{Files: []api.StoredFile{}}
	for _, f := range files {
		if f.err == nil {
			out.Files = append(out.Files, f.info)
		} else if out.Error == "" {
			out.Failed, out.Error = f.path, fmt.Sprintf("%s: %v", f.path, f.err)
		}
	}
	if out.Error == "" && cut != nil {
		out.Error = fmt.Sprintf("the body was cut short after %d files: %v", len(files), cut)
	}
	if out.Error != "" || g == "" || len(files) == 0 {
		return out, nil
	}
	kvs := make([]syncgroup.KV, 0, len(files))
	for _, f := range files {
		kv, err := fileKV(prefix, f)
		if err != nil {
			out.Failed, out.Error = f.path, fmt.Sprintf("%s: %v", f.path, err)
			return out, nil
		}
		kvs = append(kvs, kv)
	}
	rows, err := s.n.PutRows(g, kvs)
	if err != nil {
		out.Error = fmt.Sprintf("the %d blobs are stored, but no row was written: %v", len(out.Files), err)
		return out, nil
	}
	out.Rows = len(rows)
	return out, nil
}

// storeParts stores the body's parts, up to putAhead small ones at once,
// and returns them in order; cut is the body's own error, if it ended
// short. It stops at the first part that fails or aborts.
func (s *server) storeParts(r *http.Request, mr *multipart.Reader, rows bool) (files []*filePut, cut error) {
	var wg sync.WaitGroup
	defer wg.Wait()
	ahead := make(chan struct{}, putAhead)
	var mu sync.Mutex
	// failed is set by a store that failed: the loop stops at the next
	// part, without looking over every file so far.
	var failed atomic.Bool
	for !failed.Load() {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return files, err
		}
		f := &filePut{path: part.Header.Get(api.HeaderPath), mtime: part.Header.Get(api.HeaderMtime)}
		mu.Lock()
		files = append(files, f)
		mu.Unlock()
		if why := part.Header.Get(api.HeaderAbort); why != "" {
			f.err = errors.New(why)
			return files, nil
		}
		if rows && (f.path == "" || strings.HasPrefix(f.path, "/") || slices.Contains(strings.Split(f.path, "/"), "..")) {
			f.err = fmt.Errorf("%w: a file's path must be relative, without \"..\"", errBadRequest)
			return files, nil
		}
		var buf bytes.Buffer
		n, err := io.CopyN(&buf, part, putSmall+1)
		if err != nil && !errors.Is(err, io.EOF) {
			f.err = err
			return files, nil
		}
		store := func(body io.Reader) {
			info, err := s.n.PutBlob(r.Context(), body)
			mu.Lock()
			f.info, f.err = api.StoredFile{Path: f.path, Ref: info.Ref.String(), Size: info.Size}, err
			mu.Unlock()
			if err != nil {
				failed.Store(true)
			}
		}
		if n > putSmall {
			wg.Wait() // in order, one large file at a time
			store(io.MultiReader(&buf, part))
			continue
		}
		ahead <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-ahead; wg.Done() }()
			store(&buf)
		}()
	}
	return files, nil
}

// fileRow is the value of the row putBlobs writes for a file.
type fileRow struct {
	Name string           `msgpack:"name"`
	Blob syncnode.BlobRef `msgpack:"blob"`
	Size int64            `msgpack:"size"`
	// Mtime is the file's modification time, RFC 3339 (a string, as
	// every app reads one alike; msgpack's own time type is not JSON's).
	Mtime string `msgpack:"mtime,omitempty"`
}

// fileKV returns the row that names stored file f under prefix.
func fileKV(prefix string, f *filePut) (syncgroup.KV, error) {
	ref, err := syncnode.ParseBlobRef(f.info.Ref)
	if err != nil {
		return syncgroup.KV{}, err
	}
	v := fileRow{Name: f.path, Blob: ref, Size: f.info.Size}
	if f.mtime != "" {
		t, err := time.Parse(time.RFC3339Nano, f.mtime)
		if err != nil {
			return syncgroup.KV{}, fmt.Errorf("%w: modification time %q", errBadRequest, f.mtime)
		}
		v.Mtime = t.UTC().Format(time.RFC3339Nano)
	}
	b, err := value.Marshal(v)
	if err != nil {
		return syncgroup.KV{}, err
	}
	return syncgroup.KV{Key: prefix + f.path, Value: b}, nil
}
