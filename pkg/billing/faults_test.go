package billing_test

// The fault suite: Stripe failures (through the local Stripe's fault
// controls) and DynamoDB failures (through a dynamoproxy in front of moto)
// in the middle of real work. Each case shows a clear answer first, then
// that a retry or Stripe's redelivery ends in the right state, with no
// duplicate object in Stripe and no double count in a meter.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/dynamoproxy"
	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/pkg/billing"
)

// wantCleanFailure checks a failed answer is the retryable unavailable
// error and says nothing internal.
func wantCleanFailure(t *testing.T, resp billing.Response) {
	t.Helper()
	if resp.OK || resp.Error.Code != billing.CodeUnavailable || !resp.Error.Retryable {
		t.Fatalf("first call: %+v, want a retryable unavailable error", resp)
	}
	for _, leak := range []string{"injected", "goroutine", ".go:", "127.0.0.1", "dial tcp", "context deadline"} {
		if strings.Contains(resp.Error.Message, leak) {
			t.Fatalf("the error leaks %q: %s", leak, resp.Error.Message)
		}
	}
}

// stripeFaults are the Stripe failures every operation meets. A timeout is
// a response slower than the caller's deadline; Stripe still acts on it.
var stripeFaults = []struct {
	name    string
	fault   stripelocal.Fault
	timeout time.Duration
}{
	{"429", stripelocal.Fault{Kind: "429", Count: 10}, 0},
	{"500", stripelocal.Fault{Kind: "500", Count: 10}, 0},
	{"dropped connection", stripelocal.Fault{Kind: "drop", Count: 10}, 0},
	{"timeout", stripelocal.Fault{Kind: "delay", DelayMS: 1200, Count: 1}, 400 * time.Millisecond},
	{"answer lost", stripelocal.Fault{Kind: "500", After: true, Count: 1}, 0},
}

// failFirst injects the fault on method+path, runs call under the fault's
// deadline, clears what is left of the fault, and lets a slow request
// finish in Stripe before the retry.
func failFirst[T any](f *fixture, fc struct {
	name    string
	fault   stripelocal.Fault
	timeout time.Duration
}, method, path string, call func(ctx context.Context) T) T {
	fault := fc.fault
	fault.Method, fault.Path = method, path
	f.stripe.InjectFault(fault)
	ctx, cancel := context.WithCancel(context.Background())
	if fc.timeout > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), fc.timeout)
	}
	defer cancel()
	out := call(ctx)
	f.stripe.ClearFaults()
	if fc.fault.DelayMS > 0 {
		time.Sleep(time.Duration(fc.fault.DelayMS)*time.Millisecond + 300*time.Millisecond)
	}
	return out
}

// mayFail accepts success (a fault the client absorbed, such as a lost
// answer replayed under the same idempotency key) or a clean failure.
func mayFail(t *testing.T, resp billing.Response) {
	t.Helper()
	if !resp.OK {
		wantCleanFailure(t, resp)
	}
}

func TestFaults_StripeFailureDuringSubscribeThenRetryMakesOneSubscription(t *testing.T) {
	t.Parallel()
	for _, fc := range stripeFaults {
		t.Run(fc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, ns)
			f.upsert(billing.UpsertRequest{})
			r := req("subscribe", "org_f", "tier", "business", "email", "f@example.com", "instance_types", []string{"gpu-t4"})
			first := failFirst(f, fc, "POST", "/v1/subscriptions", func(ctx context.Context) billing.Response { return f.callWith(ctx, r) })
			if fc.fault.Kind != "500" || !fc.fault.After {
				wantCleanFailure(t, first)
			} else {
				mayFail(t, first)
			}
			st := f.ok(r)
			if sub := subscriptionOf(t, st); sub["status"] != "incomplete" || sub["tier"] != "business" {
				t.Fatalf("retry: %v, want the business subscription waiting for its first payment", st)
			}
			customers, subs := 0, 0
			for it := f.sc().Customers.List(&stripe.CustomerListParams{}); it.Next(); {
				if it.Customer().Metadata["org_id"] == "org_f" {
					customers++
				}
			}
			for it := f.sc().Subscriptions.List(&stripe.SubscriptionListParams{Status: stripe.String("all")}); it.Next(); {
				subs++
			}
			if customers != 1 || subs != 1 {
				t.Fatalf("Stripe holds %d customers and %d subscriptions for the org, want 1 and 1", customers, subs)
			}
		})
	}
}

