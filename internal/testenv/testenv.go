// Package testenv starts the real servers the tests run against (moto's
// server for DynamoDB and Secrets Manager) on free 127.0.0.1 ports, and
// stops them when the test binary ends. Production code never imports it.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/baseten/billing-functions/internal/dynamoproxy"
)

// Server is a process started for the tests.
type Server struct {
	URL string
	cmd *exec.Cmd
}

// Stop ends the server's whole process group and waits for it.
func (s *Server) Stop() {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
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

// motoServerPath finds moto's server: $MOTO_SERVER, the project virtualenv
// that `make test` creates (through scripts/moto-server, which fixes the
// cost of moto's transactions), then $PATH.
func motoServerPath() (string, error) {
	if p := os.Getenv("MOTO_SERVER"); p != "" {
		return p, nil
	}
	if fileExists(filepath.Join(RepoRoot(), ".venv", "bin", "python")) {
		return filepath.Join(RepoRoot(), "scripts", "moto-server"), nil
	}
	if p, err := exec.LookPath("moto_server"); err == nil {
		return p, nil
	}
	return "", errors.New("moto_server not found: run `make test` (it installs moto into .venv) or set MOTO_SERVER")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// StartMoto starts moto's server on a free 127.0.0.1 port and waits until it
// answers. The caller must Stop it.
func StartMoto() (*Server, error) {
	bin, err := motoServerPath()
	if err != nil {
		return nil, err
	}
	return startOnFreePort(bin, "/moto-api/", func(port int) []string { return []string{"-H", "127.0.0.1", "-p", fmt.Sprint(port)} })
}

// startOnFreePort runs bin with the args for a free port and waits until
// readyPath answers; a port taken in between gets another try.
func startOnFreePort(bin, readyPath string, args func(port int) []string) (*Server, error) {
	for attempt := 0; attempt < 3; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, args(port)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", bin, err)
		}
		s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
		if err := waitHTTP(s.URL+readyPath, 30*time.Second); err != nil {
			s.Stop()
			continue
		}
		return s, nil
	}
	return nil, fmt.Errorf("%s did not become ready", filepath.Base(bin))
}

func waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer within %s", url, timeout)
}

func waitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s after %s", addr, timeout)
}

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

// Main runs a package's tests with a moto server, and stops it afterwards.
// setup gets the URL to use: moto behind dynamoproxy, which gives its
// DynamoDB the transaction isolation and connection handling real DynamoDB
// has, as `make dev` does. A missing moto fails the run: a test that cannot
// reach its server is not a passing test.
func Main(m *testing.M, setup func(awsURL string)) {
	srv, err := StartMoto()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		os.Exit(1)
	}
	target, _ := url.Parse(srv.URL)
	proxy := httptest.NewServer(dynamoproxy.New(target))
	setup(proxy.URL)
	code := m.Run()
	proxy.Close()
	srv.Stop()
	os.Exit(code)
}

// FaultProxy starts a dynamoproxy in front of upstream (the URL testenv.Main
// gave) on a free port, for a test to inject DynamoDB and Secrets Manager
// faults into, and stops it when the test ends.
func FaultProxy(t testing.TB, upstream string) (*dynamoproxy.Proxy, string) {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := dynamoproxy.New(target)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

// stripeMockPath finds stripe-mock: $STRIPE_MOCK, ./bin (where `make test`
// installs it), then $PATH.
func stripeMockPath() (string, error) {
	if p := os.Getenv("STRIPE_MOCK"); p != "" {
		return p, nil
	}
	if p := filepath.Join(RepoRoot(), "bin", "stripe-mock"); fileExists(p) {
		return p, nil
	}
	if p, err := exec.LookPath("stripe-mock"); err == nil {
		return p, nil
	}
	return "", errors.New("stripe-mock not found: run `make test` (it installs it into ./bin) or set STRIPE_MOCK")
}

// StartStripeMock starts stripe-mock on a free 127.0.0.1 port. The caller
// must Stop it.
func StartStripeMock() (*Server, error) {
	bin, err := stripeMockPath()
	if err != nil {
		return nil, err
	}
	// Its HTTPS listener would default to [::]:12112; keep it on loopback.
	return startOnFreePort(bin, "/", func(port int) []string {
		return []string{"-http-addr", fmt.Sprintf("127.0.0.1:%d", port), "-https-addr", "127.0.0.1:0"}
	})
}
