package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/syncnode/syncnode/internal/api"
)

// Many files in one command: `blob put` of several files or directories,
// `blob get` of several refs into a directory.

// gatherFiles returns the files to store for the paths given: a file as
// its base name, a directory's files (with recursive) as their paths
// below it, in lexical order; and their total size.
func gatherFiles(paths []string, recursive bool) ([]api.PutFile, int64, error) {
	var out []api.PutFile
	var total int64
	add := func(path, name string, info fs.FileInfo) {
		out = append(out, api.PutFile{Path: filepath.ToSlash(name), Mtime: info.ModTime(),
			Open: func() (io.ReadCloser, error) { return os.Open(path) }})
		total += info.Size()
	}
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, 0, err
		}
		if !info.IsDir() {
			add(p, filepath.Base(p), info)
			continue
		}
		if !recursive {
			return nil, 0, fmt.Errorf("%s is a directory (-r stores the files under it)", p)
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil // directories are walked; links and devices are not files to store
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(p, path)
			if err != nil {
				return err
			}
			add(path, rel, info)
			return nil
		})
		if err != nil {
			return nil, 0, err
		}
	}
	if len(out) == 0 {
		return nil, 0, errors.New("no file to store")
	}
	seen := map[string]string{}
	for _, f := range out {
		if prev, ok := seen[f.Path]; ok {
			return nil, 0, fmt.Errorf("two files would be stored as %q: %s", f.Path, prev)
		}
		seen[f.Path] = "give one directory, or files of distinct names"
	}
	return out, total, nil
}

// putMany stores files in one request, with a progress bar over their
// total bytes, and prints one line per file (or the JSON answer).
func putMany(c *cmd, files []api.PutFile, total int64, o api.PutBlobsOptions) error {
	return c.with(func(cl *api.Client) error {
		var counted func(int64)
		if total >= progressMin {
			bar := newBar(c.stderr, total, fmt.Sprintf("storing %d files", len(files)))
			defer bar.Finish()
			counted = func(n int64) { bar.Set64(n) }
		}
		res, err := cl.PutBlobs(c.ctx, files, o, counted)
		if c.asJSON {
			enc := json.NewEncoder(c.stdout)
			enc.SetIndent("", "  ")
			if werr := enc.Encode(res); werr != nil {
				return werr
			}
			return err
		}
		for _, f := range res.Files {
			fmt.Fprintf(c.stdout, "%s  %s\n", f.Ref, f.Path)
		}
		if res.Rows > 0 {
			fmt.Fprintf(c.stdout, "%d rows written in %s under %q\n", res.Rows, o.Group, o.Prefix)
		}
		if err != nil {
			return fmt.Errorf("%w (stored before it: %d of %d files; no row written)", err, len(res.Files), len(files))
		}
		return nil
	})
}

// getMany fetches refs (at most 8 at once) and writes each to dir/REF,
// each file whole or not at all; it names every ref that failed.
func getMany(c *cmd, refs []string, dir string, o api.FetchOptions) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return c.with(func(cl *api.Client) error {
		var mu sync.Mutex
		failed := map[string]error{}
		sem := make(chan struct{}, 8)
		var wg sync.WaitGroup
		for _, ref := range refs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				err := getOne(c.ctx, cl, ref, filepath.Join(dir, ref), o)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed[ref] = err
					return
				}
				fmt.Fprintf(c.stdout, "%s  %s\n", ref, filepath.Join(dir, ref))
			}()
		}
		wg.Wait()
		if len(failed) == 0 {
			return nil
		}
		bad := make([]string, 0, len(failed))
		for ref := range failed {
			bad = append(bad, ref)
		}
		sort.Strings(bad)
		var errs []error
		for _, ref := range bad {
			errs = append(errs, fmt.Errorf("%s: %w", ref, failed[ref]))
		}
		return fmt.Errorf("%d of %d blobs not written: %w", len(failed), len(refs), errors.Join(errs...))
	})
}

// getOne fetches ref if needed and writes it to path atomically.
func getOne(ctx context.Context, cl *api.Client, ref, path string, o api.FetchOptions) error {
	if err := cl.FetchBlob(ctx, ref, o, func(api.FetchEvent) {}); err != nil {
		return err
	}
	return writeAtomically(path, func(w io.Writer) error { return cl.ReadBlob(ctx, ref, 0, -1, w) })
}
