package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestBuildFlags are how the tests build binaries: without the RPC shim, as
// the Makefile's build-* targets do, but for this machine and with the race
// detector, so that the real function binaries under aws-lambda-rie are
// checked for races too. `make test` vets and tests with the same settings,
// so every package is compiled once for all of them.
var TestBuildFlags = []string{"-race", "-tags", "lambda.norpc", "-ldflags=-s"}

var (
	buildDir lazy[string]
	builds   sync.Map // package path -> *lazy[string]
)

// Build builds the command at pkg (a path from the repository root, such as
// "functions/webhook" or "cmd/billing-dev") once per process and returns
// the binary's path. Under -short the test is skipped.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	Need(t, "a build of "+pkg)
	dir, err := buildDir.get(func() (string, error) {
		d, err := os.MkdirTemp("", "billing-test-bin-")
		if err == nil {
			cleanups.add(func() { _ = os.RemoveAll(d) })
		}
		return d, err
	})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := builds.LoadOrStore(pkg, &lazy[string]{})
	bin, err := l.(*lazy[string]).get(func() (string, error) {
		out := filepath.Join(dir, strings.ReplaceAll(pkg, "/", "_"), filepath.Base(pkg))
		args := append(append([]string{"build"}, TestBuildFlags...), "-o", out, "./"+pkg)
		cmd := exec.Command("go", args...)
		cmd.Dir = RepoRoot()
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %w\n%s", pkg, err, b)
		}
		return out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// BuildBootstrap builds a function (./functions/<name>) and returns the
// binary's path; see Build.
func BuildBootstrap(t testing.TB, name string) string {
	t.Helper()
	return Build(t, "functions/"+name)
}

func riePath() (string, error) {
	if p := os.Getenv("AWS_LAMBDA_RIE"); p != "" {
		return p, nil
	}
	if p := filepath.Join(RepoRoot(), "bin", "aws-lambda-rie"); fileExists(p) {
		return p, nil
	}
	if p, err := exec.LookPath("aws-lambda-rie"); err == nil {
		return p, nil
	}
	return "", errors.New("aws-lambda-rie not found: run `make test` (it installs it into ./bin) or set AWS_LAMBDA_RIE")
}

// RIE is a function's bootstrap running under aws-lambda-rie.
type RIE struct {
	*Server
	// InvokeURL is the Lambda Invoke path RIE serves (its only function is
	// named "function").
	InvokeURL string
	mu        sync.Mutex
	log       []byte
}

// Log returns everything the emulator and the function printed so far.
func (r *RIE) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.log)
}

func (r *RIE) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, p...)
	return len(p), nil
}

// FunctionPID returns the process ID of the function's bootstrap, which
// aws-lambda-rie starts at the first invocation, or 0 when none runs.
func (r *RIE) FunctionPID() int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at ')'.
		_, rest, ok := strings.Cut(string(stat), ") ")
		fields := strings.Fields(rest)
		if !ok || len(fields) < 2 || fields[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == r.cmd.Process.Pid {
			return pid
		}
	}
	return 0
}

// StartRIE runs bootstrap under aws-lambda-rie with exactly env (plus PATH)
// on free 127.0.0.1 ports, and stops it when the test ends.
func StartRIE(t testing.TB, bootstrap string, env map[string]string) *RIE {
	t.Helper()
	Need(t, "aws-lambda-rie")
	bin, err := riePath()
	if err != nil {
		t.Fatal(err)
	}
	apiPort, _ := FreePort()
	runtimePort, _ := FreePort()
	r := &RIE{}
	r.Server = &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", apiPort)}
	r.InvokeURL = r.URL + "/2015-03-31/functions/function/invocations"
	cmd := exec.Command(bin, "--runtime-api-address", fmt.Sprintf("127.0.0.1:%d", runtimePort),
		"--runtime-interface-emulator-address", fmt.Sprintf("127.0.0.1:%d", apiPort), bootstrap)
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "AWS_LAMBDA_FUNCTION_TIMEOUT=30"}
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.Stdout, cmd.Stderr = r, r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.cmd = cmd
	t.Cleanup(r.Stop)
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", apiPort), 10*time.Second); err != nil {
		t.Fatalf("aws-lambda-rie: %v\n%s", err, r.Log())
	}
	return r
}
