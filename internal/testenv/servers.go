package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

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
	return "", errors.New("moto_server not found: run `make test` or `make tools` (they install moto into .venv) or set MOTO_SERVER")
}

// StartMoto starts moto's server on a free 127.0.0.1 port and waits until
// it answers. The caller must Stop it.
func StartMoto() (*Server, error) {
	bin, err := motoServerPath()
	if err != nil {
		return nil, err
	}
	return startOnFreePort(bin, "/moto-api/", func(port int) []string { return []string{"-H", "127.0.0.1", "-p", fmt.Sprint(port)} })
}

var moto lazy[string]

// Moto returns the URL of moto's server behind dynamoproxy, which gives its
// DynamoDB the transaction isolation and connection handling real DynamoDB
// has, as `make dev` does. The server starts at the first call of the
// process; under -short the test is skipped.
func Moto(t testing.TB) string {
	t.Helper()
	Need(t, "moto's server (DynamoDB, Secrets Manager)")
	u, err := moto.get(func() (string, error) {
		srv, err := StartMoto()
		if err != nil {
			return "", err
		}
		target, _ := url.Parse(srv.URL)
		proxy := httptest.NewServer(dynamoproxy.New(target))
		cleanups.add(func() { proxy.Close(); srv.Stop() })
		return proxy.URL, nil
	})
	if err != nil {
		t.Fatalf("moto: %v", err)
	}
	return u
}

// FaultProxy starts a dynamoproxy in front of upstream (the URL Moto gave)
// on a free port, for a test to inject DynamoDB and Secrets Manager faults
// into, and stops it when the test ends.
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