func TestFaults_StripeFailureDuringRecordUsageThenRetryCountsOnce(t *testing.T) {
	t.Parallel()
	for _, fc := range stripeFaults {
		t.Run(fc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, ns)
			f.upsert(billing.UpsertRequest{})
			st := f.subscribe("org_u", "tier", "starter", "email", "u@example.com", "instance_types", []string{"gpu-a100"})
			r := req("record_usage", "org_u", "instance_type", "gpu-a100", "minutes", 42)
			first := failFirst(f, fc, "POST", "/v1/billing/meter_events", func(ctx context.Context) billing.Response { return f.callWith(ctx, r) })
			wantCleanFailure(t, first)
			f.ok(r)
			if got := f.meteredMinutes("gpu-a100", *strPtr(st["customer_id"])); got != 42 {
				t.Fatalf("metered usage %v, want 42 counted once", got)
			}
		})
	}
}

func TestFaults_StripeFailureDuringUpsertThenRerunMakesNoDuplicate(t *testing.T) {
	t.Parallel()
	for _, fc := range stripeFaults {
		t.Run(fc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, ns)
			fault := fc
			fault.fault.Skip = 4 // fail in the middle of the run
			err := failFirst(f, fault, "POST", "/v1/prices", func(ctx context.Context) error {
				_, err := f.svc.UpsertProducts(ctx, billing.UpsertRequest{})
				return err
			})
			if e := billing.AsError(err); err == nil || e.Code != billing.CodeUnavailable || !e.Retryable {
				t.Fatalf("first run: %v, want a retryable unavailable error", err)
			}
			f.upsert(billing.UpsertRequest{})
			if again := f.upsert(billing.UpsertRequest{}); again.Unchanged != 11 {
				t.Fatalf("a third run still changes things: %+v", again)
			}
			st := f.read()
			active := 0
			for _, p := range st.prices {
				if p.Active {
					active++
				}
			}
			if len(st.products) != 11 || active != 11 || len(st.meters) != 9 {
				t.Fatalf("Stripe holds %d products, %d active prices, %d meters; want 11, 11, 9", len(st.products), active, len(st.meters))
			}
		})
	}
}

func TestFaults_StripeFailureDuringWebhookRefetchAnswers500ThenConverges(t *testing.T) {
	t.Parallel()
	for _, fc := range stripeFaults {
		t.Run(fc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, ns)
			sub := f.liveSubscription("org_1")
			// Another API version: the webhook must re-fetch from Stripe.
			payload := eventJSON("evt_r", "customer.subscription.updated", 100, "2024-06-20", subscriptionObject(sub.ID, "org_1", "active", false, "business"))
			req := events.APIGatewayV2HTTPRequest{Body: string(payload), Headers: map[string]string{"stripe-signature": signed(payload, fixtureSecret, time.Now())}}
			first := failFirst(f, fc, "GET", "/v1/subscriptions/", func(ctx context.Context) events.APIGatewayV2HTTPResponse {
				resp, _ := f.svc.HandleWebhook(ctx, req)
				return resp
			})
			if first.StatusCode != 500 && !(fc.fault.After && first.StatusCode == 200) {
				t.Fatalf("first delivery: %d %s, want 500", first.StatusCode, first.Body)
			}
			if first.StatusCode == 500 && f.mirror("org_1").Subscription != nil {
				t.Fatal("a failed delivery wrote the mirror")
			}
			resp, _ := f.svc.HandleWebhook(context.Background(), req) // Stripe's redelivery
			if resp.StatusCode != 200 {
				t.Fatalf("redelivery: %d %s", resp.StatusCode, resp.Body)
			}
			if s := f.mirror("org_1").Subscription; s == nil || s.SubscriptionID != sub.ID || s.Status != "active" || s.Tier != "business" {
				t.Fatalf("mirror after redelivery: %+v", s)
			}
		})
	}
}

