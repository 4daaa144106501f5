// Package testenv gives the tests the real servers they run against:
// moto's server (DynamoDB and Secrets Manager, behind dynamoproxy),
// stripe-mock pinned to our Stripe API version, aws-lambda-rie and the
// Python tools of .venv. It also checks the local Stripe's answers against
// Stripe's OpenAPI spec.
//
// Each server starts lazily, when the first test of the process asks for
// it, on a free 127.0.0.1 port, and stops when the package's tests end
// (Run). Under `go test -short` a test that needs a server is skipped,
// saying which; without -short a missing server fails the test, because a
// test that cannot reach its server is not a passing test. Production code
// never imports this package.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Run runs a package's tests, then stops every server they started and
// removes what they built. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }
func Run(m *testing.M) int {
	code := m.Run()
	cleanups.run()
	return code
}

// Need skips t under -short, naming the server it needs.
func Need(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s; skipped under -short", what)
	}
}

// cleanups are what Run undoes when the package's tests end, last first.
var cleanups registry

type registry struct {
	mu  sync.Mutex
	fns []func()
}

func (r *registry) add(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fns = append(r.fns, fn)
}

func (r *registry) run() {
	r.mu.Lock()
	fns := r.fns
	r.fns = nil
	r.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// lazy holds something started once per process: the first caller starts
// it, every caller gets the same value or error.
type lazy[T any] struct {
	once sync.Once
	v    T
	err  error
}

func (l *lazy[T]) get(start func() (T, error)) (T, error) {
	l.once.Do(func() { l.v, l.err = start() })
	return l.v, l.err
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RepoRoot returns the module's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// AWSConfig returns an SDK config that sends every service to endpoint with
// static test credentials, as AWS_ENDPOINT_URL does for the functions.
func AWSConfig(endpoint string) aws.Config {
	cfg, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("testing", "testing", "")),
		config.WithBaseEndpoint(endpoint),
	)
	if err != nil {
		panic(err) // only static providers: this cannot fail
	}
	return cfg
}

var seq atomic.Int64

// UniqueName returns a name for a per-test resource such as a table.
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, t.Name())
	if len(name) > 150 {
		name = name[:150]
	}
	return fmt.Sprintf("%s-%s-%d", prefix, name, seq.Add(1))
}

// VenvTool returns the path of a Python tool that `make test` installs
// into .venv (python, cfn-lint, sam). Under -short the test is skipped.
func VenvTool(t testing.TB, name string) string {
	t.Helper()
	Need(t, name+" from .venv")
	p := filepath.Join(RepoRoot(), ".venv", "bin", name)
	if !fileExists(p) {
		t.Fatalf("%s is not installed in .venv: run `make test` or `make tools`, which install it", name)
	}
	return p
}
