// Package s3test runs a real S3-compatible server (Versity S3 Gateway,
// over a temporary directory) on loopback for tests, and stops and
// restarts it on demand. Tests skip when the versitygw binary is absent,
// unless SYNCNODE_S3_TESTS is set (as CI sets it), when they fail.
package s3test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/ports"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/syncnode/syncnode/internal/testkit"
)

// Credentials the server is started with.
const (
	AccessKey = "syncnode-test"
	SecretKey = "syncnode-test-secret"
)

// Server is a running S3 server.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	Addr string // host:port
	cmd  *exec.Cmd
}

// Binary returns the versitygw binary's path, or "" if there is none.
func Binary() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	if p := filepath.Join(gopath, "bin", "versitygw"); fileExists(p) {
		return p
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Start starts a server over a fresh directory with an empty bucket
// named bucket, stopped when the test ends.
func Start(t testing.TB, bucket string) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("SYNCNODE_S3_TESTS") != "" {
			t.Fatal("no versitygw binary (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0), and SYNCNODE_S3_TESTS is set")
		}
		t.Skip("no versitygw binary; go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 to run the S3 tests")
	}
	port, err := ports.Free() // kept across restarts: outgoing connections must not take it
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s := &Server{t: t, bin: bin, dir: t.TempDir(), Addr: addr}
	if err := os.Mkdir(filepath.Join(s.dir, bucket), 0o700); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server again (after Stop) on the same address and
// directory, and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	cmd := exec.Command(s.bin, "--port", s.Addr, "posix", s.dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	log, err := os.Create(filepath.Join(s.t.TempDir(), "versitygw.log"))
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	cl := s.Client()
	testkit.WaitFor(s.t, 20*time.Second, "the S3 server at "+s.Addr, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cl.ListBuckets(ctx)
		return err == nil
	})
}

// Stop kills the server.
func (s *Server) Stop() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Creds returns the server's credentials.
func (s *Server) Creds() *credentials.Credentials {
	return credentials.NewStaticV4(AccessKey, SecretKey, "")
}

// Client returns a client of the server.
func (s *Server) Client() *minio.Client {
	cl, err := minio.New(s.Addr, &minio.Options{Creds: s.Creds(), Secure: false})
	if err != nil {
		s.t.Fatal(err)
	}
	return cl
}

// Keys lists the object keys under prefix in bucket.
func (s *Server) Keys(bucket, prefix string) []string {
	var out []string
	for o := range s.Client().ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			s.t.Fatal(fmt.Errorf("list %s: %w", prefix, o.Err))
		}
		out = append(out, o.Key)
	}
	return out
}
