package stripelocal_test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/baseten/billing-functions/internal/testenv"
)

// flowCatalogAndSubscription is the project's Stripe usage end to end. It
// runs against the local Stripe (checked by stripe-mock) and, opted in,
// against real Stripe test mode, so that the two can be compared.
func flowCatalogAndSubscription(t *testing.T, sc *client.API, ns string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	meta := map[string]string{"billing_namespace": ns, "billing_key": "gpu-t4"}
	prod, err := sc.Products.New(&stripe.ProductParams{ID: stripe.String(ns + "-gpu-t4"), Name: stripe.String("T4 GPU"),
		Metadata: meta})
	must(err)
	defer func() { _, _ = sc.Products.Update(prod.ID, &stripe.ProductParams{Active: stripe.Bool(false)}) }()

	meter, err := sc.BillingMeters.New(&stripe.BillingMeterParams{DisplayName: stripe.String("T4 minutes"), EventName: stripe.String(strings.ReplaceAll(ns, "-", "_") + "_gpu_t4"),
		DefaultAggregation: &stripe.BillingMeterDefaultAggregationParams{Formula: stripe.String("sum")}})
	must(err)
	defer func() { _, _ = sc.BillingMeters.Deactivate(meter.ID, nil) }()

	newPrice := func(amount float64, transfer bool) *stripe.Price {
		p, err := sc.Prices.New(&stripe.PriceParams{Product: stripe.String(prod.ID), Currency: stripe.String("usd"),
			UnitAmountDecimal: stripe.Float64(amount), LookupKey: stripe.String(ns + ":gpu-t4"), TransferLookupKey: stripe.Bool(transfer),
			Recurring: &stripe.PriceRecurringParams{Interval: stripe.String("month"), UsageType: stripe.String("metered"), Meter: stripe.String(meter.ID)},
			Metadata:  meta})
		must(err)
		return p
	}
	first := newPrice(1.25, false)
	second := newPrice(1.5, true)
	_, err = sc.Prices.Update(first.ID, &stripe.PriceParams{Active: stripe.Bool(false)})
	must(err)
	it := sc.Prices.List(&stripe.PriceListParams{LookupKeys: stripe.StringSlice([]string{ns + ":gpu-t4"})})
	if !it.Next() || it.Price().ID != second.ID {
		t.Fatalf("the lookup key did not move to %s", second.ID)
	}

	cus, err := sc.Customers.New(&stripe.CustomerParams{Metadata: map[string]string{"org_id": "org_flow", "billing_namespace": ns}})
	must(err)
	defer func() { _, _ = sc.Customers.Del(cus.ID, nil) }()
	sub, err := sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(cus.ID), PaymentBehavior: stripe.String("default_incomplete"),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(second.ID)}}, Metadata: map[string]string{"org_id": "org_flow"}})
	must(err)
	if sub.Status != "incomplete" && sub.Status != "active" {
		t.Fatalf("new subscription status %s", sub.Status)
	}
	_, err = sc.BillingMeterEvents.New(&stripe.BillingMeterEventParams{EventName: stripe.String(meter.EventName), Identifier: stripe.String(ns + "-usage-1"),
		Payload: map[string]string{"stripe_customer_id": cus.ID, "value": "7"}})
	must(err)
	up, err := sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)})
	must(err)
	if !up.CancelAtPeriodEnd {
		t.Fatal("cancel_at_period_end not set")
	}
	_, err = sc.BillingPortalSessions.New(&stripe.BillingPortalSessionParams{Customer: stripe.String(cus.ID), ReturnURL: stripe.String("https://example.com/billing")})
	if err != nil && !strings.Contains(err.Error(), "configuration") { // a fresh live account may have no portal configuration
		t.Fatal(err)
	}
	canceled, err := sc.Subscriptions.Cancel(sub.ID, nil)
	must(err)
	if canceled.Status != "canceled" && canceled.Status != "incomplete_expired" {
		t.Fatalf("after cancel: %s", canceled.Status)
	}
	evs := sc.Events.List(&stripe.EventListParams{Type: stripe.String("customer.subscription.*")})
	seen := 0
	for evs.Next() && seen < 20 {
		seen++
	}
	if seen == 0 {
		t.Fatal("no subscription events listed")
	}
}

func TestFlow_CatalogAndSubscriptionLocally(t *testing.T) {
	e := newEnv(t)
	flowCatalogAndSubscription(t, e.sc, "flow-local")
}

func TestStandalone_StartsOnAFreePortAndServes(t *testing.T) {
	bin := testenv.Build(t, "cmd/stripelocal")
	ref := testenv.StripeMock(t)
	port, _ := testenv.FreePort()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd := exec.Command(bin, "-addr", fmt.Sprintf("127.0.0.1:%d", port), "-validator", ref.Core)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var err error
	sc := stripeClient(url, "sk_test_standalone")
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err = sc.Customers.New(&stripe.CustomerParams{}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("the standalone server never answered: %v", err)
	}
	var counts map[string]int
	getJSON(t, url+"/_local/counts", &counts)
	if counts["POST /v1/customers"] < 1 {
		t.Fatalf("counts %v", counts)
	}
}
