package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// The usage load test's log line (internal/e2e/usage_test.go).
var usageLoad = regexp.MustCompile(`usage load: (\d+) records \((\d+) sent with the retries\) for (\d+) organizations in (\d+) batches by 2 callers in [^:]+: (\d+) records/s; ` +
	`([0-9.]+) Stripe and ([0-9.]+) DynamoDB requests per record; (\d+) of (\d+) organizations' summaries match; (\d+) of (\d+) spend counters match; (\d+) wrong answers`)

// beforeCounters is the last commit before the spend counters (issue 18):
// its usage path wrote the answers with BatchWriteItem, with no spend
// record. The usage load runs there too, in the same bench run.
const beforeCounters = "2630d2969d219b3b744083bb288f9e4d461b91e9"

// The earlier commit's usage load line: the figures up to records/s.
var usageLoadBefore = regexp.MustCompile(`usage load: (\d+) records \(\d+ sent with the retries\) for \d+ organizations in \d+ batches by 2 callers in [^:]+: (\d+) records/s;`)

// runUsageLoad runs the usage load test at 10,000 records for 500
// organizations in dir and returns its output.
func runUsageLoad(dir string) ([]byte, error) {
	cmd := exec.Command("go", "test", "-count=1", "-v", "-timeout", "30m", "-tags", "lambda.norpc", "-run", "^TestEndToEnd_UsageUnderLoadCountsEachRecordOnce$", "./internal/e2e/")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "USAGE_LOAD_RECORDS=10000")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("the usage load in %s: %w\n%s", dir, err, out)
	}
	return out, nil
}

// usageBefore runs the usage load at beforeCounters, in a worktree that
// shares this one's tools, virtualenv and moto launcher (the emulator is
// the same on both sides), and returns its records per second.
func usageBefore(root string) (float64, error) {
	dir, err := os.MkdirTemp("", "bench-before-counters-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	git := func(args ...string) error {
		out, err := exec.Command("git", append([]string{"-C", root}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("git %v: %w\n%s", args, err, out)
		}
		return nil
	}
	if err := git("worktree", "add", "--detach", dir, beforeCounters); err != nil {
		return 0, err
	}
	defer func() { _ = git("worktree", "remove", "--force", dir) }()
	for _, link := range []string{"bin", ".venv"} {
		if err := os.Symlink(filepath.Join(root, link), filepath.Join(dir, link)); err != nil {
			return 0, err
		}
	}
	launcher, err := os.ReadFile(filepath.Join(root, "scripts", "moto_server.py"))
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, "scripts", "moto_server.py"), launcher, 0o644); err != nil {
		return 0, err
	}
	out, err := runUsageLoad(dir)
	if err != nil {
		return 0, err
	}
	m := usageLoadBefore.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("the usage load before the counters printed no figures:\n%s", out)
	}
	return strconv.ParseFloat(string(m[2]), 64)
}

