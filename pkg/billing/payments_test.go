package billing_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
)

func checkoutReq(org string, fields ...any) map[string]any {
	return req("create_checkout_session", org, append([]any{"tier", "business", "email", org + "@example.com",
		"success_url", "http://localhost:3000/billing/done?session={CHECKOUT_SESSION_ID}", "cancel_url", "https://app.example.com/billing"}, fields...)...)
}

func TestCheckout_PaidOnTheHostedPageMakesTheMirroredSubscription(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	before := len(f.allEvents())
	res := f.ok(checkoutReq("org_co", "instance_types", []string{"gpu-a10g"}))
	id, _ := res["session_id"].(string)
	u, _ := res["url"].(string)
	expires, _ := res["expires_at"].(float64)
	if !strings.HasPrefix(id, "cs_") || u == "" || int64(expires) < time.Now().Add(23*time.Hour).Unix() {
		t.Fatalf("create_checkout_session: %v", res)
	}
	// What Stripe was asked: the org's customer, its tier and metered
	// prices, and the metadata the webhook finds the org by.
	cs, err := f.sc().CheckoutSessions.Get(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := f.mirror("org_co"); m.Customer == nil || cs.Mode != "subscription" || cs.ClientReferenceID != "org_co" || cs.Customer == nil ||
		cs.Customer.ID != m.Customer.CustomerID || cs.Metadata["billing_namespace"] != ns || cs.AmountTotal != tierAmount(t, f, "business") {
		t.Fatalf("the session: %+v", cs)
	}
	if f.mirror("org_co").Subscription != nil {
		t.Fatal("a subscription before the customer paid")
	}
	if resp, _ := testenv.PostForm(t, u+"/pay", url.Values{"card": {"pm_card_visa"}}); resp.StatusCode != http.StatusSeeOther ||
		resp.Header.Get("Location") != "http://localhost:3000/billing/done?session="+id {
		t.Fatalf("paying: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	f.deliverSince(before)
	sub := subscriptionOf(t, f.ok(req("get_status", "org_co")))
	if sub["status"] != "active" || sub["tier"] != "business" || len(sub["instance_types"].([]any)) != 1 {
		t.Fatalf("after paying: %v", sub)
	}
	// Subscribed now: another session would make a second subscription.
	wantError(t, f.call(checkoutReq("org_co")), billing.CodeConflict)
}

func TestCheckout_ADeclinedCardMakesNothingAndTheSessionStaysOpen(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	before := len(f.allEvents())
	r := checkoutReq("org_decl")
	res := f.ok(r)
	u, _ := res["url"].(string)
	if resp, _ := testenv.PostForm(t, u+"/pay", url.Values{"card": {"pm_card_chargeCustomerFail"}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("a declined card: %d", resp.StatusCode)
	}
	f.deliverSince(before)
	if st := f.ok(req("get_status", "org_decl")); st["subscription"] != nil {
		t.Fatalf("a declined card made a subscription: %v", st)
	}
	// The same request again answers the same, still open, session.
	if again := f.ok(r); again["session_id"] != res["session_id"] || again["url"] != u {
		t.Fatalf("the request again: %v, first %v", again, res)
	}
	cs, err := f.sc().CheckoutSessions.Get(res["session_id"].(string), nil)
	if err != nil || cs.Status != "open" {
		t.Fatalf("after a decline the session is %v (%v)", cs, err)
	}
}

func TestCheckout_RefusesWhatStripeWouldNot(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	for name, r := range map[string]map[string]any{
		"success_url":    checkoutReq("org_x", "success_url", "http://app.example.com/done"),
		"cancel_url":     checkoutReq("org_x", "cancel_url", "ftp://example.com"),
		"tier":           checkoutReq("org_x", "tier", "gpu-a10g"),
		"instance_types": checkoutReq("org_x", "instance_types", []string{"nope"}),
	} {
		resp := f.call(r)
		if resp.OK || resp.Error.Code != billing.CodeInvalidRequest || !strings.HasPrefix(resp.Error.Message, name) {
			t.Errorf("%s: %+v", name, resp)
		}
	}
	if f.mirror("org_x").Customer != nil {
		t.Fatal("a refused request made a customer")
	}
}

func TestBillingPage_InvoicesAndTheUpcomingInvoice(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	wantError(t, f.call(req("list_invoices", "org_bp")), billing.CodeNotFound)
	wantError(t, f.call(req("preview_invoice", "org_bp")), billing.CodeNotFound)
	f.subscribe("org_bp", "tier", "business", "email", "bp@example.com", "instance_types", []string{"gpu-a10g"})
	f.ok(req("record_usage", "org_bp", "instance_type", "gpu-a10g", "minutes", 90))

	list := f.ok(req("list_invoices", "org_bp"))
	invoices, _ := list["invoices"].([]any)
	if len(invoices) != 1 || list["has_more"] != false {
		t.Fatalf("list_invoices: %v", list)
	}
	first := invoices[0].(map[string]any)
	if first["status"] != "paid" || int64(first["total"].(float64)) != tierAmount(t, f, "business") || first["currency"] != "usd" ||
		first["number"] == nil || first["hosted_invoice_url"] == nil || first["invoice_pdf"] == nil {
		t.Fatalf("the first invoice: %v", first)
	}

	// The upcoming invoice: the minutes so far and the next period's tier.
	preview := f.ok(req("preview_invoice", "org_bp"))
	lines, _ := preview["lines"].([]any)
	byKey := map[string]map[string]any{}
	for _, l := range lines {
		byKey[l.(map[string]any)["key"].(string)] = l.(map[string]any)
	}
	tier, gpu := byKey["business"], byKey["gpu-a10g"]
	if len(lines) != 2 || tier == nil || gpu == nil || tier["kind"] != "tier" || tier["minutes"] != nil || int64(tier["amount"].(float64)) != tierAmount(t, f, "business") ||
		gpu["kind"] != "instance_type" || gpu["minutes"].(float64) != 90 {
		t.Fatalf("preview_invoice: %v", preview)
	}
	if total := preview["total"].(float64); total != tier["amount"].(float64)+gpu["amount"].(float64) {
		t.Fatalf("the preview's total %v is not its lines' sum", total)
	}

	// A renewal makes a second invoice; pages of one walk both.
	f.stripe.Advance(31 * 24 * time.Hour)
	page := f.ok(req("list_invoices", "org_bp", "limit", 1))
	got := page["invoices"].([]any)
	if len(got) != 1 || page["has_more"] != true {
		t.Fatalf("the first page: %v", page)
	}
	next := f.ok(req("list_invoices", "org_bp", "limit", 1, "starting_after", got[0].(map[string]any)["id"]))
	if rest := next["invoices"].([]any); len(rest) != 1 || rest[0].(map[string]any)["id"] != first["id"] {
		t.Fatalf("the second page: %v, want the first invoice %v", next, first["id"])
	}

	for _, bad := range []any{0, 101} {
		resp := f.call(req("list_invoices", "org_bp", "limit", bad))
		if resp.OK || !strings.HasPrefix(resp.Error.Message, "limit") {
			t.Errorf("limit %v: %+v", bad, resp)
		}
	}
}

// paymentIn returns the status's payment, which must be set.
func paymentIn(t *testing.T, st map[string]any) map[string]any {
	t.Helper()
	p, ok := st["payment"].(map[string]any)
	if !ok {
		t.Fatalf("no payment in %v", st)
	}
	return p
}

func TestPayment_TheStatusSaysHowToPayTheFirstInvoiceUntilItIsPaid(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	st := f.ok(req("subscribe", "org_pay", "tier", "starter", "email", "pay@example.com"))
	pay, subID := paymentIn(t, st), subscriptionOf(t, st)["id"].(string)
	p := &stripe.SubscriptionParams{}
	p.AddExpand("latest_invoice.payment_intent")
	sub, err := f.sc().Subscriptions.Get(subID, p)
	if err != nil {
		t.Fatal(err)
	}
	pi := sub.LatestInvoice.PaymentIntent
	if pay["status"] != "requires_payment_method" || pay["client_secret"] != pi.ClientSecret || pi.ClientSecret == "" ||
		pay["hosted_invoice_url"] != sub.LatestInvoice.HostedInvoiceURL || sub.LatestInvoice.HostedInvoiceURL == "" {
		t.Fatalf("payment %v; Stripe's PaymentIntent %s %q, invoice page %q", pay, pi.Status, pi.ClientSecret, sub.LatestInvoice.HostedInvoiceURL)
	}
	// The webhooks of the same invoice say the same.
	f.deliverSince(0)
	if got := paymentIn(t, f.ok(req("get_status", "org_pay"))); got["client_secret"] != pi.ClientSecret || got["status"] != "requires_payment_method" {
		t.Fatalf("after the webhooks: %v", got)
	}
	// Subscribing again, or opening Checkout, answers the pending
	// subscription and how to pay it; nothing new is made.
	for _, r := range []map[string]any{req("subscribe", "org_pay", "tier", "business", "email", "pay@example.com"), checkoutReq("org_pay")} {
		again := f.ok(r)
		if subscriptionOf(t, again)["id"] != subID || paymentIn(t, again)["client_secret"] != pi.ClientSecret || again["url"] != nil {
			t.Fatalf("%v while incomplete: %v", r["action"], again)
		}
	}
	made := 0
	for it := f.sc().Subscriptions.List(&stripe.SubscriptionListParams{Customer: stripe.String(sub.Customer.ID), Status: stripe.String("all")}); it.Next(); {
		made++
	}
	if made != 1 {
		t.Fatalf("%d subscriptions, want the one", made)
	}
	// Changes wait for the first payment (Stripe takes only metadata then).
	for _, r := range []map[string]any{req("change_tier", "org_pay", "tier", "business"), req("set_instance_types", "org_pay", "instance_types", []string{"gpu-t4"})} {
		resp := f.call(r)
		if resp.OK || resp.Error.Code != billing.CodePaymentRequired || !strings.Contains(resp.Error.Message, "first payment") {
			t.Fatalf("%v while incomplete: %+v", r["action"], resp)
		}
	}
	// Cancelling an unpaid subscription ends it at once, even "at the
	// period's end": nothing was paid for.
	f.ok(req("subscribe", "org_pay_cancel", "tier", "starter", "email", "pc@example.com"))
	if st := f.ok(req("cancel", "org_pay_cancel")); subscriptionOf(t, st)["status"] != "canceled" || st["payment"] != nil {
		t.Fatalf("cancel while incomplete: %v", st)
	}
	// A card that needs 3-D Secure: the payment requires action, until the
	// customer authenticates.
	f.pay("org_pay", "pm_card_authenticationRequired")
	if got := paymentIn(t, f.ok(req("get_status", "org_pay"))); got["status"] != "requires_action" || got["client_secret"] != pi.ClientSecret {
		t.Fatalf("after a card that needs authentication: %v", got)
	}
	before := len(f.allEvents())
	if err := f.stripe.Authenticate(pi.ID, true); err != nil {
		t.Fatal(err)
	}
	f.deliverSince(before)
	st = f.ok(req("get_status", "org_pay"))
	if subscriptionOf(t, st)["status"] != "active" || st["payment"] != nil {
		t.Fatalf("after authenticating: %v", st)
	}
}

func TestPayment_AFailedRenewalSetsThePaymentUntilItIsPaid(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	st := f.subscribe("org_renew", "tier", "starter", "email", "renew@example.com")
	if st["payment"] != nil {
		t.Fatalf("a paid subscription has a payment: %v", st)
	}
	subID := subscriptionOf(t, st)["id"].(string)
	before := len(f.allEvents())
	f.stripe.SetPaymentMode(stripelocal.PayNothing)
	f.stripe.Advance(32 * 24 * time.Hour)
	f.deliverSince(before)
	// Renewed, its invoice not yet charged: nothing waits for the customer.
	if st := f.ok(req("get_status", "org_renew")); st["payment"] != nil {
		t.Fatalf("a renewal before its charge: %v", st)
	}
	before = len(f.allEvents())
	if err := f.stripe.Settle(subID, "failed"); err != nil {
		t.Fatal(err)
	}
	f.deliverSince(before)
	st = f.ok(req("get_status", "org_renew"))
	pay := paymentIn(t, st)
	if pay["status"] != "requires_payment_method" || pay["client_secret"] == nil || !strings.Contains(pay["hosted_invoice_url"].(string), "/_local/invoices/") ||
		st["delinquent"] != true {
		t.Fatalf("after a failed renewal: %v", st)
	}
	// Paid on the hosted invoice page with another card.
	before = len(f.allEvents())
	f.stripe.SetPaymentMode(stripelocal.PayWithPaymentMethods)
	if resp, _ := testenv.PostForm(t, pay["hosted_invoice_url"].(string)+"/pay", url.Values{"card": {"pm_card_visa"}}); resp.StatusCode >= 400 {
		t.Fatalf("the hosted invoice page: %d", resp.StatusCode)
	}
	f.deliverSince(before)
	st = f.ok(req("get_status", "org_renew"))
	if st["payment"] != nil || st["delinquent"] != false || subscriptionOf(t, st)["status"] != "active" {
		t.Fatalf("after paying on the hosted page: %v", st)
	}
}

func TestTrial_WithoutACardCarriesASetupIntentThenEndsCanceled(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	st := f.ok(req("subscribe", "org_trial", "tier", "starter", "email", "trial@example.com", "trial_days", 7))
	sub, pay := subscriptionOf(t, st), paymentIn(t, st)
	secret, _ := pay["client_secret"].(string)
	if sub["status"] != "trialing" || sub["trial_end"] == nil || sub["payment_method_on_file"] != false ||
		pay["intent"] != "setup" || !strings.HasPrefix(secret, "seti_") || pay["hosted_invoice_url"] != nil {
		t.Fatalf("a trial without a card: %v", st)
	}
	if s := f.stripeSub(sub["id"].(string)); s.TrialSettings == nil || s.TrialSettings.EndBehavior.MissingPaymentMethod != "cancel" {
		t.Fatalf("the trial's end behavior in Stripe: %+v", s.TrialSettings)
	}
	f.deliverSince(0)
	if got := paymentIn(t, f.ok(req("get_status", "org_trial"))); got["client_secret"] != secret {
		t.Fatalf("after the webhooks: %v", got)
	}
	// Three days before the end Stripe warns; the mirror still says no card.
	before := len(f.allEvents())
	f.stripe.Advance(5 * 24 * time.Hour)
	warned := false
	for _, raw := range f.allEvents()[before:] {
		warned = warned || strings.Contains(string(raw), `"type":"customer.subscription.trial_will_end"`)
	}
	f.deliverSince(before)
	if st := subscriptionOf(t, f.ok(req("get_status", "org_trial"))); !warned || st["payment_method_on_file"] != false || st["status"] != "trialing" {
		t.Fatalf("three days before the end: warned %v, %v", warned, st)
	}
	// The trial ends without a card: canceled, and the org may subscribe again.
	before = len(f.allEvents())
	f.stripe.Advance(3 * 24 * time.Hour)
	f.deliverSince(before)
	st = f.ok(req("get_status", "org_trial"))
	if subscriptionOf(t, st)["status"] != "canceled" || st["payment"] != nil {
		t.Fatalf("after the trial ended without a card: %v", st)
	}
	if again := subscriptionOf(t, f.ok(req("subscribe", "org_trial", "tier", "starter", "email", "trial@example.com"))); again["status"] != "incomplete" || again["id"] == sub["id"] {
		t.Fatalf("subscribing again: %v", again)
	}
}

func TestTrial_ACardSavedDuringTheTrialIsChargedWhenItEnds(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	st := f.ok(req("subscribe", "org_trial_card", "tier", "starter", "email", "tc@example.com", "trial_days", 7))
	setupIntent, _, _ := strings.Cut(paymentIn(t, st)["client_secret"].(string), "_secret_")
	before := len(f.allEvents())
	// What Stripe.js does with the client secret; the secret key does the same.
	if _, err := f.sc().SetupIntents.Confirm(setupIntent, &stripe.SetupIntentConfirmParams{PaymentMethod: stripe.String("pm_card_visa")}); err != nil {
		t.Fatal(err)
	}
	f.deliverSince(before)
	st = f.ok(req("get_status", "org_trial_card"))
	if sub := subscriptionOf(t, st); sub["status"] != "trialing" || sub["payment_method_on_file"] != true || st["payment"] != nil {
		t.Fatalf("a card saved during the trial: %v", st)
	}
	before = len(f.allEvents())
	f.stripe.Advance(8 * 24 * time.Hour)
	f.deliverSince(before)
	st = f.ok(req("get_status", "org_trial_card"))
	if sub := subscriptionOf(t, st); sub["status"] != "active" || st["delinquent"] != false || st["payment"] != nil {
		t.Fatalf("after the trial, with a card: %v", st)
	}
}

// tierAmount is a tier's monthly price in Stripe, in cents.
func tierAmount(t *testing.T, f *fixture, tier string) int64 {
	t.Helper()
	m, err := f.store.GetProductMapping(context.Background(), tier)
	if err != nil {
		t.Fatal(err)
	}
	p, err := f.sc().Prices.Get(m.PriceID, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p.UnitAmount
}

func TestPortal_EachDeploymentHasItsOwnConfigurationMadeByUpsertProducts(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	// Before upsert-products there is no portal, whatever the account's
	// default configuration.
	f.ok(req("ensure_customer", "org_portal", "email", "portal@example.com"))
	f.stripe.SetPortalDefault(true)
	resp := f.call(map[string]any{"action": "create_portal_session", "org_id": "org_portal", "return_url": "https://app.example.com/billing"})
	if resp.OK || resp.Error.Code != billing.CodeInvalidRequest || !strings.Contains(resp.Error.Message, "upsert-products") {
		t.Fatalf("a portal before upsert-products: %+v", resp)
	}
	f.stripe.SetPortalDefault(false) // as on a fresh test-mode account

	first := f.upsert(billing.UpsertRequest{})
	cfg, err := f.sc().BillingPortalConfigurations.Get(first.PortalConfiguration, nil)
	if err != nil || !cfg.Active || cfg.Metadata["billing_namespace"] != ns || !cfg.Features.PaymentMethodUpdate.Enabled ||
		!cfg.Features.InvoiceHistory.Enabled || cfg.Features.SubscriptionCancel.Enabled || cfg.Features.SubscriptionUpdate.Enabled {
		t.Fatalf("the deployment's configuration: %+v %v", cfg, err)
	}
	// Another deployment on the account has its own; a second run keeps it.
	other, _, _ := newService(t, "portal-other", f.url, nil) // its own table, as another deployment has
	other.SetMetricsOutput(io.Discard)
	theirs, err := other.UpsertProducts(context.Background(), billing.UpsertRequest{})
	if err != nil || theirs.PortalConfiguration == "" || theirs.PortalConfiguration == first.PortalConfiguration {
		t.Fatalf("another deployment's configuration: %q %v (ours %q)", theirs.PortalConfiguration, err, first.PortalConfiguration)
	}
	if again := f.upsert(billing.UpsertRequest{}); again.PortalConfiguration != first.PortalConfiguration {
		t.Fatalf("a second run made %q, want %q kept", again.PortalConfiguration, first.PortalConfiguration)
	}

	portal := f.ok(map[string]any{"action": "create_portal_session", "org_id": "org_portal", "return_url": "https://app.example.com/billing"})
	if u, _ := portal["url"].(string); !strings.Contains(u, "/_local/portal/") {
		t.Fatalf("create_portal_session: %v", portal)
	}
	// A configuration deactivated by hand: a clear error, not internal.
	if _, err := f.sc().BillingPortalConfigurations.Update(first.PortalConfiguration, &stripe.BillingPortalConfigurationParams{Active: stripe.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	resp = f.call(map[string]any{"action": "create_portal_session", "org_id": "org_portal", "return_url": "https://app.example.com/billing"})
	if resp.OK || resp.Error.Code != billing.CodeInvalidRequest || !strings.Contains(resp.Error.Message, "run upsert-products") {
		t.Fatalf("a deactivated configuration: %+v", resp)
	}
	// upsert-products restores it.
	if again := f.upsert(billing.UpsertRequest{}); again.PortalConfiguration != first.PortalConfiguration {
		t.Fatalf("restoring made %q, want %q", again.PortalConfiguration, first.PortalConfiguration)
	}
	f.ok(map[string]any{"action": "create_portal_session", "org_id": "org_portal", "return_url": "https://app.example.com/billing"})
}

func TestCheckout_OneOpenSessionPerOrganization(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	first := f.ok(checkoutReq("org_one"))
	// A second page (another tier) expires the first: the customer can pay
	// for one subscription only.
	second := f.ok(checkoutReq("org_one", "tier", "starter"))
	cs1, err := f.sc().CheckoutSessions.Get(first["session_id"].(string), nil)
	if err != nil || cs1.Status != "expired" {
		t.Fatalf("the first session after a second: %v %v", cs1, err)
	}
	if resp, _ := testenv.PostForm(t, first["url"].(string)+"/pay", url.Values{"card": {"pm_card_visa"}}); resp.StatusCode == http.StatusSeeOther {
		t.Fatal("the expired first page took a payment")
	}
	// Paid on the second page, its webhooks not yet delivered: a third
	// request is refused, not a page for a second subscription.
	if resp, _ := testenv.PostForm(t, second["url"].(string)+"/pay", url.Values{"card": {"pm_card_visa"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("paying the second page: %d", resp.StatusCode)
	}
	wantError(t, f.call(checkoutReq("org_one")), billing.CodeConflict)
	if it := f.sc().Subscriptions.List(&stripe.SubscriptionListParams{Customer: stripe.String(cs1.Customer.ID), Status: stripe.String("all")}); !it.Next() || it.Next() {
		t.Fatal("want exactly one subscription")
	}
}
