package billing_test

// The release check: one scenario through the production code paths
// (upsert-products, the subscribe actions, a price migration, an archive,
// webhook deliveries), run against two Stripes: the local one in `make
// test`, and real Stripe test mode before a release:
//
//	STRIPE_LIVE_TESTS=1 STRIPE_API_KEY=sk_test_… go test -run TestScenario -v ./pkg/billing/
//
// Live, it works in a namespace of its own (live-<time>), archives what it
// made when it ends, and reads the webhooks from Stripe's Events API (a
// test has no public URL), feeding each to the webhook handler signed as
// Stripe signs.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

// backend is a Stripe the scenarios run against.
type backend struct {
	name, url, key, ns string
	local              *stripelocal.Server
	live               bool
}

// backends returns the local Stripe, and real Stripe test mode when
// STRIPE_LIVE_TESTS=1 and STRIPE_API_KEY is a test key.
func backends(t *testing.T) []backend {
	out := []backend{{name: "local", ns: "scenario"}}
	key := os.Getenv("STRIPE_API_KEY")
	if os.Getenv("STRIPE_LIVE_TESTS") == "1" && strings.HasPrefix(key, "sk_test_") {
		out = append(out, backend{name: "live", key: key, ns: fmt.Sprintf("live-%d", time.Now().Unix()), live: true})
	} else {
		t.Log("the live backend runs with STRIPE_LIVE_TESTS=1 and STRIPE_API_KEY=sk_test_…")
	}
	return out
}

// scenario is one backend's Service, table and a Stripe client for what a
// customer or the Dashboard does.
type scenario struct {
	t     *testing.T
	b     backend
	svc   *billing.Service
	store *table.Store
	sc    *client.API
	since int64 // events from here on are delivered
	seen  map[string]bool
}

const scenarioSecret = "whsec_scenario"

func newScenario(t *testing.T, b backend) *scenario {
	t.Helper()
	if !b.live {
		b.local, b.url = testenv.LocalStripe(t, stripelocal.Options{})
		b.key = "sk_test_scenario"
	}
	store := table.New(testenv.DynamoDB(t), testenv.NewTable(t))
	env := map[string]string{"STAGE": "dev", "BILLING_NAMESPACE": b.ns, "TABLE_NAME": store.Name(),
		"STRIPE_API_KEY": b.key, "STRIPE_ENDPOINT_SECRET": scenarioSecret, "STRIPE_API_BASE": b.url}
	cfg, err := billing.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	svc := billing.NewService(cfg, billing.NewKeySource(cfg, nil), store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	svc.SetMetricsOutput(io.Discard)
	config := &stripe.BackendConfig{LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull}}
	if b.url != "" {
		config.URL = stripe.String(b.url)
	}
	api := stripe.GetBackendWithConfig(stripe.APIBackend, config)
	s := &scenario{t: t, b: b, svc: svc, store: store, sc: client.New(b.key, &stripe.Backends{API: api, Connect: api, Uploads: api}),
		since: time.Now().Add(-time.Minute).Unix(), seen: map[string]bool{}}
	if b.live {
		t.Cleanup(s.archiveAll)
	}
	return s
}

func (s *scenario) call(action, org string, fields ...any) map[string]any {
	s.t.Helper()
	r := req(action, org, fields...)
	raw, _ := jsonOf(r)
	resp, err := s.svc.HandleSubscribe(context.Background(), raw)
	if err != nil || !resp.OK {
		s.t.Fatalf("%s: %v %+v", action, err, resp.Error)
	}
	out, _ := toMap(resp.Result)
	return out
}

// deliver feeds the webhook every event of Stripe's since the scenario
// began that it has not had yet, oldest first, signed as Stripe signs: what
// a webhook endpoint would have received. Another deployment's events on a
// shared account are among them; the webhook ignores those.
func (s *scenario) deliver() {
	s.t.Helper()
	p := &stripe.EventListParams{CreatedRange: &stripe.RangeQueryParams{GreaterThanOrEqual: s.since}}
	p.Limit = stripe.Int64(100)
	var evs []*stripe.Event
	for it := s.sc.Events.List(p); it.Next(); {
		if e := it.Event(); !s.seen[e.ID] {
			evs = append(evs, e)
		}
	}
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		s.seen[e.ID] = true
		raw, _ := jsonOf(e)
		resp, _ := s.svc.HandleWebhook(context.Background(), signedRequest(raw, scenarioSecret))
		if resp.StatusCode != 200 {
			s.t.Fatalf("delivering %s %s: %d %s", e.ID, e.Type, resp.StatusCode, resp.Body)
		}
	}
}

