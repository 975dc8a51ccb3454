package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// ErrNotRunning reports that no daemon answers at the configured address.
var ErrNotRunning = errors.New("syncnode is not running (start it with: syncnode run)")

// Client calls a daemon's control API.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// NewClient returns a client for the daemon of data directory dir.
func NewClient(dir string) (*Client, error) {
	cfg, token, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	return &Client{base: "http://" + cfg.API, token: token, hc: &http.Client{}}, nil
}

// HeaderBlobLength carries the length of a blob read; TrailerError, a
// trailer, the error that stopped a blob read after its answer began.
const (
	HeaderBlobLength = "Syncnode-Blob-Length"
	TrailerError     = "Syncnode-Error"
)

// Do sends a request; a JSON body is encoded from in (an io.Reader is
// sent as it is), and the JSON answer decoded into out (an io.Writer
// receives the raw body).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
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
			return fmt.Errorf("control: answer cut short after %d bytes: %w", n, err)
		}
		if e := resp.Trailer.Get(TrailerError); e != "" {
			return fmt.Errorf("control: the daemon stopped after %d bytes: %s", n, e)
		}
		if l := resp.Header.Get(HeaderBlobLength); l != "" && l != strconv.FormatInt(n, 10) {
			return fmt.Errorf("control: answer cut short: %d of %s bytes", n, l)
		}
		return nil
	default:
		return json.NewDecoder(resp.Body).Decode(out)
	}
}

// Stream sends a request whose answer is NDJSON and calls fn per line.
func Stream[T any](ctx context.Context, c *Client, method, path string, fn func(T)) error {
	resp, err := c.send(ctx, method, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return fmt.Errorf("control: bad stream line: %w", err)
		}
		fn(v)
	}
	return sc.Err()
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
		body = strings.NewReader(string(enc))
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
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
		var ae apiError
		if json.NewDecoder(resp.Body).Decode(&ae) == nil && ae.Error != "" {
			return nil, errors.New(ae.Error)
		}
		return nil, fmt.Errorf("control: %s", resp.Status)
	}
	return resp, nil
}
