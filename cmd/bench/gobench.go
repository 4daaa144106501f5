package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

func httpPost(url, body string) (io.ReadCloser, error) {
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body, nil
}

// targets of the Go benchmarks' metrics, by benchmark and unit.
var targets = map[string]struct {
	target string
	met    func(v float64) bool
}{
	"WebhookRequests/new dynamodb-req/op":              {"1", func(v float64) bool { return v == 1 }},
	"WebhookRequests/new stripe-req/op":                {"0", func(v float64) bool { return v == 0 }},
	"WebhookRequests/duplicate dynamodb-req/op":        {"≤ 1", func(v float64) bool { return v <= 1 }},
	"WebhookRequests/duplicate stripe-req/op":          {"0", func(v float64) bool { return v == 0 }},
	"WebhookRequests/stale dynamodb-req/op":            {"≤ 1", func(v float64) bool { return v <= 1 }},
	"WebhookRequests/stale stripe-req/op":              {"0", func(v float64) bool { return v == 0 }},
	"WebhookRequests/foreign dynamodb-req/op":          {"≤ 1", func(v float64) bool { return v <= 1 }},
	"WebhookRequests/foreign stripe-req/op":            {"0", func(v float64) bool { return v == 0 }},
	"WebhookRequests/tie dynamodb-req/op":              {"1", func(v float64) bool { return v == 1 }},
	"WebhookRequests/tie stripe-req/op":                {"1 retrieve", func(v float64) bool { return v == 1 }},
	"WebhookRequests/version_mismatch dynamodb-req/op": {"1", func(v float64) bool { return v == 1 }},
	"WebhookRequests/version_mismatch stripe-req/op":   {"1 retrieve", func(v float64) bool { return v == 1 }},
	"WebhookCPU µs/op":                                 {"≤ 150 µs", func(v float64) bool { return v <= 150 }},
	"GetStatus dynamodb-req/op":                        {"1", func(v float64) bool { return v == 1 }},
	"GetStatus stripe-req/op":                          {"0", func(v float64) bool { return v == 0 }},
	"UpsertProducts/steady stripe-writes/op":           {"0", func(v float64) bool { return v == 0 }},
	"UpsertProducts/steady stripe-reads/op":            {"≤ 3", func(v float64) bool { return v <= 3 }},
	"UpsertProducts/steady dynamodb-writes/op":         {"0", func(v float64) bool { return v == 0 }},
	"SecretsWarm getsecretvalue/1000-invocations":      {"1", func(v float64) bool { return v == 1 }},
	// Issue 17's cost of each command, with 250 ms per Stripe request and
	// 5 ms per DynamoDB request injected.
	"CommandCost/get_status stripe-req/op":   {"0", func(v float64) bool { return v == 0 }},
	"CommandCost/get_status dynamodb-req/op": {"1", func(v float64) bool { return v == 1 }},
	"CommandCost/get_status p50/floor":       {"≤ 1.2", func(v float64) bool { return v <= 1.2 }},
	// Issue 18: check_access, from DynamoDB alone.
	"CommandCost/check_access stripe-req/op":         {"0", func(v float64) bool { return v == 0 }},
	"CommandCost/check_access dynamodb-req/op":       {"1", func(v float64) bool { return v == 1 }},
	"CommandCost/check_access p50/floor":             {"≤ 1.2", func(v float64) bool { return v <= 1.2 }},
	"CommandCost/subscribe stripe-req/op":            {"2", func(v float64) bool { return v == 2 }},
	"CommandCost/subscribe dynamodb-req/op":          {"≤ 5", func(v float64) bool { return v <= 5 }},
	"CommandCost/subscribe p50/floor":                {"≤ 1.15", func(v float64) bool { return v <= 1.15 }},
	"CommandCost/change_tier stripe-req/op":          {"1", func(v float64) bool { return v == 1 }},
	"CommandCost/change_tier dynamodb-req/op":        {"≤ 4", func(v float64) bool { return v <= 4 }},
	"CommandCost/change_tier p50/floor":              {"≤ 1.15", func(v float64) bool { return v <= 1.15 }},
	"CommandCost/set_instance_types stripe-req/op":   {"1", func(v float64) bool { return v == 1 }},
	"CommandCost/set_instance_types dynamodb-req/op": {"≤ 4", func(v float64) bool { return v <= 4 }},
	"CommandCost/set_instance_types p50/floor":       {"≤ 1.15", func(v float64) bool { return v <= 1.15 }},
	"CommandCost/cancel stripe-req/op":               {"1", func(v float64) bool { return v == 1 }},
	"CommandCost/cancel dynamodb-req/op":             {"≤ 4", func(v float64) bool { return v <= 4 }},
	"CommandCost/cancel p50/floor":                   {"≤ 1.15", func(v float64) bool { return v <= 1.15 }},
	"CommandCost/record_usage stripe-req/op":         {"1", func(v float64) bool { return v == 1 }},
	"CommandCost/record_usage dynamodb-req/op":       {"≤ 2", func(v float64) bool { return v <= 2 }},
	"CommandCost/record_usage p50/floor":             {"≤ 1.15", func(v float64) bool { return v <= 1.15 }},
	"UsageBatchCost stripe-req/op":                   {"500", func(v float64) bool { return v == 500 }},
	"UsageBatchCost dynamodb-req/op":                 {"≤ 50", func(v float64) bool { return v <= 50 }},
	"UsageBatchCost p50/floor":                       {"≤ 1.2", func(v float64) bool { return v <= 1.2 }},
}

