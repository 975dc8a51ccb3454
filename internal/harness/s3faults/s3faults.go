// Package s3faults is a reverse proxy for tests that stands between a node
// and its S3 server and misbehaves as a flaky network or an overloaded
// store does: it cuts ranged reads short and answers 503 on every request
// while told to.
package s3faults

import (
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// Proxy is a fault-injecting proxy in front of one S3 server. Its methods
// are safe for concurrent use.
type Proxy struct {
	srv    *httptest.Server
	target string
	// cut is how many ranged GETs are still to be cut halfway; after
	// each, the store is unavailable until SetUnavailable(false).
	cut atomic.Int32
	// unavailable makes every request answer 503 while set.
	unavailable atomic.Bool
	cuts        atomic.Int32
}

// New starts a proxy in front of the S3 server at target (host:port),
// closed when the test ends.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{target: target}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // the cuts it makes are expected
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && resp.Request.Header.Get("Range") != "" && resp.ContentLength > 1 && p.cut.Load() > 0 {
			p.cut.Add(-1)
			p.cuts.Add(1)
			// After the cut the store is down for a while: a second look
			// at the copy fails too.
			p.unavailable.Store(true)
			resp.Body = &cutBody{r: resp.Body, left: resp.ContentLength / 2}
		}
		return nil
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.unavailable.Load() {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// Addr is the proxy's host:port, the endpoint to give the node.
func (p *Proxy) Addr() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// Direct is the S3 server's own host:port, to look at the bucket past the
// faults.
func (p *Proxy) Direct() string { return p.target }

// CutReads has the next n ranged reads end halfway, each making the store
// unavailable after it.
func (p *Proxy) CutReads(n int) { p.cut.Store(int32(n)) }

// SetUnavailable has every request answer 503 (true) or pass (false).
func (p *Proxy) SetUnavailable(down bool) { p.unavailable.Store(down) }

// Cuts counts the reads cut so far.
func (p *Proxy) Cuts() int { return int(p.cuts.Load()) }

// cutBody passes left bytes, then fails as a dropped connection does.
type cutBody struct {
	r    io.ReadCloser
	left int64
}

func (c *cutBody) Read(b []byte) (int, error) {
	if c.left <= 0 {
		return 0, errors.New("connection reset by the network")
	}
	n, err := c.r.Read(b[:min(int64(len(b)), c.left)])
	c.left -= int64(n)
	return n, err
}

func (c *cutBody) Close() error { return c.r.Close() }