// DynamoDB failures during a webhook delivery: the delivery answers 500
// with nothing internal, and Stripe's redelivery converges to one effect.
func TestFaults_DynamoDBFailureDuringWebhookAnswers500ThenRedeliveryConverges(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		fault   dynamoproxy.Fault
		timeout time.Duration
		lands   bool // the first write reaches the table all the same
	}{
		{"throttling", dynamoproxy.Fault{Op: "TransactWriteItems", Kind: "throttle", Count: 10}, 0, false},
		{"500", dynamoproxy.Fault{Op: "TransactWriteItems", Kind: "500", Count: 10}, 0, false},
		{"dropped connection", dynamoproxy.Fault{Op: "TransactWriteItems", Kind: "drop", Count: 10}, 0, false},
		{"timeout, the write lost", dynamoproxy.Fault{Op: "TransactWriteItems", Kind: "drop", Count: 10}, 300 * time.Millisecond, false},
		// The caller gives up once its write is on its way (see below).
		{"timeout, the write lands late", dynamoproxy.Fault{Op: "TransactWriteItems", Kind: "latency", Delay: time.Second, Count: 1}, 0, true},
		{"answer lost", dynamoproxy.Fault{Op: "TransactWriteItems", Kind: "drop", After: true, Count: 1}, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, ns)
			proxy := f.viaFaultProxy()
			payload := eventJSON("evt_d", "customer.subscription.created", 100, stripe.APIVersion, subscriptionObject("sub_1", "org_1", "active", false, "starter"))
			req := events.APIGatewayV2HTTPRequest{Body: string(payload), Headers: map[string]string{"stripe-signature": signed(payload, fixtureSecret, time.Now())}}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if c.timeout > 0 {
				ctx, cancel = context.WithTimeout(context.Background(), c.timeout)
			}
			fault := c.fault
			if fault.Kind == "latency" {
				// The function's deadline passes while its transaction is in
				// flight: DynamoDB still applies it, a second later.
				fault.OnMatch = cancel
			}
			proxy.Inject(fault)
			first, _ := f.svc.HandleWebhook(ctx, req)
			cancel()
			proxy.Clear()
			if first.StatusCode != 500 && !(c.lands && first.StatusCode == 200) {
				t.Fatalf("first delivery: %d %s, want 500", first.StatusCode, first.Body)
			}
			for _, leak := range []string{"Throttl", "DynamoDB", "InternalServerError", "127.0.0.1", "deadline"} {
				if strings.Contains(first.Body, leak) {
					t.Fatalf("the answer leaks %q: %s", leak, first.Body)
				}
			}
			if !c.lands && f.mirror("org_1").Subscription != nil {
				t.Fatal("a failed delivery left a write")
			}
			if c.fault.Kind == "latency" {
				// The slow write lands meanwhile: wait for it (a fixed sleep
				// loses the race on a loaded machine).
				for deadline := time.Now().Add(15 * time.Second); f.mirror("org_1").Subscription == nil; time.Sleep(20 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("the slow write never landed")
					}
				}
			}
			resp, _ := f.svc.HandleWebhook(context.Background(), req) // Stripe's redelivery
			want := `{"status":"processed"}`
			if c.lands {
				want = `{"status":"duplicate"}`
			}
			if resp.StatusCode == 200 && first.StatusCode == 200 {
				want = `{"status":"duplicate"}`
			}
			wantStatus(t, resp, 200, want)
			if s := f.mirror("org_1").Subscription; s == nil || s.SubscriptionID != "sub_1" || s.Status != "active" || s.Version != 1 {
				t.Fatalf("mirror: %+v, want sub_1 active written once", s)
			}
		})
	}
}

// Throttling while the local Stripe delivers real, signed events: some
// deliveries answer 500, Stripe retries them, and the mirror ends equal to
// Stripe with every event delivered.
func TestFaults_DynamoDBThrottlingDuringRealDeliveriesConverges(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	proxy := f.viaFaultProxy()
	f.gatewayFor()
	proxy.Inject(dynamoproxy.Fault{Op: "TransactWriteItems", Kind: "throttle", Count: 8})
	sc := f.sc()
	tier, _ := f.store.GetProductMapping(context.Background(), "business")
	for i := range 3 {
		meta := map[string]string{"org_id": fmt.Sprintf("org_%d", i), "billing_namespace": ns}
		c := f.payingCustomer(meta)
		if _, err := sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), Metadata: meta,
			Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(tier.PriceID)}}}); err != nil {
			t.Fatal(err)
		}
	}
	f.stripe.WaitDeliveries()
	if left := proxy.Clear(); left != 0 {
		t.Fatalf("%d injected throttles were never hit", left)
	}
	for it := sc.Events.List(&stripe.EventListParams{DeliverySuccess: stripe.Bool(false)}); it.Next(); {
		t.Errorf("event %s %s was never delivered", it.Event().ID, it.Event().Type)
	}
	if rep := f.reconcile(billing.ReconcileOptions{}); rep.Organizations != 3 || len(rep.Differences) != 0 {
		t.Fatalf("reconcile after the faults: %d orgs, %+v", rep.Organizations, rep.Differences)
	}
}
