// Command bench is `make bench`: it measures the figures of issue 8 in one
// run and writes bench/REPORT.md and bench/results.json. Every figure is
// measured now, next to a baseline measured in the same run.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

type figure struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Target string  `json:"target,omitempty"`
	Met    *bool   `json:"met,omitempty"`
	Note   string  `json:"note,omitempty"`
}

type results struct {
	When    string   `json:"when"`
	Machine string   `json:"machine"`
	Figures []figure `json:"figures"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	root, _ := os.Getwd()
	tmp, err := os.MkdirTemp("", "bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	res := results{When: time.Now().UTC().Format(time.RFC3339), Machine: machine()}
	add := func(f figure) {
		res.Figures = append(res.Figures, f)
		fmt.Printf("  %-48s %12.3f %s\n", f.Name, f.Value, f.Unit)
	}

	fmt.Printf("cold starts under aws-lambda-rie (median of %d, interleaved with the baseline, this machine's architecture):\n", coldRounds)
	rie := envOr("AWS_LAMBDA_RIE", filepath.Join(root, "bin", "aws-lambda-rie"))
	targets := []coldTarget{{name: "hello", pkg: "./cmd/bench/hello", payload: `{}`}}
	for _, fn := range []struct{ name, payload string }{
		{"webhook", `{"version":"2.0","headers":{},"body":"{}"}`},
		{"subscribe", `{"action":"get_config"}`},
		{"upsert-products", `{"dry_run":"not a bool"}`},
	} {
		targets = append(targets, coldTarget{name: fn.name, pkg: "./functions/" + fn.name, payload: fn.payload})
	}
	for i := range targets {
		if targets[i].bin, err = build(root, tmp, targets[i].pkg, targets[i].name, ""); err != nil {
			return err
		}
	}
	medians, conns, err := coldStarts(rie, targets)
	if err != nil {
		return err
	}
	base := medians[0]
	add(figure{Name: "cold start: hello-world baseline", Value: base, Unit: "ms INIT"})
	for i, t := range targets[1:] {
		ms := medians[i+1]
		ratio := ms / base
		add(figure{Name: "cold start: " + t.name, Value: ms, Unit: "ms INIT", Target: "≤ 2× baseline",
			Met: ptr(ratio <= 2), Note: fmt.Sprintf("%.2f× the baseline", ratio)})
	}
	add(figure{Name: "network connections during INIT and a no-I/O invoke", Value: float64(conns), Unit: "connections",
		Target: "0", Met: ptr(conns == 0)})

	fmt.Println("binary sizes as sam build makes them (linux/arm64, lambda.norpc, stripped):")
	for _, fn := range []string{"webhook", "subscribe", "upsert-products"} {
		bin, err := build(root, tmp, "./functions/"+fn, fn+"-arm64", "arm64")
		if err != nil {
			return err
		}
		st, _ := os.Stat(bin)
		mb := float64(st.Size()) / 1e6
		add(figure{Name: "binary size: " + fn, Value: mb, Unit: "MB", Target: "≤ 10 MB", Met: ptr(mb <= 10)})
	}

	fmt.Println("Go benchmarks (requests counted at the client boundary, against moto and the local Stripe):")
	benches, err := goBench(root)
	if err != nil {
		return err
	}
	for _, f := range benches {
		add(f)
	}

	fmt.Println("the full soak (10,000 deliveries, as make soak runs it; make test runs 1,000):")
	soaked, err := soak(root)
	if err != nil {
		return err
	}
	for _, f := range soaked {
		add(f)
	}
	fmt.Println("reconcile at scale (one pass over 20,000 organizations, 2,000 of another namespace; make test runs 200):")
	reconciled, err := reconcileAtScale(root)
	if err != nil {
		return err
	}
	for _, f := range reconciled {
		add(f)
	}
	fmt.Println("usage under load (10,000 records through the real subscribe binary; make test runs 500):")
	loaded, err := usageUnderLoad(root)
	if err != nil {
		return err
	}
	for _, f := range loaded {
		add(f)
	}
	return write(root, res)
}

func ptr(b bool) *bool { return &b }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func machine() string {
	out, _ := exec.Command("go", "env", "GOOS", "GOARCH").Output()
	return strings.Join(strings.Fields(string(out)), "/") + fmt.Sprintf(", %d CPUs", numCPU())
}

func numCPU() int {
	out, _ := exec.Command("nproc").Output()
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return n
}

// build compiles a function with the Makefile's flags; arch "" is this
// machine's.
func build(root, dir, pkg, name, arch string) (string, error) {
	out := filepath.Join(dir, name, "bootstrap")
	cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-trimpath", "-ldflags=-s", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if arch != "" {
		cmd.Env = append(cmd.Env, "GOOS=linux", "GOARCH="+arch)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

var initReport = regexp.MustCompile(`INIT REPORT\(durationMs: ([0-9.]+)\)`)

// coldRounds is how many cold starts each binary gets. The machine is
// shared: rounds interleave the binaries, so that a slow minute slows the
// baseline as much as the functions, and the median drops the outliers.
const coldRounds = 21

// coldTarget is one binary whose cold start is measured.
type coldTarget struct{ name, pkg, bin, payload string }

// coldStarts starts each target under RIE coldRounds times, round by round,
// invokes it once each time, and returns each target's median INIT
// duration and the connections made to the AWS and Stripe endpoints they
// were given (a listener that counts them).
func coldStarts(rie string, targets []coldTarget) ([]float64, int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, 0, err
	}
	defer ln.Close()
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	sink := "http://" + ln.Addr().String()
	env := []string{"PATH=" + os.Getenv("PATH"), "STAGE=dev", "BILLING_NAMESPACE=bench", "TABLE_NAME=bench",
		"STRIPE_API_KEY=sk_test_bench", "STRIPE_ENDPOINT_SECRET=whsec_bench", "STRIPE_API_BASE=" + sink,
		"AWS_ENDPOINT_URL=" + sink, "AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=x"}
	samples := make([][]float64, len(targets))
	for range coldRounds {
		for i, t := range targets {
			ms, err := coldStart(rie, t.bin, t.payload, env)
			for try := 1; errors.Is(err, errNeverAnswered) && try < 3; try++ {
				// Another process took a port between its choice and
				// aws-lambda-rie's bind: try other ports.
				ms, err = coldStart(rie, t.bin, t.payload, env)
			}
			if err != nil {
				return nil, 0, err
			}
			samples[i] = append(samples[i], ms)
		}
	}
	medians := make([]float64, len(targets))
	for i, s := range samples {
		sort.Float64s(s)
		medians[i] = s[len(s)/2]
	}
	return medians, int(conns.Load()), nil
}

func coldStart(rie, bin, payload string, env []string) (float64, error) {
	ports := freePorts(2)
	if len(ports) < 2 {
		return 0, errors.New("no free ports")
	}
	apiPort, runtimePort := ports[0], ports[1]
	cmd := exec.Command(rie, "--runtime-api-address", fmt.Sprintf("127.0.0.1:%d", runtimePort),
		"--runtime-interface-emulator-address", fmt.Sprintf("127.0.0.1:%d", apiPort), bin)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() }()
	found := make(chan float64, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := initReport.FindStringSubmatch(sc.Text()); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				found <- v
			}
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/2015-03-31/functions/function/invocations", apiPort)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := httpPost(url, payload)
		if err == nil {
			resp.Close()
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s %w: %w", bin, errNeverAnswered, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case v := <-found:
		return v, nil
	case <-time.After(5 * time.Second):
		return 0, fmt.Errorf("%s: no INIT REPORT line", bin)
	}
}

// errNeverAnswered is a cold start whose emulator never took a request.
var errNeverAnswered = errors.New("never answered")

// freePorts returns n distinct free ports: each stays bound until all are
// chosen, so that the same port is never given twice.
func freePorts(n int) []int {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
