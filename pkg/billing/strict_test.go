package billing_test

// The defects the strict local Stripe uncovered ("Strict like Stripe"):
// each test failed on the code that leaned on the old, kinder local Stripe.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/pkg/billing"
)

func TestUpsert_NoEmptyStringReachesStripe(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	// The instance types have no description: the first run creates their
	// products without one (Stripe refuses description="" on create).
	if res := f.upsert(billing.UpsertRequest{}); res.Created != 11 {
		t.Fatalf("first run: %+v", res)
	}
	// A description taken away is unset with "", which an update allows.
	cat := withEntry(billing.DefaultCatalog(), "starter", func(e *billing.Entry) { e.Description = "" })
	f.upsert(billing.UpsertRequest{Catalog: &cat})
	if p, _ := f.sc().Products.Get("bf_"+ns+"_starter", nil); p.Description != "" {
		t.Fatalf("description %q, want it unset", p.Description)
	}
	if again := f.upsert(billing.UpsertRequest{Catalog: &cat}); again.Unchanged != 11 {
		t.Fatalf("a third run still changes things: %+v", again)
	}
}

func TestUpsert_AnArchiveStoppedHalfwayConvergesOnTheRerun(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	without := withEntry(billing.DefaultCatalog(), "gpu-h100", nil)
	// The product loses its default price and is archived; archiving the
	// price then fails.
	f.stripe.InjectFault(stripelocal.Fault{Kind: "500", Path: "POST /v1/prices/{id}", Count: 3})
	if _, err := f.svc.UpsertProducts(context.Background(), billing.UpsertRequest{Catalog: &without}); billing.ErrorCode(err) != billing.CodeUnavailable {
		t.Fatalf("interrupted archive: %v", err)
	}
	f.stripe.ClearFaults()
	f.upsert(billing.UpsertRequest{Catalog: &without})
	st := f.read()
	p := st.products["bf_"+ns+"_gpu-h100"]
	if p == nil || p.Active || len(st.activePricesOf(p.ID)) != 0 {
		t.Fatalf("after the rerun: product %+v, active prices %v", p, st.activePricesOf("bf_"+ns+"_gpu-h100"))
	}
	if m, _ := f.store.GetProductMapping(context.Background(), "gpu-h100"); m.Active {
		t.Fatal("the mapping is still active")
	}
}

func TestUpsert_LongDecimalAmountsRoundTripExactly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	// 24 significant digits: a float64 keeps about 16.
	cat := withEntry(billing.DefaultCatalog(), "gpu-h100", func(e *billing.Entry) { e.UnitAmountDecimal = "123456789012.123456789012" })
	f.upsert(billing.UpsertRequest{Catalog: &cat})
	m, _ := f.store.GetProductMapping(context.Background(), "gpu-h100")
	raw := f.rawStripe("/v1/prices/" + m.PriceID)
	if !strings.Contains(raw, `"unit_amount_decimal":"123456789012.123456789012"`) {
		t.Fatalf("Stripe holds %s", raw)
	}
	if again := f.upsert(billing.UpsertRequest{Catalog: &cat}); again.Unchanged != 11 {
		t.Fatalf("the second run replaces a price: %+v", again)
	}
}

func TestCancel_NowInvoicesTheUsageNotYetInvoiced(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	st := f.subscribe("org_cn", "tier", "starter", "email", "cn@example.com", "instance_types", []string{"gpu-a100"})
	f.ok(req("record_usage", "org_cn", "instance_type", "gpu-a100", "minutes", 30))
	sub := subscriptionOf(t, f.ok(req("cancel", "org_cn", "at_period_end", false)))
	if sub["status"] != "canceled" {
		t.Fatalf("cancel now: %v", sub)
	}
	final := f.stripeSub(sub["id"].(string)).LatestInvoice
	inv, _ := f.sc().Invoices.Get(final.ID, nil)
	// 30 minutes of gpu-a100 at 10.24 cents: 307 cents, on a final invoice
	// of its own; the tier's unused time is not credited.
	if inv.AmountDue != 307 || inv.BillingReason == "subscription_create" {
		t.Fatalf("the final invoice %s (%s) is of %d, want 307 for the usage (status %v)", inv.ID, inv.BillingReason, inv.AmountDue, st)
	}
}

