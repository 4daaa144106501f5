package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
)

// The soak's log lines (pkg/billing/soak_test.go), which the figures are
// read from.
var (
	soakDeliveries = regexp.MustCompile(`soak: .*; (\d+) deliveries .* by 8 workers in [^:]+: (\d+) deliveries/s`)
	soakLatency    = regexp.MustCompile(`soak: answers .*latency p50 ([0-9.]+)(ms|µs|s), p99 ([0-9.]+)(ms|µs|s)`)
	soakReconcile  = regexp.MustCompile(`soak: reconcile compared (\d+) organizations: (\d+) differences`)
)

// soak runs the full-size soak (make soak's 10,000 deliveries, without the
// race detector) and reports what it measured.
func soak(root string) ([]figure, error) {
	cmd := exec.Command("go", "test", "-count=1", "-v", "-timeout", "30m", "-run", "^TestSoak_", "./pkg/billing/")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "SOAK_DELIVERIES=10000")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("the soak: %w\n%s", err, out)
	}
	d, l, r := soakDeliveries.FindSubmatch(out), soakLatency.FindSubmatch(out), soakReconcile.FindSubmatch(out)
	if d == nil || l == nil || r == nil {
		return nil, fmt.Errorf("the soak printed no figures:\n%s", out)
	}
	num := func(b []byte) float64 { v, _ := strconv.ParseFloat(string(b), 64); return v }
	ms := func(v []byte, unit []byte) float64 {
		switch string(unit) {
		case "µs":
			return num(v) / 1000
		case "s":
			return num(v) * 1000
		}
		return num(v)
	}
	delivered, diffs := num(d[1]), num(r[2])
	return []figure{
		{Name: "soak: deliveries (duplicates, reordered, concurrent, foreign)", Value: delivered, Unit: "deliveries", Target: "≥ 10,000", Met: ptr(delivered >= 10000)},
		{Name: "soak: throughput, 8 workers", Value: num(d[2]), Unit: "deliveries/s", Note: "bound by moto's speed"},
		{Name: "soak: delivery latency p50", Value: ms(l[1], l[2]), Unit: "ms"},
		{Name: "soak: delivery latency p99", Value: ms(l[3], l[4]), Unit: "ms"},
		{Name: "soak: reconcile differences afterwards", Value: diffs, Unit: "differences", Target: "0", Met: ptr(diffs == 0)},
	}, nil
}
