package billing_test

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/pkg/billing"
)

// metricLine is one function's EMF line.
type metricLine struct {
	Function          string
	StripeRequests    *int
	StripeRateLimited *int
}

func metricLines(t *testing.T, out string, function string) []metricLine {
	t.Helper()
	var lines []metricLine
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var l metricLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Function == function {
			if l.StripeRequests == nil || l.StripeRateLimited == nil {
				t.Fatalf("a %s metrics line without the Stripe budget: %s", function, sc.Text())
			}
			lines = append(lines, l)
		}
	}
	return lines
}

// Each function reports what it sent to Stripe and Stripe's 429s, per
// invocation: the numbers the local Stripe itself counted.
func TestStripeBudget_EachInvocationReportsItsRequestsAnd429s(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	var metrics safeBuffer
	f.svc.SetMetricsOutput(&metrics)
	f.stripe.ResetCounts()
	if resp, _ := f.svc.HandleUpsertProducts(t.Context(), json.RawMessage(`{}`)); !resp.OK {
		t.Fatalf("upsert-products: %+v", resp.Error)
	}
	sentToStripe := func() int {
		n := 0
		for _, v := range f.stripe.Counts() {
			n += v
		}
		f.stripe.ResetCounts()
		return n
	}
	upsert := metricLines(t, metrics.String(), "upsert-products")
	if want := sentToStripe(); len(upsert) != 1 || *upsert[0].StripeRequests != want || want == 0 || *upsert[0].StripeRateLimited != 0 {
		t.Fatalf("upsert-products' metrics %+v, want one line with the %d requests the local Stripe saw", upsert, want)
	}

	f.subscribe("org_budget", "tier", "starter", "email", "b@example.com", "instance_types", []string{"gpu-t4"})
	sentToStripe()
	metrics.Reset()
	f.stripe.InjectFault(stripelocal.Fault{Kind: "429", Count: 2, Path: "POST /v1/billing/meter_events"})
	f.ok(req("record_usage", "org_budget", "instance_type", "gpu-t4", "minutes", 5))
	sub := metricLines(t, metrics.String(), "subscribe")
	if want := sentToStripe(); len(sub) != 1 || *sub[0].StripeRequests != want || want < 3 || *sub[0].StripeRateLimited != 2 {
		t.Fatalf("subscribe's metrics %+v, want one line with the %d requests the local Stripe saw and its two 429s", sub, want)
	}
	if names := billing.EmittedMetrics(); !strings.Contains(strings.Join(names["webhook"], ","), "StripeRateLimited") {
		t.Fatalf("the webhook does not report the Stripe budget: %v", names["webhook"])
	}
}
