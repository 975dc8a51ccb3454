package main

import (
	"context"
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/value"
)

// prefix is where the rows of the files are: photos/NAME.
const prefix = "photos/"

// Photo is the value of the row photos/NAME: a file of the folder, its
// bytes the blob Blob.
type Photo struct {
	Name    string
	Size    int64
	ModTime time.Time
	Blob    syncnode.BlobRef
}

// Drop shares a folder through a group: a file that appears or changes in
// the folder is put as a blob with a row naming it, and the file of every
// row another device writes is fetched and written into the folder with
// the row's mod time. A file is shared when it is newer than its row, and
// written from its row when it is older: the newest version wins.
type Drop struct {
	Node   *node.Node
	Group  syncnode.GroupID
	Folder string
	// Settle is how long a file must go unchanged before it is shared, so
	// that one still being written is shared once, whole (default 1 s).
	Settle time.Duration
	Log    *log.Logger
}

// Run shares the folder until ctx ends.
func (d *Drop) Run(ctx context.Context) error {
	if d.Settle <= 0 {
		d.Settle = time.Second
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(d.Folder); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var fetches sync.WaitGroup
	followed := make(chan error, 1)
	go func() { followed <- d.follow(ctx, &fetches) }()
	defer func() { cancel(); fetches.Wait() }()

	scan, armed := time.NewTimer(0), true // a first scan at once
	for {
		select {
		case <-ctx.Done():
			return <-followed
		case err := <-followed:
			return err
		case err := <-w.Errors:
			d.Log.Print("watching the folder: ", err)
		case <-w.Events:
			if !armed { // a scan Settle after the first change, not after the last
				scan.Reset(d.Settle)
				armed = true
			}
		case <-scan.C:
			if armed = d.scan(ctx); armed {
				scan.Reset(d.Settle)
			}
		}
	}
}

// scan shares the files of the folder that are new or changed and have
// settled; it reports whether some have not settled yet.
func (d *Drop) scan(ctx context.Context) (unsettled bool) {
	entries, err := os.ReadDir(d.Folder)
	if err != nil {
		d.Log.Print(err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || !validName(e.Name()) {
			continue
		}
		row, ok := d.row(e.Name())
		switch {
		case ok && !fi.ModTime().After(row.ModTime): // the row's version, or one it replaced
		case time.Since(fi.ModTime()) < d.Settle:
			unsettled = true
		default:
			if err := d.share(ctx, e.Name(), fi.ModTime()); err != nil {
				d.Log.Printf("%s not shared: %v", e.Name(), err)
			}
		}
	}
	return unsettled
}

// share puts a file as a blob and writes its row.
func (d *Drop) share(ctx context.Context, name string, mod time.Time) error {
	f, err := os.Open(filepath.Join(d.Folder, name))
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := d.Node.PutBlob(ctx, f)
	if err != nil {
		return err
	}
	v, err := value.Marshal(Photo{Name: name, Size: info.Size, ModTime: mod, Blob: info.Ref})
	if err == nil {
		_, err = d.Node.PutRow(d.Group, prefix+name, v)
	}
	if err == nil {
		d.Log.Printf("shared %s (%d bytes)", name, info.Size)
	}
	return err
}

// follow watches the group: it fetches the file of every row another
// device writes, and logs what the server and the budget do with the
// blobs here.
func (d *Drop) follow(ctx context.Context, fetches *sync.WaitGroup) error {
	for e, err := range d.Node.Watch(ctx, d.Group, node.WatchOptions{Prefix: prefix}) {
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			return err
		case e.Kind == feed.RowPut && !e.Local:
			var p Photo
			if err := value.Unmarshal(e.Row.Value, &p); err != nil || prefix+p.Name != e.Key || !validName(p.Name) {
				d.Log.Printf("row %s is not a file: %v", e.Key, err)
				continue
			}
			fetches.Go(func() { d.fetch(ctx, p) })
		case e.Kind == feed.ServerCopy:
			d.Log.Printf("the server keeps %s", d.nameOf(e.Ref))
		case e.Kind == feed.BlobDropped:
			d.Log.Printf("%s dropped from the store, over budget (the file stays in the folder)", d.nameOf(e.Ref))
		}
	}
	return nil
}

// fetch writes the file of row p into the folder, unless the file there
// is as new.
func (d *Drop) fetch(ctx context.Context, p Photo) {
	path := filepath.Join(d.Folder, p.Name)
	if fi, err := os.Stat(path); err == nil && !fi.ModTime().Before(p.ModTime) {
		return
	}
	var err error
	for try := 0; try < 2; try++ { // a device over its budget may evict the copy before it is read
		if _, err = d.Node.FetchBlob(ctx, p.Blob, node.FetchOptions{Urgency: node.UrgencyNormal, WaitForHolder: time.Minute}); err != nil {
			break
		}
		if cur, ok := d.row(p.Name); !ok || cur.Blob != p.Blob {
			return // a newer version came meanwhile
		}
		if err = d.write(path, p); !errors.Is(err, syncnode.ErrNotFound) {
			break
		}
	}
	if err == nil {
		d.Log.Printf("got %s (%d bytes)", p.Name, p.Size)
	} else if ctx.Err() == nil {
		d.Log.Printf("%s not fetched: %v", p.Name, err)
	}
}

// write writes the blob of p at path, whole or not at all, with p's mod
// time.
func (d *Drop) write(path string, p Photo) error {
	r, err := d.Node.OpenBlob(p.Blob)
	if err != nil {
		return err
	}
	defer r.Close()
	tmp, err := os.CreateTemp(d.Folder, ".photodrop-*") // hidden: no scan shares it
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, io.NewSectionReader(r, 0, r.Size()))
	err = errors.Join(err, tmp.Close(), os.Chmod(tmp.Name(), 0o644), os.Chtimes(tmp.Name(), p.ModTime, p.ModTime))
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// row returns the value of the row of file name.
func (d *Drop) row(name string) (p Photo, ok bool) {
	row, ok, err := d.Node.GetRow(d.Group, prefix+name)
	return p, ok && err == nil && value.Unmarshal(row.Value, &p) == nil
}

// nameOf returns the name of the file whose blob is ref.
func (d *Drop) nameOf(ref syncnode.BlobRef) string {
	rows, _ := d.Node.ListRows(d.Group, prefix)
	for _, r := range rows {
		var p Photo
		if value.Unmarshal(r.Value, &p) == nil && p.Blob == ref {
			return p.Name
		}
	}
	return ref.String()
}

// validName reports whether name is a file's name in the folder: no
// directory, and not hidden.
func validName(name string) bool {
	return name != "" && filepath.Base(name) == name && !strings.HasPrefix(name, ".") && !strings.ContainsAny(name, `/\`)
}
