package stripelocal_test

// Rules 10 to 14 of FIDELITY.md: Checkout, hosted invoice pages, trials
// and their SetupIntent, the upcoming invoice, and portal configurations.

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/testenv"
)

func newCheckout(t *testing.T, e *env, cat catalog, customer string, trialDays int64) *stripe.CheckoutSession {
	t.Helper()
	p := &stripe.CheckoutSessionParams{
		Mode: stripe.String("subscription"), Customer: stripe.String(customer), ClientReferenceID: stripe.String("org_1"),
		SuccessURL: stripe.String("http://localhost:3000/done?session={CHECKOUT_SESSION_ID}"), CancelURL: stripe.String("http://localhost:3000/back"),
		LineItems: []*stripe.CheckoutSessionLineItemParams{
			{Price: stripe.String(cat.business.ID), Quantity: stripe.Int64(1)},
			{Price: stripe.String(cat.gpu.ID)},
		},
		SubscriptionData: &stripe.CheckoutSessionSubscriptionDataParams{Metadata: map[string]string{"org_id": "org_1"}},
	}
	if trialDays > 0 {
		p.SubscriptionData.TrialPeriodDays = stripe.Int64(trialDays)
	}
	cs, err := e.sc.CheckoutSessions.New(p)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func bareCustomer(t *testing.T, e *env) *stripe.Customer {
	t.Helper()
	c, err := e.sc.Customers.New(&stripe.CustomerParams{Email: stripe.String("ada@example.com")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// eventTypes lists the types of the events about id, oldest first.
func eventTypes(t *testing.T, e *env) []string {
	t.Helper()
	var out []string
	it := e.sc.Events.List(&stripe.EventListParams{ListParams: stripe.ListParams{Limit: stripe.Int64(100)}})
	for it.Next() {
		out = append(out, string(it.Event().Type))
	}
	slices.Reverse(out)
	return out
}

func TestRule10_CheckoutPaidWithACardMakesThePaidSubscription(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := bareCustomer(t, e)
	cs := newCheckout(t, e, cat, c.ID, 0)
	if cs.Status != "open" || cs.PaymentStatus != "unpaid" || cs.AmountTotal != 50000 || !strings.HasPrefix(cs.ID, "cs_test_") ||
		cs.ExpiresAt-cs.Created != 24*3600 || cs.URL == "" {
		t.Fatalf("new session: %+v", cs)
	}
	status, html := testenv.GetPage(t, cs.URL)
	if status != 200 || !strings.Contains(html, "business") || !strings.Contains(html, "gpu") || !strings.Contains(html, "500.00 usd") {
		t.Fatalf("the hosted page: %d\n%s", status, html)
	}
	resp, _ := testenv.PostForm(t, cs.URL+"/pay", url.Values{"card": {"pm_card_visa"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "http://localhost:3000/done?session="+cs.ID {
		t.Fatalf("paying: %d, to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	p := &stripe.CheckoutSessionParams{}
	p.AddExpand("subscription")
	done, err := e.sc.CheckoutSessions.Get(cs.ID, p)
	if err != nil {
		t.Fatal(err)
	}
	if done.Status != "complete" || done.PaymentStatus != "paid" || done.URL != "" || done.Subscription == nil {
		t.Fatalf("after paying: %+v", done)
	}
	sub, _ := e.sc.Subscriptions.Get(done.Subscription.ID, nil)
	if sub.Status != "active" || sub.Metadata["org_id"] != "org_1" || sub.DefaultPaymentMethod == nil || len(sub.Items.Data) != 2 {
		t.Fatalf("the subscription: %s %v %v", sub.Status, sub.Metadata, sub.DefaultPaymentMethod)
	}
	// The subscription's events come before the session's completion, as
	// integrations report (FIDELITY.md, rule 10).
	types := eventTypes(t, e)
	created, paid, completed := slices.Index(types, "customer.subscription.created"), slices.Index(types, "invoice.paid"),
		slices.Index(types, "checkout.session.completed")
	if created < 0 || paid < created || completed < paid || !slices.Contains(types, "payment_method.attached") {
		t.Fatalf("events: %v", types)
	}
	// A completed session cannot be paid or expired again.
	if resp, html := testenv.PostForm(t, cs.URL+"/pay", url.Values{"card": {"pm_card_visa"}}); resp.StatusCode != 200 || !strings.Contains(html, "no longer open") {
		t.Fatalf("paying twice: %d %s", resp.StatusCode, html)
	}
	_, err = e.sc.CheckoutSessions.Expire(cs.ID, nil)
	if se := stripeErr(t, err); se.Msg != "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of `complete`." {
		t.Fatalf("expiring a complete session: %+v", se)
	}
}

func TestRule10_ADeclinedCardLeavesTheSessionOpenWithNothingMade(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := bareCustomer(t, e)
	cs := newCheckout(t, e, cat, c.ID, 0)
	for _, card := range []string{"pm_card_visa_chargeDeclined", "pm_card_chargeCustomerFail"} {
		resp, html := testenv.PostForm(t, cs.URL+"/pay", url.Values{"card": {card}})
		if resp.StatusCode != 200 || !strings.Contains(html, "Your card was declined.") || !strings.Contains(html, `id="pay"`) {
			t.Fatalf("%s: %d\n%s", card, resp.StatusCode, html)
		}
	}
	if it := e.sc.Subscriptions.List(&stripe.SubscriptionListParams{Customer: stripe.String(c.ID), Status: stripe.String("all")}); it.Next() {
		t.Fatalf("a declined card made subscription %s", it.Subscription().ID)
	}
	again, _ := e.sc.CheckoutSessions.Get(cs.ID, nil)
	if again.Status != "open" {
		t.Fatalf("after declines: %s", again.Status)
	}
	// Then a card that pays completes it.
	if resp, _ := testenv.PostForm(t, cs.URL+"/pay", url.Values{"card": {"pm_card_visa"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("paying after declines: %d", resp.StatusCode)
	}
}

func TestRule10_AuthenticationFailsThenCompletes(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := bareCustomer(t, e)
	cs := newCheckout(t, e, cat, c.ID, 0)
	resp, html := testenv.PostForm(t, cs.URL+"/pay", url.Values{"card": {"pm_card_authenticationRequired"}})
	if resp.StatusCode != 200 || !strings.Contains(html, `id="complete"`) {
		t.Fatalf("a card that needs 3-D Secure: %d\n%s", resp.StatusCode, html)
	}
	// Failing the challenge returns to the page; a second card attempt
	// with the same card asks again and then passes.
	if _, html := testenv.PostForm(t, cs.URL+"/authenticate", url.Values{"pass": {"false"}}); !strings.Contains(html, "unable to authenticate") {
		t.Fatalf("failed authentication:\n%s", html)
	}
	if s, _ := e.sc.CheckoutSessions.Get(cs.ID, nil); s.Status != "open" {
		t.Fatalf("after a failed challenge the session is %s", s.Status)
	}
	testenv.PostForm(t, cs.URL+"/pay", url.Values{"card": {"pm_card_authenticationRequired"}})
	if resp, _ := testenv.PostForm(t, cs.URL+"/authenticate", url.Values{"pass": {"true"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("passing the challenge: %d", resp.StatusCode)
	}
	n := 0
	for it := e.sc.Subscriptions.List(&stripe.SubscriptionListParams{Customer: stripe.String(c.ID), Status: stripe.String("all")}); it.Next(); n++ {
		if it.Subscription().Status != "active" {
			t.Fatalf("subscription %s", it.Subscription().Status)
		}
	}
	if n != 1 {
		t.Fatalf("%d subscriptions, want the one the session made", n)
	}
}

func TestRule10_ASessionExpiresWhenAskedOrAfterADay(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := bareCustomer(t, e)
	cs := newCheckout(t, e, cat, c.ID, 0)
	if got, err := e.sc.CheckoutSessions.Expire(cs.ID, nil); err != nil || got.Status != "expired" || got.URL != "" {
		t.Fatalf("expire: %+v %v", got, err)
	}
	if _, html := testenv.GetPage(t, cs.URL); !strings.Contains(html, "expired") || strings.Contains(html, `id="pay"`) {
		t.Fatalf("an expired session's page:\n%s", html)
	}
	other := newCheckout(t, e, cat, c.ID, 0)
	e.srv.Advance(24*time.Hour + time.Second)
	if got, _ := e.sc.CheckoutSessions.Get(other.ID, nil); got.Status != "expired" {
		t.Fatalf("a day later: %s", got.Status)
	}
	if !slices.Contains(eventTypes(t, e), "checkout.session.expired") {
		t.Fatal("no checkout.session.expired")
	}
	// expires_at is from 30 minutes to 24 hours away.
	_, err := e.sc.CheckoutSessions.New(&stripe.CheckoutSessionParams{Mode: stripe.String("subscription"), Customer: stripe.String(c.ID),
		ExpiresAt:  stripe.Int64(e.srv.Now().Add(10 * time.Minute).Unix()),
		LineItems:  []*stripe.CheckoutSessionLineItemParams{{Price: stripe.String(cat.business.ID), Quantity: stripe.Int64(1)}},
		SuccessURL: stripe.String("http://localhost/ok")})
	if se := stripeErr(t, err); se.Param != "expires_at" {
		t.Fatalf("expires_at in 10 minutes: %+v", se)
	}
	// A metered line takes no quantity.
	_, err = e.sc.CheckoutSessions.New(&stripe.CheckoutSessionParams{Mode: stripe.String("subscription"), Customer: stripe.String(c.ID),
		LineItems:  []*stripe.CheckoutSessionLineItemParams{{Price: stripe.String(cat.gpu.ID), Quantity: stripe.Int64(1)}},
		SuccessURL: stripe.String("http://localhost/ok")})
	if se := stripeErr(t, err); se.Msg != "Quantity should not be defined when `recurring.usage_type=metered`." {
		t.Fatalf("a metered line with a quantity: %+v", se)
	}
}

func TestRule11_TheHostedInvoicePagePaysAnOpenInvoice(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := bareCustomer(t, e)
	p := &stripe.SubscriptionParams{Customer: stripe.String(c.ID), PaymentBehavior: stripe.String("default_incomplete"),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}}}
	p.AddExpand("latest_invoice")
	sub, err := e.sc.Subscriptions.New(p)
	if err != nil {
		t.Fatal(err)
	}
	inv := sub.LatestInvoice
	if inv.HostedInvoiceURL == "" || inv.InvoicePDF == "" || inv.Number == "" || !strings.HasPrefix(inv.Number, c.InvoicePrefix+"-") {
		t.Fatalf("invoice: number %q prefix %q url %q pdf %q", inv.Number, c.InvoicePrefix, inv.HostedInvoiceURL, inv.InvoicePDF)
	}
	status, html := testenv.GetPage(t, inv.HostedInvoiceURL)
	if status != 200 || !strings.Contains(html, inv.Number) || !strings.Contains(html, "500.00 usd") {
		t.Fatalf("the invoice page: %d\n%s", status, html)
	}
	if _, html := testenv.PostForm(t, inv.HostedInvoiceURL+"/pay", url.Values{"card": {"pm_card_chargeCustomerFail"}}); !strings.Contains(html, "declined") {
		t.Fatalf("a failing card:\n%s", html)
	}
	if _, html := testenv.PostForm(t, inv.HostedInvoiceURL+"/pay", url.Values{"card": {"pm_card_visa"}}); !strings.Contains(html, "This invoice is paid.") {
		t.Fatalf("a card that pays:\n%s", html)
	}
	if got, _ := e.sc.Subscriptions.Get(sub.ID, nil); got.Status != "active" {
		t.Fatalf("the subscription after the hosted page: %s", got.Status)
	}
	pdf, _ := http.NewRequest(http.MethodGet, inv.InvoicePDF, nil)
	if resp := testenv.MustDo(t, http.DefaultClient, pdf); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pdf" {
		t.Fatalf("the PDF: %d %v", resp.StatusCode, resp.Header)
	}
	// The list shows the same invoice, newest first, with its links.
	it := e.sc.Invoices.List(&stripe.InvoiceListParams{Customer: stripe.String(c.ID)})
	if !it.Next() || it.Invoice().ID != inv.ID || it.Invoice().Status != "paid" || it.Invoice().HostedInvoiceURL != inv.HostedInvoiceURL {
		t.Fatalf("the invoice list: %+v", it.Invoice())
	}
}

func TestRule12_ATrialWithoutACardLeavesASetupIntentThenEndsAsConfigured(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	trial := func(c *stripe.Customer, missing string) *stripe.Subscription {
		p := &stripe.SubscriptionParams{Customer: stripe.String(c.ID), PaymentBehavior: stripe.String("default_incomplete"),
			TrialPeriodDays: stripe.Int64(14), Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}},
			PaymentSettings: &stripe.SubscriptionPaymentSettingsParams{SaveDefaultPaymentMethod: stripe.String("on_subscription")},
			TrialSettings: &stripe.SubscriptionTrialSettingsParams{EndBehavior: &stripe.SubscriptionTrialSettingsEndBehaviorParams{
				MissingPaymentMethod: stripe.String(missing)}}}
		p.AddExpand("pending_setup_intent")
		sub, err := e.sc.Subscriptions.New(p)
		if err != nil {
			t.Fatal(err)
		}
		return sub
	}
	withCard, cancels, pauses := trial(bareCustomer(t, e), "cancel"), trial(bareCustomer(t, e), "cancel"), trial(bareCustomer(t, e), "pause")
	si := withCard.PendingSetupIntent
	if withCard.Status != "trialing" || si == nil || !strings.HasPrefix(si.ClientSecret, si.ID+"_secret_") || si.Status != "requires_payment_method" {
		t.Fatalf("a trial without a card: %s %+v", withCard.Status, si)
	}
	// The card saved during the trial becomes the subscription's.
	done, err := e.sc.SetupIntents.Confirm(si.ID, &stripe.SetupIntentConfirmParams{PaymentMethod: stripe.String("pm_card_visa")})
	if err != nil || done.Status != "succeeded" {
		t.Fatalf("confirming the SetupIntent: %+v %v", done, err)
	}
	if got, _ := e.sc.Subscriptions.Get(withCard.ID, nil); got.DefaultPaymentMethod == nil || got.PendingSetupIntent != nil {
		t.Fatalf("after the card: %+v %+v", got.DefaultPaymentMethod, got.PendingSetupIntent)
	}
	// Three days before the end: trial_will_end; at the end, each as
	// configured.
	e.srv.Advance(11*24*time.Hour + time.Minute)
	if n := countOf(eventTypes(t, e), "customer.subscription.trial_will_end"); n != 3 {
		t.Fatalf("%d trial_will_end events, want one per trial", n)
	}
	e.srv.Advance(3 * 24 * time.Hour)
	for sub, want := range map[string]stripe.SubscriptionStatus{withCard.ID: "active", cancels.ID: "canceled", pauses.ID: "paused"} {
		if got, _ := e.sc.Subscriptions.Get(sub, nil); got.Status != want {
			t.Fatalf("at the trial's end: %s, want %s", got.Status, want)
		}
	}
	if n := countOf(eventTypes(t, e), "customer.subscription.trial_will_end"); n != 3 {
		t.Fatalf("trial_will_end repeated: %d", n)
	}
}

func countOf(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

func TestRule13_TheUpcomingInvoiceShowsUsageSoFarAndTheNextPeriod(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := mustCustomer(t, e)
	_, err := e.sc.Invoices.Upcoming(&stripe.InvoiceUpcomingParams{Customer: stripe.String(c.ID)})
	if se := stripeErr(t, err); se.Code != "invoice_upcoming_none" {
		t.Fatalf("no subscription: %+v", se)
	}
	sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}, {Price: stripe.String(cat.gpu.ID)}}})
	if err != nil {
		t.Fatal(err)
	}
	gpu, _ := e.sc.Prices.Get(cat.gpu.ID, nil)
	meter, _ := e.sc.BillingMeters.Get(gpu.Recurring.Meter, nil)
	if _, err := e.sc.BillingMeterEvents.New(&stripe.BillingMeterEventParams{EventName: stripe.String(meter.EventName),
		Payload: map[string]string{"stripe_customer_id": c.ID, "value": "33"}}); err != nil {
		t.Fatal(err)
	}
	up, err := e.sc.Invoices.Upcoming(&stripe.InvoiceUpcomingParams{Customer: stripe.String(c.ID)})
	if err != nil {
		t.Fatal(err)
	}
	// 33 minutes at 4.5 cents: 148.5, rounded half away from zero.
	byPrice := map[string]*stripe.InvoiceLineItem{}
	for _, l := range up.Lines.Data {
		byPrice[l.Price.ID] = l
	}
	g, b := byPrice[cat.gpu.ID], byPrice[cat.business.ID]
	if up.ID != "" || g == nil || b == nil || g.Quantity != 33 || g.Amount != 149 || b.Amount != 50000 || up.Total != 50149 ||
		g.Period.End != sub.CurrentPeriodEnd || b.Period.Start != sub.CurrentPeriodEnd {
		t.Fatalf("upcoming: id %q total %d lines %+v %+v", up.ID, up.Total, g, b)
	}
}

func TestRule14_APortalSessionUsesAnActiveConfiguration(t *testing.T) {
	e := newEnv(t)
	c := bareCustomer(t, e)
	// A configuration without features is refused by the referee (the
	// spec requires them), before the local Stripe sees it.
	cfg, err := e.sc.BillingPortalConfigurations.New(&stripe.BillingPortalConfigurationParams{
		BusinessProfile: &stripe.BillingPortalConfigurationBusinessProfileParams{Headline: stripe.String("ns")},
		Features: &stripe.BillingPortalConfigurationFeaturesParams{
			InvoiceHistory:      &stripe.BillingPortalConfigurationFeaturesInvoiceHistoryParams{Enabled: stripe.Bool(true)},
			PaymentMethodUpdate: &stripe.BillingPortalConfigurationFeaturesPaymentMethodUpdateParams{Enabled: stripe.Bool(true)},
		},
		Metadata: map[string]string{"billing_namespace": "ns"},
	})
	if err != nil || !cfg.Active || !cfg.Features.InvoiceHistory.Enabled || cfg.Features.SubscriptionCancel.Enabled || cfg.Metadata["billing_namespace"] != "ns" {
		t.Fatalf("new configuration: %+v %v", cfg, err)
	}
	// With a configuration, no saved default is needed (rule 9).
	s, err := e.sc.BillingPortalSessions.New(&stripe.BillingPortalSessionParams{Customer: stripe.String(c.ID), Configuration: stripe.String(cfg.ID)})
	if err != nil || s.Configuration.ID != cfg.ID {
		t.Fatalf("a session with the configuration: %+v %v", s, err)
	}
	if _, err := e.sc.BillingPortalConfigurations.Update(cfg.ID, &stripe.BillingPortalConfigurationParams{Active: stripe.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.sc.BillingPortalSessions.New(&stripe.BillingPortalSessionParams{Customer: stripe.String(c.ID), Configuration: stripe.String(cfg.ID)})
	if se := stripeErr(t, err); se.Param != "configuration" {
		t.Fatalf("an inactive configuration: %+v", se)
	}
	_, err = e.sc.BillingPortalSessions.New(&stripe.BillingPortalSessionParams{Customer: stripe.String(c.ID), Configuration: stripe.String("bpc_nope")})
	if se := stripeErr(t, err); se.HTTPStatusCode != 404 {
		t.Fatalf("an unknown configuration: %+v", se)
	}
}