func TestChangeSubscription_AReplayedAnswerIsReadAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	st := f.subscribe("org_rp", "tier", "starter", "email", "rp@example.com")
	id := subscriptionOf(t, st)["id"].(string)
	// change_tier's update is made and its answer lost; the client sends
	// it again (stripe-go after a pause, or net/http at once on a reused
	// connection), and Stripe replays the first answer. Before the resend
	// gets through, someone else adds an item.
	f.stripe.InjectFault(stripelocal.Fault{Kind: "drop", After: true, Path: "POST /v1/subscriptions/{id}", Count: 1})
	f.stripe.InjectFault(stripelocal.Fault{Kind: "delay", DelayMS: 300, Path: "POST /v1/subscriptions/{id}", Count: 1})
	t4, err := f.store.GetProductMapping(context.Background(), "gpu-t4")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for f.stripe.Counts()["POST /v1/subscriptions/{id}"] == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := f.sc().SubscriptionItems.New(&stripe.SubscriptionItemParams{Subscription: stripe.String(id), Price: stripe.String(t4.PriceID)}); err != nil {
			t.Error(err)
		}
	}()
	st = f.ok(req("change_tier", "org_rp", "tier", "business"))
	wg.Wait()
	if c := f.stripe.Counts(); c["POST /v1/subscriptions/{id}"] != 2 || c["POST /v1/subscription_items"] != 1 {
		t.Fatalf("counts %v: want the update, its replay and the other change", c)
	}
	// The replay's body is from before the other change; the mirror must
	// show Stripe as it is.
	if sub := subscriptionOf(t, st); sub["tier"] != "business" || fmt.Sprint(sub["instance_types"]) != "[gpu-t4]" {
		t.Fatalf("after a replayed answer the mirror says %v, Stripe says tier business and instance type gpu-t4", sub)
	}
}

func TestSubscribe_AStored500IsRetriedWithNewKeysAndMakesOneSubscription(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	r := req("subscribe", "org_500", "tier", "starter", "email", "s500@example.com")
	// A failure inside Stripe, stored under the key and replayed for a day.
	f.stripe.InjectFault(stripelocal.Fault{Kind: "500", Stored: true, Path: "POST /v1/subscriptions"})
	if resp := f.call(r); resp.OK || !resp.Error.Retryable {
		t.Fatalf("first attempt: %+v", resp)
	}
	st := f.ok(r)
	if sub := subscriptionOf(t, st); sub["status"] != "incomplete" {
		t.Fatalf("retry: %v", st)
	}
	if n := f.countSubscriptions("org_500"); n != 1 {
		t.Fatalf("%d subscriptions in Stripe, want 1", n)
	}
}

func TestSubscribe_ARetryAfterTheWebhookFilledTheMirrorReturnsItsSubscription(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	r := req("subscribe", "org_wh", "tier", "business", "email", "wh@example.com")
	before := len(f.allEvents())
	// Made in Stripe, the answer lost on its way back.
	f.stripe.InjectFault(stripelocal.Fault{Kind: "500", After: true, Path: "POST /v1/subscriptions"})
	if resp := f.call(r); resp.OK {
		t.Fatalf("first attempt: %+v", resp)
	}
	f.deliverSince(before) // the webhook mirrors the subscription meanwhile
	st := f.ok(r)
	made := f.mirror("org_wh").Subscription
	if sub := subscriptionOf(t, st); made == nil || sub["id"] != made.SubscriptionID {
		t.Fatalf("retry: %v, want the subscription the first attempt made (%+v)", st, made)
	}
	if n := f.countSubscriptions("org_wh"); n != 1 {
		t.Fatalf("%d subscriptions in Stripe, want 1", n)
	}
}

func TestSetInstanceTypes_ARetryPlannedAgainUsesKeysOfItsOwn(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	f.subscribe("org_pk", "tier", "starter", "email", "pk@example.com", "instance_types", []string{"gpu-t4"})
	r := req("set_instance_types", "org_pk", "instance_types", []string{"gpu-t4", "gpu-a10g"})
	// The update is made in Stripe; every answer to it is lost.
	// (net/http retries a dropped keep-alive request once more itself.)
	f.stripe.InjectFault(stripelocal.Fault{Kind: "drop", After: true, Path: "POST /v1/subscriptions/{id}", Count: 10})
	if resp := f.call(r); resp.OK || !resp.Error.Retryable {
		t.Fatalf("first attempt: %+v", resp)
	}
	f.stripe.ClearFaults()
	// The catalog changes gpu-a10g's price before the retry: the retry plans
	// other parameters than the first attempt sent.
	cat := withEntry(billing.DefaultCatalog(), "gpu-a10g", func(e *billing.Entry) { e.UnitAmountDecimal = "2.5" })
	f.upsert(billing.UpsertRequest{Catalog: &cat})
	st := f.ok(r)
	prices := map[string][]string{}
	for _, it := range f.stripeSub(subscriptionOf(t, st)["id"].(string)).Items.Data {
		key := it.Price.Metadata["billing_key"]
		prices[key] = append(prices[key], it.Price.ID)
	}
	if len(prices["gpu-t4"]) != 1 || len(prices["gpu-a10g"]) != 1 || len(prices) != 3 {
		t.Fatalf("after the retry Stripe holds prices %v, want one item each of starter, gpu-t4 and gpu-a10g", prices)
	}
}