// pay pays the organization's first invoice as its customer would with
// Stripe.js: the PaymentIntent confirmed with a test card.
func (s *scenario) pay(org, card string) {
	s.t.Helper()
	m, err := s.store.GetMirror(context.Background(), org)
	if err != nil || m.Subscription == nil {
		s.t.Fatalf("no subscription for %s: %v", org, err)
	}
	p := &stripe.SubscriptionParams{}
	p.AddExpand("latest_invoice.payment_intent")
	sub, err := s.sc.Subscriptions.Get(m.Subscription.SubscriptionID, p)
	if err != nil {
		s.t.Fatal(err)
	}
	pi, err := s.sc.PaymentIntents.Confirm(sub.LatestInvoice.PaymentIntent.ID, &stripe.PaymentIntentConfirmParams{PaymentMethod: stripe.String(card)})
	if err != nil || pi.Status != stripe.PaymentIntentStatusSucceeded {
		s.t.Fatalf("paying with %s: %v %v", card, pi, err)
	}
}

func (s *scenario) upsert(cat billing.Catalog) billing.UpsertResult {
	s.t.Helper()
	res, err := s.svc.UpsertProducts(context.Background(), billing.UpsertRequest{Catalog: &cat})
	if err != nil {
		s.t.Fatalf("upsert-products: %v", err)
	}
	return res
}

func TestScenario_TheReleaseCheck(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := newScenario(t, b)
			org := "org_scn"

			// The catalog as code: made, then left alone.
			if res := s.upsert(billing.DefaultCatalog()); res.Created != 11 {
				t.Fatalf("first upsert-products: %+v", res)
			}
			if res := s.upsert(billing.DefaultCatalog()); res.Unchanged != 11 {
				t.Fatalf("second upsert-products: %+v", res)
			}

			// A new organization subscribes: incomplete until it pays.
			st := s.call("subscribe", org, "tier", "starter", "email", "scn@example.com", "instance_types", []string{"gpu-t4"})
			if sub := st["subscription"].(map[string]any); sub["status"] != "incomplete" {
				t.Fatalf("subscribe: %v", st)
			}
			// The Elements path: the status holds the client secret Stripe.js confirms.
			if pay, _ := st["payment"].(map[string]any); pay["intent"] != "payment" || !strings.Contains(fmt.Sprint(pay["client_secret"]), "_secret_") {
				t.Fatalf("subscribe's payment: %v", st["payment"])
			}
			s.pay(org, "pm_card_visa")
			s.deliver()
			if sub := s.call("get_status", org)["subscription"].(map[string]any); sub["status"] != "active" {
				t.Fatalf("after paying and the webhooks: %v", sub)
			}

			// Changes, usage, a cancellation taken back, and cancel now.
			s.call("change_tier", org, "tier", "business")
			st = s.call("set_instance_types", org, "instance_types", []string{"gpu-t4", "gpu-a10g"})
			if got := fmt.Sprint(st["subscription"].(map[string]any)["instance_types"]); got != "[gpu-a10g gpu-t4]" {
				t.Fatalf("set_instance_types: %s", got)
			}
			s.call("record_usage", org, "instance_type", "gpu-a10g", "minutes", 12)

			// The billing page: the paid first invoice, the upcoming one, the
			// deployment's own portal.
			if inv := s.call("list_invoices", org)["invoices"].([]any); len(inv) == 0 || inv[len(inv)-1].(map[string]any)["status"] != "paid" {
				t.Fatalf("list_invoices: %v", inv)
			}
			if lines := s.call("preview_invoice", org)["lines"].([]any); len(lines) < 2 {
				t.Fatalf("preview_invoice: %v", lines)
			}
			if u := s.call("create_portal_session", org, "return_url", "https://app.example.com/billing")["url"]; u == nil || u == "" {
				t.Fatal("create_portal_session made no URL")
			}

			// Checkout for another organization: a page that expires unpaid.
			co := s.call("create_checkout_session", "org_scn_co", "tier", "starter", "email", "scn-co@example.com",
				"success_url", "https://app.example.com/done?session={CHECKOUT_SESSION_ID}", "cancel_url", "https://app.example.com/back")
			if cs, err := s.sc.CheckoutSessions.Expire(fmt.Sprint(co["session_id"]), nil); err != nil || cs.Status != "expired" || cs.ClientReferenceID != "org_scn_co" {
				t.Fatalf("the Checkout session %v: %+v %v", co, cs, err)
			}
			// A new price for an instance type in use: the migration moves
			// it when the period renews, by a schedule; the cancellation
			// below releases the schedule first.
			subID := s.scheduleA10gMove(org)
			if sub := s.call("cancel", org)["subscription"].(map[string]any); sub["cancel_at_period_end"] != true {
				t.Fatalf("cancel: %v", sub)
			}
			if sub, err := s.sc.Subscriptions.Get(subID, nil); err != nil || sub.Schedule != nil {
				t.Fatalf("after the cancellation the schedule must be released: %+v %v", sub, err)
			}
			if sub := s.call("resume", org)["subscription"].(map[string]any); sub["cancel_at_period_end"] != false {
				t.Fatalf("resume: %v", sub)
			}
			if sub := s.call("cancel", org, "at_period_end", false)["subscription"].(map[string]any); sub["status"] != "canceled" {
				t.Fatalf("cancel now: %v", sub)
			}
			s.deliver()
			if sub := s.call("get_status", org)["subscription"].(map[string]any); sub["status"] != "canceled" {
				t.Fatalf("after the webhooks: %v", sub)
			}

			// An instance type leaves the catalog: archived, not deleted.
			without := withEntry(billing.DefaultCatalog(), "gpu-h100", nil)
			if res := s.upsert(without); res.Archived != 1 {
				t.Fatalf("archive: %+v", res)
			}
			p, err := s.sc.Products.Get("bf_"+b.ns+"_gpu-h100", nil)
			if err != nil || p.Active {
				t.Fatalf("the archived product: %v %v", p, err)
			}
			if res := s.upsert(without); res.Unchanged != 10 || res.Archived != 0 {
				t.Fatalf("after the archive: %+v", res)
			}
			s.deliver()
		})
	}
}