// benchRuns are the go test -bench runs make bench makes: the request
// counts 40 times each; the command costs, whose calls take a quarter
// second or more each, fewer times.
var benchRuns = []struct{ pattern, skip, times string }{
	{".", "Cost", "40x"},
	{"CommandCost", "", "10x"},
	{"UsageBatchCost", "", "3x"},
}

// goBench runs pkg/billing's benchmarks and turns each metric into a
// figure.
func goBench(root string) ([]figure, error) {
	var figs []figure
	for _, r := range benchRuns {
		args := []string{"test", "-run", "^$", "-bench", r.pattern, "-benchtime", r.times, "-count", "1", "-timeout", "30m"}
		if r.skip != "" {
			args = append(args, "-skip", r.skip)
		}
		cmd := exec.Command("go", append(args, "./pkg/billing/")...)
		cmd.Dir = root
		cmd.Env = os.Environ()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("go test -bench %s: %w\n%s", r.pattern, err, out)
		}
		figs = append(figs, benchFigures(out)...)
	}
	return figs, nil
}

// benchFigures turns each metric of go test -bench's output into a figure.
func benchFigures(out []byte) []figure {
	var figs []figure
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			unit := f[i+1]
			if unit == "ns/op" {
				v, unit = v/1000, "µs/op"
			}
			fig := figure{Name: name + " " + unit, Value: v, Unit: unit}
			if t, ok := targets[name+" "+unit]; ok {
				fig.Target, fig.Met = t.target, ptr(t.met(v))
			}
			if unit == "µs/op" && v == 0 {
				continue // a benchmark that reports its own latency
			}
			figs = append(figs, fig)
		}
	}
	return figs
}

// costTable writes the command costs (BenchmarkCommandCost and
// BenchmarkUsageBatchCost, rows of the table above) as one table, an
// action a row.
func costTable(b *strings.Builder, figs []figure) {
	values := map[string]map[string]float64{}
	var actions []string
	for _, f := range figs {
		name, metric, ok := strings.Cut(f.Name, " ")
		if !ok || !(strings.HasPrefix(name, "CommandCost/") || name == "UsageBatchCost") {
			continue
		}
		action := strings.TrimPrefix(name, "CommandCost/")
		if name == "UsageBatchCost" {
			action = "record_usage_batch (500 records, 50 organizations)"
		}
		if values[action] == nil {
			values[action] = map[string]float64{}
			actions = append(actions, action)
		}
		values[action][metric] = f.Value
	}
	if len(actions) == 0 {
		return
	}
	fmt.Fprintln(b, "## The cost of each command")
	fmt.Fprintln(b)
	fmt.Fprintln(b, "In this run each Stripe request is delayed 250 ms beyond what the local Stripe takes (its delay fault), "+
		"and each DynamoDB request is answered 5 ms after it is sent: a DynamoDB with a 5 ms round trip, "+
		"moto's own time inside it as DynamoDB's own work is inside its latency (longer only when moto takes longer). "+
		"The floor is Stripe round trips × 250 ms + DynamoDB requests × 5 ms (for the batch, 500 / 8 workers round trips). "+
		"Undelayed is the same calls with no delay: what moto and the local Stripe take on this machine.")
	fmt.Fprintln(b)
	fmt.Fprintln(b, "| action | Stripe requests | DynamoDB requests | p50 | p95 | floor | p50 / floor | p95 / floor | undelayed p50 |")
	fmt.Fprintln(b, "|---|---|---|---|---|---|---|---|---|")
	for _, a := range actions {
		v := values[a]
		fmt.Fprintf(b, "| %s | %g | %g | %.1f ms | %.1f ms | %.0f ms | %.2f | %.2f | %.1f ms |\n", a, v["stripe-req/op"], v["dynamodb-req/op"],
			v["p50-ms"], v["p95-ms"], v["floor-ms"], v["p50/floor"], v["p95/floor"], v["undelayed-p50-ms"])
	}
	fmt.Fprintln(b)
}

// write saves results.json and REPORT.md.
func write(root string, res results) error {
	dir := root + "/bench"
	raw, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(dir+"/results.json", append(raw, '\n'), 0o644); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmark report\n\nMeasured %s on %s, all in this run (`make bench`).\n\n", res.When, res.Machine)
	fmt.Fprintln(&b, "| figure | value | target | met |")
	fmt.Fprintln(&b, "|---|---|---|---|")
	var missed []string
	for _, f := range res.Figures {
		met := ""
		if f.Met != nil {
			met = "yes"
			if !*f.Met {
				met = "**no**"
				missed = append(missed, f.Name)
			}
		}
		val := strconv.FormatFloat(f.Value, 'f', -1, 64)
		if f.Value != float64(int64(f.Value)) {
			val = strconv.FormatFloat(f.Value, 'f', 3, 64)
		}
		note := ""
		if f.Note != "" {
			note = " (" + f.Note + ")"
		}
		fmt.Fprintf(&b, "| %s | %s %s%s | %s | %s |\n", f.Name, val, f.Unit, note, f.Target, met)
	}
	fmt.Fprintln(&b)
	costTable(&b, res.Figures)
	if len(missed) == 0 {
		fmt.Fprintln(&b, "Every target with a figure is met.")
	} else {
		fmt.Fprintf(&b, "Targets missed in this run: %s. The targets stand; the README's Status section says what is known about each.\n", strings.Join(missed, "; "))
	}
	return os.WriteFile(dir+"/REPORT.md", []byte(b.String()), 0o644)
}
