// Package s3test runs a real S3-compatible server (Versity S3 Gateway or
// MinIO, over a temporary directory) on loopback for tests, and stops and
// restarts it on demand. Tests skip when the server's binary is absent,
// unless SYNCNODE_S3_TESTS is set (as CI sets it; SYNCNODE_MINIO_TESTS
// for MinIO), when they fail. Under -short they skip unless the variable
// is set.
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

// The servers Start can run.
const (
	Versity = "versitygw"
	MinIO   = "minio"
)

// Kinds are the servers the S3 tests run against: both, the ones missing
// skipped (or failed, when their variable is set).
var Kinds = []string{Versity, MinIO}

// Server is a running S3 server.
type Server struct {
	t      testing.TB
	kind   string
	bin    string
	dir    string
	bucket string
	Addr   string // host:port
	cmd    *exec.Cmd
}

// Binary returns the versitygw binary's path, or "" if there is none.
func Binary() string { return binaryOf(Versity) }

// binaryOf returns the path of a server's binary, or "".
func binaryOf(kind string) string {
	if p, err := exec.LookPath(kind); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	if p := filepath.Join(gopath, "bin", kind); fileExists(p) {
		return p
	}
	return ""
}

// install says how to install a server, and required which variable
// makes its tests fail rather than skip without it.
var install = map[string]struct{ how, required string }{
	Versity: {"go install github.com/versity/versitygw/cmd/versitygw@v1.8.0", "SYNCNODE_S3_TESTS"},
	MinIO:   {"go install github.com/minio/minio@latest", "SYNCNODE_MINIO_TESTS"},
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Start starts a Versity server over a fresh directory with an empty
// bucket named bucket, stopped when the test ends.
func Start(t testing.TB, bucket string) *Server { return StartKind(t, Versity, bucket) }

// StartKind is Start of the server kind (Versity or MinIO).
func StartKind(t testing.TB, kind, bucket string) *Server {
	t.Helper()
	in := install[kind]
	testkit.SkipShortUnless(t, in.required, "a "+kind+" S3 server")
	bin := binaryOf(kind)
	if bin == "" {
		if os.Getenv(in.required) != "" {
			t.Fatalf("no %s binary (%s), and %s is set", kind, in.how, in.required)
		}
		t.Skipf("no %s binary; %s to run the S3 tests against it", kind, in.how)
	}
	port, err := ports.Free() // kept across restarts: outgoing connections must not take it
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s := &Server{t: t, kind: kind, bin: bin, dir: t.TempDir(), bucket: bucket, Addr: addr}
	if kind == Versity {
		// Versity's posix backend: a bucket is a directory.
		if err := os.Mkdir(filepath.Join(s.dir, bucket), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s.Restart()
	t.Cleanup(s.Stop)
	if kind == MinIO {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Client().MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Restart starts the server again (after Stop) on the same address and
// directory, and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	var cmd *exec.Cmd
	switch s.kind {
	case MinIO:
		cmd = exec.Command(s.bin, "server", "--quiet", "--address", s.Addr, "--console-address", "127.0.0.1:0", s.dir)
		cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+AccessKey, "MINIO_ROOT_PASSWORD="+SecretKey,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	default:
		cmd = exec.Command(s.bin, "--port", s.Addr, "posix", s.dir)
		cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	}
	log, err := os.Create(filepath.Join(s.t.TempDir(), s.kind+".log"))
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	cl := s.Client()
	testkit.WaitFor(s.t, 60*time.Second, "the S3 server at "+s.Addr, func() bool {
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