// scheduleA10gMove gives gpu-a10g a new price and runs the price
// migration until it schedules the organization's item to move at the
// period's end (live, Stripe's search index lags new subscriptions by up to
// a minute). It checks the schedule Stripe holds: the current phase as the
// subscription is, then the new price; the item itself still on the old
// one. It returns the subscription's ID.
func (s *scenario) scheduleA10gMove(org string) string {
	s.t.Helper()
	s.upsert(withEntry(billing.DefaultCatalog(), "gpu-a10g", func(e *billing.Entry) { e.UnitAmountDecimal = "2.5000" }))
	m, err := s.store.GetMirror(context.Background(), org)
	if err != nil || m.Subscription == nil {
		s.t.Fatalf("no subscription for %s: %v", org, err)
	}
	a10g, err := s.store.GetProductMapping(context.Background(), "gpu-a10g")
	if err != nil {
		s.t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(5 * time.Second) {
		rep, err := s.svc.MigratePrices(context.Background(), billing.MigrateRequest{})
		if err != nil {
			s.t.Fatalf("migrate_prices: %v", err)
		}
		scheduled := false
		for _, mv := range rep.Moves {
			if mv.SubscriptionID != m.Subscription.SubscriptionID {
				continue
			}
			if mv.Key != "gpu-a10g" || mv.When != "period_end" || mv.Outcome != "scheduled" {
				s.t.Fatalf("the move: %+v", mv)
			}
			scheduled = true
		}
		if scheduled {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the migration never found the subscription: %+v", rep)
		}
	}
	p := &stripe.SubscriptionParams{}
	p.AddExpand("schedule")
	sub, err := s.sc.Subscriptions.Get(m.Subscription.SubscriptionID, p)
	if err != nil {
		s.t.Fatal(err)
	}
	sched := sub.Schedule
	if sched == nil || len(sched.Phases) != 2 || sched.Phases[0].EndDate != sub.CurrentPeriodEnd || sched.Phases[1].StartDate != sub.CurrentPeriodEnd {
		s.t.Fatalf("the schedule: %+v", sched)
	}
	next := map[string]bool{}
	for _, it := range sched.Phases[1].Items {
		next[it.Price.ID] = true
	}
	if !next[a10g.PriceID] {
		s.t.Fatalf("the next phase's prices %v lack gpu-a10g's new price %s", next, a10g.PriceID)
	}
	for _, it := range sub.Items.Data {
		if it.Price.Metadata["billing_key"] == "gpu-a10g" && it.Price.ID == a10g.PriceID {
			s.t.Fatal("the item moved before its period's end")
		}
	}
	s.deliver()
	return sub.ID
}

// archiveAll retires what a live scenario made in its namespace: products
// and prices archived, portal configurations and meters deactivated,
// customers deleted.
func (s *scenario) archiveAll() {
	for it := s.sc.Products.List(&stripe.ProductListParams{}); it.Next(); {
		p := it.Product()
		if p.Metadata["billing_namespace"] != s.b.ns {
			continue
		}
		_, _ = s.sc.Products.Update(p.ID, &stripe.ProductParams{Active: stripe.Bool(false), DefaultPrice: stripe.String("")})
		for pi := s.sc.Prices.List(&stripe.PriceListParams{Product: stripe.String(p.ID)}); pi.Next(); {
			_, _ = s.sc.Prices.Update(pi.Price().ID, &stripe.PriceParams{Active: stripe.Bool(false)})
		}
	}
	for it := s.sc.BillingPortalConfigurations.List(&stripe.BillingPortalConfigurationListParams{}); it.Next(); {
		if c := it.BillingPortalConfiguration(); c.Metadata["billing_namespace"] == s.b.ns && c.Active {
			_, _ = s.sc.BillingPortalConfigurations.Update(c.ID, &stripe.BillingPortalConfigurationParams{Active: stripe.Bool(false)})
		}
	}
	for it := s.sc.BillingMeters.List(&stripe.BillingMeterListParams{}); it.Next(); {
		if m := it.BillingMeter(); strings.HasPrefix(m.EventName, "bf_"+s.b.ns+"_") {
			_, _ = s.sc.BillingMeters.Deactivate(m.ID, nil)
		}
	}
	for it := s.sc.Customers.List(&stripe.CustomerListParams{Email: stripe.String("scn@example.com")}); it.Next(); {
		if c := it.Customer(); c.Metadata["billing_namespace"] == s.b.ns {
			_, _ = s.sc.Customers.Del(c.ID, nil)
		}
	}
}