// usageUnderLoad runs the usage load test at 10,000 records for 500
// organizations through the real subscribe binary, then at the commit
// before the spend counters, and reports both.
func usageUnderLoad(root string) ([]figure, error) {
	out, err := runUsageLoad(root)
	if err != nil {
		return nil, err
	}
	before, err := usageBefore(root)
	if err != nil {
		return nil, err
	}
	m := usageLoad.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("the usage load printed no figures:\n%s", out)
	}
	num := func(b []byte) float64 { v, _ := strconv.ParseFloat(string(b), 64); return v }
	records, matched, orgs, spendMatched, wrong := num(m[1]), num(m[8]), num(m[9]), num(m[10]), num(m[12])
	return []figure{
		{Name: "usage load: records (5% sent again, 1% for a type not on the plan)", Value: records, Unit: "records", Target: "10,000", Met: ptr(records >= 10000),
			Note: fmt.Sprintf("%s sent in %s batches of up to 500 by 2 callers, %s organizations", m[2], m[4], m[3])},
		{Name: "usage load: throughput through the real binary", Value: num(m[5]), Unit: "records/s", Note: "USAGE_RATE=500 against the local Stripe"},
		{Name: "usage load: throughput before the spend counters", Value: before, Unit: "records/s", Note: "commit " + beforeCounters[:7] + ", same emulator, this run"},
		{Name: "usage load: throughput with the counters / before them", Value: num(m[5]) / before, Unit: "×", Target: "≥ 0.9", Met: ptr(num(m[5])/before >= 0.9)},
		{Name: "usage load: Stripe requests per record sent", Value: num(m[6]), Unit: "requests", Note: "one per valid record; retries and refused records send none"},
		{Name: "usage load: DynamoDB requests per record sent", Value: num(m[7]), Unit: "requests", Target: "≤ 0.1", Met: ptr(num(m[7]) <= 0.1)},
		{Name: "usage load: organizations whose Stripe summary matches", Value: matched, Unit: "organizations", Target: fmt.Sprintf("all %.0f", orgs), Met: ptr(matched == orgs)},
		{Name: "usage load: organizations whose spend counter equals its Stripe summary × price", Value: spendMatched, Unit: "organizations", Target: fmt.Sprintf("all %.0f", orgs), Met: ptr(spendMatched == orgs)},
		{Name: "usage load: wrong answers (a valid record not recorded, an invalid one without its error)", Value: wrong, Unit: "records", Target: "0", Met: ptr(wrong == 0)},
	}, nil
}

// The reconcile scale test's log line (pkg/billing/reconcile_scale_test.go).
var reconcileScale = regexp.MustCompile(`reconcile at scale: (\d+) organizations \((\d+) of another namespace\) in (\d+) steps in ([^:]+): (\d+) differences; ` +
	`([0-9.]+) Stripe and ([0-9.]+) DynamoDB requests and ([0-9.]+) ms per organization at ([0-9.]+) requests/s; ` +
	`a million: (\d+) Stripe and (\d+) DynamoDB requests, ([0-9.]+) min at the rate, ([0-9.]+) min at the measured pace`)

// reconcileAtScale runs one reconcile pass over 20,000 organizations
// (2,000 of them another namespace's) at the default rate and reports its
// cost, and the cost of a million organizations projected from it.
func reconcileAtScale(root string) ([]figure, error) {
	cmd := exec.Command("go", "test", "-count=1", "-v", "-timeout", "30m", "-run", "^TestReconcile_AtScale$", "./pkg/billing/")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "RECONCILE_SCALE_ORGS=20000")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("reconcile at scale: %w\n%s", err, out)
	}
	m := reconcileScale.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("reconcile at scale printed no figures:\n%s", out)
	}
	num := func(b []byte) float64 { v, _ := strconv.ParseFloat(string(b), 64); return v }
	total, foreign := num(m[1]), num(m[2])
	ours := total - foreign
	return []figure{
		{Name: "reconcile: organizations in the local Stripe", Value: total, Unit: "organizations",
			Note: fmt.Sprintf("%.0f of another namespace; one pass of %s steps in %s", foreign, m[3], m[4])},
		{Name: "reconcile: differences found (1 in 100 drifted)", Value: num(m[5]), Unit: "differences", Target: fmt.Sprintf("%.0f, each once", ours/100), Met: ptr(num(m[5]) == ours/100)},
		{Name: "reconcile: Stripe requests per organization", Value: num(m[6]), Unit: "requests", Note: "searches of 100, and one confirming read per difference"},
		{Name: "reconcile: DynamoDB requests per organization", Value: num(m[7]), Unit: "requests"},
		{Name: "reconcile: time per organization", Value: num(m[8]), Unit: "ms", Note: fmt.Sprintf("paced at %s Stripe requests/s", m[9])},
		{Name: "reconcile: a million organizations, Stripe requests (projected)", Value: num(m[10]), Unit: "requests"},
		{Name: "reconcile: a million organizations, DynamoDB requests (projected)", Value: num(m[11]), Unit: "requests"},
		{Name: "reconcile: a million organizations at the configured rate (projected)", Value: num(m[12]), Unit: "min",
			Note: fmt.Sprintf("%s min at this run's measured pace, moto included", m[13])},
	}, nil
}
