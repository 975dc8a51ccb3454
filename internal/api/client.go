package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrNotRunning reports that no daemon answers at the client's address.
var ErrNotRunning = errors.New("syncnode is not running (start it with: syncnode run)")

// Client calls a daemon's control API.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// NewClient returns a client of the daemon listening at addr (host:port)
// that presents token.
func NewClient(addr, token string) *Client {
	return &Client{base: "http://" + addr, token: token, hc: &http.Client{}}
}

// PutBlob stores the bytes r yields as a blob.
func (c *Client) PutBlob(ctx context.Context, r io.Reader) (BlobInfo, error) {
	var out BlobInfo
	return out, c.do(ctx, "POST", "/blobs", r, &out)
}

// PutFile is one file for PutBlobs.
type PutFile struct {
	// Path is the file's path as the rows key it (slash-separated).
	Path  string
	Mtime time.Time
	Open  func() (io.ReadCloser, error)
}

// PutBlobs stores files as blobs in one request, streamed one after the
// other, and with o.Group writes one row per file; counted, if not nil,
// is told of the bytes sent so far. A failure is an error and the answer
// says what was done before it.
func (c *Client) PutBlobs(ctx context.Context, files []PutFile, o PutBlobsOptions, counted func(int64)) (StoredFiles, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		var sent int64
		err := func() error {
			for _, f := range files {
				h := textproto.MIMEHeader{}
				h.Set("Content-Disposition", `form-data; name="file"`)
				h.Set("Content-Type", "application/octet-stream")
				h.Set(HeaderPath, f.Path)
				if !f.Mtime.IsZero() {
					h.Set(HeaderMtime, f.Mtime.UTC().Format(time.RFC3339Nano))
				}
				r, err := f.Open()
				if err != nil {
					// The daemon is told, and answers with what it stored.
					h.Set(HeaderAbort, err.Error())
					if _, err := mw.CreatePart(h); err != nil {
						return err
					}
					return mw.Close()
				}
				w, err := mw.CreatePart(h)
				if err != nil {
					r.Close()
					return err
				}
				n, err := io.Copy(w, &countingReader{r: r, counted: func(n int64) {
					if counted != nil {
						counted(sent + n)
					}
				}})
				r.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", f.Path, err)
				}
				sent += n
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	q := url.Values{}
	if o.Group != "" {
		q.Set("group", o.Group)
		q.Set("prefix", o.Prefix)
	}
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/blobs/many?"+q.Encode(), pr)
	if err != nil {
		return StoredFiles{}, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	var out StoredFiles
	resp, err := c.sendReq(req)
	if err != nil {
		pr.CloseWithError(err)
		return out, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return out, fmt.Errorf("api: bad answer to PutBlobs: %w", err)
	}
	if out.Error != "" {
		return out, errors.New(out.Error)
	}
	return out, nil
}

// countingReader tells counted of the bytes read so far.
type countingReader struct {
	r       io.Reader
	n       int64
	counted func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.n += int64(n)
		c.counted(c.n)
	}
	return n, err
}

// PutRows writes rows in a group as one batch: all of them, or none.
func (c *Client) PutRows(ctx context.Context, req RowsRequest) ([]Row, error) {
	var out []Row
	return out, c.do(ctx, "POST", "/rows/batch", req, &out)
}

// ListBlobs lists the blobs held.
func (c *Client) ListBlobs(ctx context.Context) ([]BlobInfo, error) {
	var out []BlobInfo
	return out, c.do(ctx, "GET", "/blobs", nil, &out)
}

// StatBlob describes a held blob.
func (c *Client) StatBlob(ctx context.Context, ref string) (BlobInfo, error) {
	var out BlobInfo
	return out, c.do(ctx, "GET", statPath(ref), nil, &out)
}

// ReadBlob writes length bytes of a held blob from offset to w (length
// -1: to the end). Every byte is verified by the daemon; a read cut short
// by damage or a dropped connection is an error.
func (c *Client) ReadBlob(ctx context.Context, ref string, offset, length int64, w io.Writer) error {
	return c.do(ctx, "GET", readPath(ref, offset, length), nil, w)
}

// FetchBlob fetches a blob from peers if it is not held, calling progress
// (if not nil) with each status line; it fails if the fetch does.
func (c *Client) FetchBlob(ctx context.Context, ref string, o FetchOptions, progress func(FetchEvent)) error {
	resp, err := c.send(ctx, "POST", fetchPath(ref, o), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var failed error
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var ev FetchEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("api: bad fetch status line: %w", err)
		}
		if ev.Error != "" && ev.State != "waiting" {
			failed = errors.New(ev.Error)
		}
		if progress != nil {
			progress(ev)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return failed
}

// ErrExpired reports a watch marker older than what the daemon keeps;
// ErrBadMarker one that is not the daemon's for that group and prefix.
var (
	ErrExpired   = errors.New("api: marker older than the daemon keeps; watch again without -from")
	ErrBadMarker = errors.New("api: bad marker")
)

// Watch follows the changes of a group, calling fn with each event until
// ctx ends, fn fails or the daemon ends the stream (with its error).
func (c *Client) Watch(ctx context.Context, group string, o WatchOptions, fn func(Event) error) error {
	resp, err := c.send(ctx, "GET", watchPath(group, o), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("api: bad watch line: %w", err)
		}
		switch {
		case ev.Expired:
			return fmt.Errorf("%w: %s", ErrExpired, ev.Error)
		case ev.BadMarker:
			return fmt.Errorf("%w: %s", ErrBadMarker, ev.Error)
		case ev.Error != "":
			return errors.New(ev.Error)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("api: the daemon ended the watch")
}

// RemoveBlob removes a held blob; it is refused, with what holds the blob
// and what would release it, while the node holds shares of it or the
// user pinned it here.
func (c *Client) RemoveBlob(ctx context.Context, ref string) error {
	return c.RemoveBlobWith(ctx, ref, RemoveOptions{})
}

// RemoveBlobWith removes a held blob as o says.
func (c *Client) RemoveBlobWith(ctx context.Context, ref string, o RemoveOptions) error {
	return c.do(ctx, "DELETE", removePath(ref, o), nil, &Removed{})
}

// PinBlob pins a blob here for the user, fetching it first if it is not
// held: it is kept whatever the budget.
func (c *Client) PinBlob(ctx context.Context, ref string) (Pin, error) {
	var out Pin
	return out, c.do(ctx, "POST", pinPath(ref), nil, &out)
}

// UnpinBlob drops the user's pin of a blob.
func (c *Client) UnpinBlob(ctx context.Context, ref string) (Pin, error) {
	var out Pin
	return out, c.do(ctx, "DELETE", pinPath(ref), nil, &out)
}

// Why explains a blob's state on the node.
func (c *Client) Why(ctx context.Context, ref string) (Why, error) {
	var out Why
	return out, c.do(ctx, "GET", whyPath(ref), nil, &out)
}

// CreateGroup creates a syncgroup with the node as its admin.
func (c *Client) CreateGroup(ctx context.Context, req CreateRequest) (Group, error) {
	var out Group
	return out, c.do(ctx, "POST", "/groups", req, &out)
}

// ListGroups lists the groups the node is in.
func (c *Client) ListGroups(ctx context.Context) ([]Group, error) {
	var out []Group
	return out, c.do(ctx, "GET", "/groups", nil, &out)
}

// Invite makes an invitation for a peer to join a group.
func (c *Client) Invite(ctx context.Context, req InviteRequest) (Invitation, error) {
	var out Invitation
	return out, c.do(ctx, "POST", "/groups/invite", req, &out)
}

// Join joins a group with an invitation.
func (c *Client) Join(ctx context.Context, inv Invitation) (Group, error) {
	var out Group
	return out, c.do(ctx, "POST", "/groups/join", inv, &out)
}

// Leave leaves a group.
func (c *Client) Leave(ctx context.Context, group string) error {
	_, err := c.LeaveWith(ctx, GroupRequest{Group: group})
	return err
}

// LeaveWith leaves a group as req says, after handing the node's shares
// in it to members; it reports the blobs a forced leave left at risk.
func (c *Client) LeaveWith(ctx context.Context, req GroupRequest) (Left, error) {
	var out Left
	err := c.do(ctx, "POST", "/groups/leave", req, &out)
	return out, err
}

// Eject ejects a member from a group, or with req.DryRun says what the
// ejection would do; the node must be an admin of the group.
func (c *Client) Eject(ctx context.Context, req EjectRequest) (Ejection, error) {
	var out Ejection
	return out, c.do(ctx, "POST", "/groups/eject", req, &out)
}

// ChangeSpec changes a group's spec and returns the group as it stands.
func (c *Client) ChangeSpec(ctx context.Context, req SpecChange) (Group, error) {
	var out Group
	return out, c.do(ctx, "POST", "/groups/spec", req, &out)
}

// Members lists a group's members.
func (c *Client) Members(ctx context.Context, group string) ([]Member, error) {
	var out []Member
	return out, c.do(ctx, "GET", membersPath(group), nil, &out)
}

// PutRow writes a row.
func (c *Client) PutRow(ctx context.Context, req RowRequest) (Row, error) {
	var out Row
	return out, c.do(ctx, "POST", "/rows", req, &out)
}

// GetRow returns a live row.
func (c *Client) GetRow(ctx context.Context, group, key string) (Row, error) {
	var out []Row
	if err := c.do(ctx, "GET", rowsPath(group, key, ""), nil, &out); err != nil {
		return Row{}, err
	}
	if len(out) != 1 {
		return Row{}, fmt.Errorf("api: %d rows for one key", len(out))
	}
	return out[0], nil
}

// ListRows lists a group's live rows under prefix, keys sorted.
func (c *Client) ListRows(ctx context.Context, group, prefix string) ([]Row, error) {
	var out []Row
	return out, c.do(ctx, "GET", rowsPath(group, "", prefix), nil, &out)
}

// ListRowsFrom lists a page of a group's rows under prefix: up to limit,
// from key start on.
func (c *Client) ListRowsFrom(ctx context.Context, group, prefix, start string, limit int) (RowsPage, error) {
	var out RowsPage
	q := url.Values{"group": {group}, "prefix": {prefix}, "start": {start}, "limit": {strconv.Itoa(limit)}}
	return out, c.do(ctx, "GET", "/rows/page?"+q.Encode(), nil, &out)
}

// DeleteRow writes a tombstone at key.
func (c *Client) DeleteRow(ctx context.Context, group, key string) (Deleted, error) {
	var out Deleted
	return out, c.do(ctx, "DELETE", rowsPath(group, key, ""), nil, &out)
}

// Peers lists the connected peers.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var out []Peer
	return out, c.do(ctx, "GET", "/peers", nil, &out)
}

// Status summarises the node.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	return out, c.do(ctx, "GET", "/status", nil, &out)
}

// Metrics writes the node's Prometheus metrics, text format, to w.
func (c *Client) Metrics(ctx context.Context, w io.Writer) error {
	return c.do(ctx, "GET", "/metrics", nil, w)
}

// PageState returns what the status page shows.
func (c *Client) PageState(ctx context.Context) (PageState, error) {
	var out PageState
	return out, c.do(ctx, "GET", "/ui/state", nil, &out)
}

// do sends a request; a JSON body is encoded from in (an io.Reader is
// sent as it is), and the JSON answer decoded into out (an io.Writer
// receives the raw body, checked against its announced length).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch o := out.(type) {
	case nil:
		return nil
	case io.Writer:
		n, err := io.Copy(o, resp.Body)
		if err != nil {
			return fmt.Errorf("api: answer cut short after %d bytes: %w", n, err)
		}
		if e := resp.Trailer.Get(TrailerError); e != "" {
			return fmt.Errorf("api: the daemon stopped after %d bytes: %s", n, e)
		}
		if l := resp.Header.Get(HeaderBlobLength); l != "" && l != strconv.FormatInt(n, 10) {
			return fmt.Errorf("api: answer cut short: %d of %s bytes", n, l)
		}
		return nil
	default:
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("api: bad answer to %s %s: %w", method, path, err)
		}
		return nil
	}
}

func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	switch b := in.(type) {
	case nil:
	case io.Reader:
		body = b
	default:
		enc, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(enc)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	return c.sendReq(req)
}

// sendReq sends req with the token; a status of 300 or more is an error.
func (c *Client) sendReq(req *http.Request) (*http.Response, error) {
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) && strings.Contains(err.Error(), "connection refused") {
			return nil, ErrNotRunning
		}
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var ae Error
		if json.NewDecoder(resp.Body).Decode(&ae) == nil && ae.Error != "" {
			return nil, errors.New(ae.Error)
		}
		return nil, fmt.Errorf("api: %s", resp.Status)
	}
	return resp, nil
}
