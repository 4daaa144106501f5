package e2e

// The operator's CLI and the spend controls, through the stack that
// TestEndToEnd_TheCoreAppsFlowsThroughTheRealBinaries runs.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/baseten/billing-functions/internal/devstack"
	"github.com/baseten/billing-functions/internal/testenv"
)

// alertsOnTheBus counts, by threshold, the spend alerts of org that the
// dev stack's alert bus delivered to its queue (the core app's stand-in).
func (s *stack) alertsOnTheBus(t *testing.T, org string) map[int64]int {
	t.Helper()
	got := map[int64]int{}
	for _, detail := range testenv.QueueEvents(t, fmt.Sprintf("http://127.0.0.1:%d", s.ports[3]), devstack.AlertQueueName) {
		var ev struct {
			OrgID     string `json:"org_id"`
			Threshold int64  `json:"threshold"`
		}
		if json.Unmarshal(detail, &ev) == nil && ev.OrgID == org {
			got[ev.Threshold]++
		}
	}
	return got
}

// wantAccess calls check_access through the real subscribe binary.
func (s *stack) wantAccess(org, instanceType string, allowed bool, reason string) {
	s.t.Helper()
	got := s.call(map[string]any{"action": "check_access", "org_id": org, "instance_type": instanceType})
	if got["allowed"] != allowed || got["reason"] != reason {
		s.t.Fatalf("check_access %s %s: %v, want allowed=%v reason=%s", org, instanceType, got, allowed, reason)
	}
}

// billingctlOK returns a function that runs the billingctl binary against
// the stack and returns its output, failing the test when it fails.
func (s *stack) billingctlOK(t *testing.T) func(args ...string) string {
	bin := testenv.Build(t, "cmd/billingctl")
	return func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"--endpoint", s.invokeURL}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("billingctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
}

func (s *stack) billingctl(t *testing.T) {
	ctl, bin := s.billingctlOK(t), testenv.Build(t, "cmd/billingctl") // bin: for the calls meant to fail
	out := ctl("subscribe", "--org", "org_ctl", "--tier", "business", "--email", "ctl@example.com", "--instance-types", "gpu-h100")
	if !strings.Contains(out, "status                incomplete") || !strings.Contains(out, "gpu-h100") {
		t.Fatalf("subscribe:\n%s", out)
	}
	s.pay(t, "org_ctl")
	ctl("change-tier", "--org", "org_ctl", "--tier", "starter")
	ctl("set-instance-types", "--org", "org_ctl", "--types", "cpu-8x32")
	// A cap of 2 cents: 3 minutes at 0.8667 cross 50%, 80% and 100% in one
	// record, each alert sent once to the bus.
	ctl("spend-cap", "--org", "org_ctl", "--amount", "2", "--currency", "usd")
	ctl("record-usage", "--org", "org_ctl", "--type", "cpu-8x32", "--minutes", "3")
	if out := ctl("alerts", "--org", "org_ctl"); !strings.Contains(out, "spend 2.6001 usd (cap 2)") ||
		strings.Count(out, "alert ") != 3 || !strings.Contains(out, "alert 100%") {
		t.Fatalf("alerts:\n%s", out)
	}
	if out := ctl("access", "--org", "org_ctl", "--type", "cpu-8x32"); !strings.Contains(out, "spend_cap_reached") {
		t.Fatalf("access over the cap:\n%s", out)
	}
	log := s.log("subscribe")
	if strings.Count(log, `"msg":"spend alert"`) != 3 || strings.Contains(log, "not sent to the bus") {
		t.Fatalf("the spend alerts were not each sent once to the bus:\n%s", log)
	}
	if got := s.alertsOnTheBus(t, "org_ctl"); fmt.Sprint(got) != "map[50:1 80:1 100:1]" {
		t.Fatalf("alerts the bus delivered for org_ctl, by threshold: %v", got)
	}
	ctl("spend-cap", "--org", "org_ctl", "--amount", "none")
	if out := ctl("access", "--org", "org_ctl", "--type", "cpu-8x32"); !strings.Contains(out, "allowed") || !strings.Contains(out, "true") {
		t.Fatalf("access back under the tier's cap:\n%s", out)
	}
	// A file of records goes out as record_usage_batch: the one record
	// for an instance type the organization does not have fails on its
	// own; running the file again counts nothing twice.
	file := filepath.Join(t.TempDir(), "records.jsonl")
	lines := `{"org_id":"org_ctl","instance_type":"cpu-8x32","minutes":4,"request_id":"file-1"}
{"org_id":"org_ctl","instance_type":"gpu-t4","minutes":1,"request_id":"file-2"}
{"org_id":"org_ctl","instance_type":"cpu-8x32","minutes":5,"request_id":"file-3"}
`
	if err := os.WriteFile(file, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		out, err := exec.Command(bin, "--endpoint", s.invokeURL, "record-usage", "--file", file).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "file-2") || !strings.Contains(string(out), "not_found") ||
			!strings.Contains(string(out), "recorded      2") || !strings.Contains(string(out), "1 of 3 records were not recorded") {
			t.Fatalf("record-usage --file: %v\n%s", err, out)
		}
	}
	minutes := ""
	for _, line := range strings.Split(ctl("preview", "--org", "org_ctl"), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "cpu-8x32" {
			minutes = f[2]
		}
	}
	if minutes != "12" {
		t.Fatalf("cpu-8x32 minutes on the upcoming invoice: %q, want 12 (3, then 4 and 5 once)", minutes)
	}
	ctl("cancel", "--org", "org_ctl")
	out = ctl("status", "--org", "org_ctl")
	for _, want := range []string{"tier                  starter", "instance types        cpu-8x32", "cancel at period end  true"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}
	if out := ctl("portal", "--org", "org_ctl"); !strings.Contains(out, "http") {
		t.Fatalf("portal:\n%s", out)
	}
	// Checkout: billingctl prints the page's URL; the customer pays on it
	// (posted as the browser does); the webhook binary mirrors the
	// subscription Checkout made; the billing page shows its invoice.
	out = ctl("checkout", "--org", "org_ctl_co", "--tier", "starter", "--email", "co@example.com", "--instance-types", "gpu-t4")
	pageURL := ""
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "url" {
			pageURL = f[1]
		}
	}
	if !strings.HasPrefix(pageURL, s.stripeURL) {
		t.Fatalf("checkout printed no page of the local Stripe:\n%s", out)
	}
	resp, _ := testenv.PostForm(t, pageURL+"/pay", url.Values{"card": {"pm_card_visa"}})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "http://localhost:8000/billing/done?session=cs_") {
		t.Fatalf("paying on the Checkout page: %v", resp)
	}
	s.control("/_local/wait", nil)
	if out := ctl("status", "--org", "org_ctl_co"); !strings.Contains(out, "status                active") || !strings.Contains(out, "gpu-t4") {
		t.Fatalf("status after Checkout:\n%s\n%s", out, s.webhookLog())
	}
	if out := ctl("invoices", "--org", "org_ctl_co"); !strings.Contains(out, " paid ") || !strings.Contains(out, "USD") || !strings.Contains(out, "/_local/invoices/") {
		t.Fatalf("invoices:\n%s", out)
	}
	if out := ctl("preview", "--org", "org_ctl_co"); !strings.Contains(out, "starter") || !strings.Contains(out, "gpu-t4") || !strings.Contains(out, "total") {
		t.Fatalf("preview:\n%s", out)
	}
	if out := ctl("upsert-products", "--dry-run"); !strings.Contains(out, "unchanged 11") {
		t.Fatalf("upsert-products --dry-run:\n%s", out)
	}
	if out := ctl("--json", "status", "--org", "org_ctl"); !strings.Contains(out, `"ok": true`) {
		t.Fatalf("--json:\n%s", out)
	}
	cmd := exec.Command(bin, "--endpoint", s.invokeURL, "record-usage", "--org", "org_ctl", "--type", "gpu-t4", "--minutes", "1")
	out2, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out2), "next:") {
		t.Fatalf("an error must say what to do next:\n%s", out2)
	}
}