func TestRecordUsage_BeforeTheCurrentPeriodIsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	st := f.subscribe("org_late", "tier", "starter", "email", "late@example.com", "instance_types", []string{"gpu-t4"})
	start := f.mirror("org_late").Subscription.CurrentPeriodStart
	if start == 0 {
		t.Fatalf("the mirror has no period start: %v", st)
	}
	resp := f.call(req("record_usage", "org_late", "instance_type", "gpu-t4", "minutes", 5, "timestamp", start-2*3600))
	if wantError(t, resp, "invalid_request"); !strings.HasPrefix(resp.Error.Message, "timestamp:") {
		t.Fatalf("usage from before the period: %+v", resp.Error)
	}
	// Within Stripe's hour of grace it is still billed.
	f.ok(req("record_usage", "org_late", "instance_type", "gpu-t4", "minutes", 5, "timestamp", start-1800))
}

func TestWebhook_ARedeliveryOfAnUnchangedEventIsADuplicate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	sub := f.liveSubscription("org_rd")
	obj := func(cancelAtEnd bool) map[string]any {
		o := subscriptionObject(sub.ID, "org_rd", "active", cancelAtEnd, "business")
		o["customer"] = sub.Customer.ID
		o["items"] = map[string]any{"object": "list", "data": []any{map[string]any{"id": sub.Items.Data[0].ID,
			"price": map[string]any{"id": sub.Items.Data[0].Price.ID, "metadata": sub.Items.Data[0].Price.Metadata}}}}
		return o
	}
	wantStatus(t, f.send(eventJSON("evt_1", "customer.subscription.created", 100, stripe.APIVersion, obj(false))), 200, `{"status":"processed"}`)
	// The same state from the same second: nothing new.
	wantStatus(t, f.send(eventJSON("evt_2", "customer.subscription.updated", 100, stripe.APIVersion, obj(false))), 200, `{"status":"ignored"}`)
	// Stripe changes, and an event of the same second says so: a tie, read
	// from Stripe.
	if _, err := f.sc().Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, f.send(eventJSON("evt_3", "customer.subscription.updated", 100, stripe.APIVersion, obj(true))), 200, `{"status":"processed"}`)
	// Stripe delivers evt_2 again: it was answered before, so it is a
	// duplicate, costs no Stripe request and writes nothing.
	version := f.mirror("org_rd").Subscription.Version
	f.stripe.ResetCounts()
	wantStatus(t, f.send(eventJSON("evt_2", "customer.subscription.updated", 100, stripe.APIVersion, obj(false))), 200, `{"status":"duplicate"}`)
	if n := len(f.stripe.Counts()); n != 0 {
		t.Fatalf("the redelivery asked Stripe: %v", f.stripe.Counts())
	}
	if got := f.mirror("org_rd").Subscription.Version; got != version {
		t.Fatalf("the redelivery wrote the mirror: version %d → %d", version, got)
	}
}

func TestSubscribe_AtMostTwentyItems(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	var types []string
	for i := range 20 {
		types = append(types, fmt.Sprintf("type-%d", i))
	}
	resp := f.call(req("subscribe", "org_many", "tier", "starter", "email", "m@example.com", "instance_types", types))
	if wantError(t, resp, "invalid_request"); !strings.Contains(resp.Error.Message, "at most 19") {
		t.Fatalf("20 instance types: %+v", resp.Error)
	}
	resp = f.call(req("set_instance_types", "org_many", "instance_types", types))
	wantError(t, resp, "invalid_request")
}

// countSubscriptions counts the organization's subscriptions in Stripe,
// whatever their status.
func (f *fixture) countSubscriptions(org string) int {
	f.t.Helper()
	n := 0
	for it := f.sc().Subscriptions.List(&stripe.SubscriptionListParams{Status: stripe.String("all")}); it.Next(); {
		if it.Subscription().Metadata["org_id"] == org {
			n++
		}
	}
	return n
}