// migratePrices changes the starter tier's and gpu-a10g's prices through
// billingctl upsert-products, then moves the subscriptions on the old
// prices with billingctl migrate-prices, through the real subscribe
// binary: the dry run lists the moves (the tier now, the instance type at
// the period's end), the migration makes them (the instance type by a
// subscription schedule), and a dry run after it has nothing left. A
// cancellation then releases the schedule first: Stripe refuses one on a
// scheduled subscription.
func (s *stack) migratePrices(t *testing.T) {
	ctl := s.billingctlOK(t)
	if out := ctl("subscribe", "--org", "org_mig", "--tier", "starter", "--email", "mig@example.com", "--instance-types", "gpu-a10g"); !strings.Contains(out, "starter") {
		t.Fatalf("subscribe:\n%s", out)
	}
	s.pay(t, "org_mig")
	cat, _ := os.ReadFile(filepath.Join(testenv.RepoRoot(), "pkg", "billing", "catalog.json"))
	edited := strings.Replace(string(cat), `"unit_amount_decimal": "4900"`, `"unit_amount_decimal": "5900"`, 1)
	edited = strings.Replace(edited, `"unit_amount_decimal": "2.0117"`, `"unit_amount_decimal": "2.5000"`, 1)
	file := filepath.Join(t.TempDir(), "catalog.json")
	if err := os.WriteFile(file, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := ctl("upsert-products", "--catalog", file); !strings.Contains(out, "updated 2") {
		t.Fatalf("upsert-products with the new prices:\n%s", out)
	}
	plan := ctl("migrate-prices", "--dry-run")
	now := len(regexp.MustCompile(`\snow\s+planned`).FindAllString(plan, -1))
	atEnd := len(regexp.MustCompile(`\speriod_end\s+planned`).FindAllString(plan, -1))
	if !strings.Contains(plan, "org_mig") || now == 0 || atEnd == 0 ||
		!strings.Contains(plan, fmt.Sprintf("%d items to move now, %d metered items to move when their period renews", now, atEnd)) {
		t.Fatalf("migrate-prices --dry-run:\n%s", plan)
	}
	if out := ctl("migrate-prices"); !strings.Contains(out, fmt.Sprintf("%d items moved, %d metered items scheduled, 0 failed", now, atEnd)) || !strings.Contains(out, "org_mig") {
		t.Fatalf("migrate-prices (the plan had %d moves now and %d at the period's end):\n%s", now, atEnd, out)
	}
	if out := ctl("migrate-prices", "--dry-run"); !strings.Contains(out, "0 items to move now, 0 metered") {
		t.Fatalf("migrate-prices --dry-run after the migration:\n%s", out)
	}
	ctl("cancel", "--org", "org_mig") // billingctlOK: exit status 0
	if sub, _ := s.status("org_mig"); sub["cancel_at_period_end"] != true {
		t.Fatalf("org_mig after the cancellation: %v", sub)
	}
}
