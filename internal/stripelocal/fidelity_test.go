package stripelocal_test

// One test per rule of FIDELITY.md: each shows the local Stripe refusing
// (or doing) what Stripe does, and fails if the rule is taken out.

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
)

func TestRule1_AnEmptyStringIsRefusedWhereItCannotUnset(t *testing.T) {
	e := newEnv(t)
	resp := rawPost(t, e, "/v1/products", url.Values{"name": {"p"}, "description": {""}}, "")
	body := readError(t, resp)
	want := "You passed an empty string for 'description'. We assume empty values are an attempt to unset a parameter; " +
		"however 'description' cannot be unset. You should remove 'description' from your request or supply a non-empty value."
	if resp.StatusCode != 400 || body.Code != "parameter_invalid_empty" || body.Param != "description" || body.Message != want {
		t.Fatalf("create with description='': %d %+v", resp.StatusCode, body)
	}
	// Nested parameters too, and nothing was made.
	resp = rawPost(t, e, "/v1/customers", url.Values{"invoice_settings[footer]": {""}}, "")
	if body := readError(t, resp); resp.StatusCode != 400 || body.Param != "invoice_settings[footer]" {
		t.Fatalf("create with a nested '': %d %+v", resp.StatusCode, body)
	}
	if it := e.sc.Products.List(nil); it.Next() {
		t.Fatal("a refused create made a product")
	}
	// A metadata value may be empty; on create the key is not stored.
	resp = rawPost(t, e, "/v1/products", url.Values{"id": {"p"}, "name": {"p"}, "metadata[k]": {""}, "metadata[j]": {"v"}}, "")
	var p stripe.Product
	if resp.StatusCode != 200 || json.Unmarshal(resp.Body, &p) != nil || len(p.Metadata) != 1 || p.Metadata["j"] != "v" {
		t.Fatalf("create with metadata[k]='': %d %+v", resp.StatusCode, p.Metadata)
	}
	// An update unsets what the spec lets it: description yes, name no.
	if resp := rawPost(t, e, "/v1/products/p", url.Values{"description": {""}}, ""); resp.StatusCode != 200 {
		t.Fatalf("update with description='': %d", resp.StatusCode)
	}
	if resp := rawPost(t, e, "/v1/products/p", url.Values{"name": {""}}, ""); resp.StatusCode != 400 || readError(t, resp).Code != "parameter_invalid_empty" {
		t.Fatalf("update with name='': %d", resp.StatusCode)
	}
	// default_price unsets although the spec types it a plain string
	// (Stripe staff, stripe/stripe-python#658).
	if resp := rawPost(t, e, "/v1/products/p", url.Values{"default_price": {""}}, ""); resp.StatusCode != 200 {
		t.Fatalf("update with default_price='': %d", resp.StatusCode)
	}
}

func TestRule2_TheDefaultPriceCannotBeArchived(t *testing.T) {
	e := newEnv(t)
	mustProduct(t, e, "p")
	price, err := e.sc.Prices.New(&stripe.PriceParams{Product: stripe.String("p"), Currency: stripe.String("usd"), UnitAmount: stripe.Int64(100)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sc.Products.Update("p", &stripe.ProductParams{DefaultPrice: stripe.String(price.ID)}); err != nil {
		t.Fatal(err)
	}
	_, err = e.sc.Prices.Update(price.ID, &stripe.PriceParams{Active: stripe.Bool(false)})
	if se := stripeErr(t, err); se.HTTPStatusCode != 400 || se.Msg != "This price cannot be archived because it is the default price of its product." {
		t.Fatalf("archiving the default price: %+v", se)
	}
	// Unset it first, then the price archives.
	if _, err := e.sc.Products.Update("p", &stripe.ProductParams{DefaultPrice: stripe.String("")}); err != nil {
		t.Fatal(err)
	}
	if p, err := e.sc.Prices.Update(price.ID, &stripe.PriceParams{Active: stripe.Bool(false)}); err != nil || p.Active {
		t.Fatalf("archive after unsetting: %v", err)
	}
}

func TestRule3_WithoutAPaymentMethodNothingIsPaid(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	bare, _ := e.sc.Customers.New(&stripe.CustomerParams{})
	items := []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}}

	// allow_incomplete (the default) with nothing to charge: refused.
	_, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(bare.ID), Items: items})
	if se := stripeErr(t, err); se.HTTPStatusCode != 400 || !strings.HasPrefix(se.Msg, "This customer has no attached payment source or default payment method.") {
		t.Fatalf("allow_incomplete without a payment method: %+v", se)
	}
	// default_incomplete: incomplete, its first invoice open and its
	// PaymentIntent waiting for a payment method.
	p := &stripe.SubscriptionParams{Customer: stripe.String(bare.ID), Items: items, PaymentBehavior: stripe.String("default_incomplete")}
	p.AddExpand("latest_invoice.payment_intent")
	sub, err := e.sc.Subscriptions.New(p)
	if err != nil {
		t.Fatal(err)
	}
	pi := sub.LatestInvoice.PaymentIntent
	if sub.Status != "incomplete" || sub.LatestInvoice.Status != "open" || pi == nil || pi.Status != "requires_payment_method" ||
		!strings.HasPrefix(pi.ClientSecret, pi.ID+"_secret_") || pi.Amount != 50000 {
		t.Fatalf("default_incomplete: %s, invoice %s, intent %+v", sub.Status, sub.LatestInvoice.Status, pi)
	}
	// A card that pays, as the customer's default: charged at once.
	paying := mustCustomer(t, e)
	sub, err = e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(paying.ID), Items: items})
	if err != nil || sub.Status != "active" {
		t.Fatalf("with a card: %v %v", sub, err)
	}
	// Paying without a payment method is an explicit test control.
	e.srv.SetPaymentMode(stripelocal.PayEverything)
	other, _ := e.sc.Customers.New(&stripe.CustomerParams{})
	if sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(other.ID), Items: items}); err != nil || sub.Status != "active" {
		t.Fatalf("the pay-everything control: %v %v", sub, err)
	}
}

func TestRule3_TestCardsBehaveAsStripesDocsSay(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c, _ := e.sc.Customers.New(&stripe.CustomerParams{})
	if _, err := e.sc.PaymentMethods.Attach("pm_card_visa_chargeDeclined", &stripe.PaymentMethodAttachParams{Customer: stripe.String(c.ID)}); stripeErr(t, err).Code != "card_declined" {
		t.Fatalf("attaching a card that declines: %v, want card_declined", err)
	}
	for card, want := range map[string]string{"pm_card_visa": "succeeded", "pm_card_chargeCustomerFail": "requires_payment_method",
		"pm_card_authenticationRequired": "requires_action"} {
		p := &stripe.SubscriptionParams{Customer: stripe.String(c.ID), PaymentBehavior: stripe.String("default_incomplete"),
			Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}}}
		p.AddExpand("latest_invoice.payment_intent")
		sub, err := e.sc.Subscriptions.New(p)
		if err != nil {
			t.Fatal(err)
		}
		pi, err := e.sc.PaymentIntents.Confirm(sub.LatestInvoice.PaymentIntent.ID, &stripe.PaymentIntentConfirmParams{PaymentMethod: stripe.String(card)})
		if err != nil || pi.Status != stripe.PaymentIntentStatus(want) {
			t.Fatalf("%s: %v %v, want %s", card, pi, err, want)
		}
		after, _ := e.sc.Subscriptions.Get(sub.ID, nil)
		if wantSub := map[string]string{"succeeded": "active"}[want]; (wantSub == "active") != (after.Status == "active") {
			t.Fatalf("%s: the subscription is %s", card, after.Status)
		}
		if want == "requires_action" {
			if pi.NextAction == nil || pi.NextAction.Type != "use_stripe_sdk" {
				t.Fatalf("%s: next_action %+v", card, pi.NextAction)
			}
			if err := e.srv.Authenticate(pi.ID, true); err != nil {
				t.Fatal(err)
			}
			if after, _ := e.sc.Subscriptions.Get(sub.ID, nil); after.Status != "active" {
				t.Fatalf("after authentication: %s", after.Status)
			}
		}
	}
}

func TestRule4_AnIncompleteSubscriptionTakesOnlyMetadataThenExpires(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c, _ := e.sc.Customers.New(&stripe.CustomerParams{})
	sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), PaymentBehavior: stripe.String("default_incomplete"),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)}); stripeErr(t, err).HTTPStatusCode != 400 {
		t.Fatal("an incomplete subscription took cancel_at_period_end")
	}
	if _, err := e.sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{Metadata: map[string]string{"k": "v"}}); err != nil {
		t.Fatalf("metadata: %v", err)
	}
	e.srv.Advance(22 * time.Hour)
	if got, _ := e.sc.Subscriptions.Get(sub.ID, nil); got.Status != "incomplete" {
		t.Fatalf("after 22 hours: %s", got.Status)
	}
	e.srv.Advance(time.Hour)
	got, _ := e.sc.Subscriptions.Get(sub.ID, nil)
	inv, _ := e.sc.Invoices.Get(got.LatestInvoice.ID, nil)
	if got.Status != "incomplete_expired" || inv.Status != "void" {
		t.Fatalf("after 23 hours: %s, invoice %s", got.Status, inv.Status)
	}
}

func TestRule5_AStored500IsReplayedForADay(t *testing.T) {
	e := newEnv(t)
	e.srv.InjectFault(stripelocal.Fault{Kind: "500", Stored: true, Path: "POST /v1/customers"})
	form := url.Values{"email": {"a@example.com"}}
	if resp := rawPost(t, e, "/v1/customers", form, "key-1"); resp.StatusCode != 500 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	resp := rawPost(t, e, "/v1/customers", form, "key-1")
	if resp.StatusCode != 500 || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry with the same key: %d replayed=%q, want the stored 500", resp.StatusCode, resp.Header.Get("Idempotent-Replayed"))
	}
	if it := e.sc.Customers.List(nil); it.Next() {
		t.Fatal("the 500 made a customer")
	}
	e.srv.Advance(stripelocal.IdempotencyWindow)
	if resp := rawPost(t, e, "/v1/customers", form, "key-1"); resp.StatusCode != 200 || resp.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("a day later: %d, want the request run again", resp.StatusCode)
	}
	// A failure in front of Stripe (not stored): the retry runs.
	e.srv.InjectFault(stripelocal.Fault{Kind: "500", Path: "POST /v1/customers"})
	rawPost(t, e, "/v1/customers", form, "key-2")
	if resp := rawPost(t, e, "/v1/customers", form, "key-2"); resp.StatusCode != 200 {
		t.Fatalf("retry after an unstored 500: %d", resp.StatusCode)
	}
}

func TestRule6_MeterEventsNeedAnActiveMeterAndAFreshIdentifier(t *testing.T) {
	e := newEnv(t)
	m := mustMeter(t, e, "ns.gpu")
	c, _ := e.sc.Customers.New(&stripe.CustomerParams{})
	send := func(name, id string, ts int64) error {
		_, err := e.sc.BillingMeterEvents.New(&stripe.BillingMeterEventParams{EventName: stripe.String(name), Identifier: stripe.String(id),
			Timestamp: stripe.Int64(ts), Payload: map[string]string{"stripe_customer_id": c.ID, "value": "5"}})
		return err
	}
	now := e.srv.Now().Unix()
	if err := send("ns.never", "id-0", now); stripeErr(t, err).Msg != `No active meter found for event name "ns.never".` {
		t.Fatalf("a name with no meter: %v", err)
	}
	if err := send("ns.gpu", "id-1", now); err != nil {
		t.Fatal(err)
	}
	if err := send("ns.gpu", "id-1", now); stripeErr(t, err).Msg != "An event already exists with identifier id-1." {
		t.Fatalf("a repeated identifier: %v", err)
	}
	if err := send("ns.gpu", "id-2", now-36*24*3600); !strings.HasPrefix(stripeErr(t, err).Msg, "The event timestamp cannot be more than 35 days in past.") {
		t.Fatalf("too old: %v", err)
	}
	e.srv.Advance(stripelocal.MeterEventDedupWindow)
	if err := send("ns.gpu", "id-1", e.srv.Now().Unix()); err != nil {
		t.Fatalf("the identifier a day later: %v, want it counted again", err)
	}
	if _, err := e.sc.BillingMeters.Deactivate(m.ID, nil); err != nil {
		t.Fatal(err)
	}
	if err := send("ns.gpu", "id-3", e.srv.Now().Unix()); stripeErr(t, err).Msg != `No active meter found for event name "ns.gpu".` {
		t.Fatalf("a deactivated meter: %v", err)
	}
}

func TestRule7_CancelWithInvoiceNowBillsTheUsageNotYetInvoiced(t *testing.T) {
	for _, invoiceNow := range []bool{true, false} {
		t.Run(fmt.Sprint("invoice_now=", invoiceNow), func(t *testing.T) {
			e := newEnv(t)
			cat := mustCatalog(t, e)
			c := mustCustomer(t, e)
			sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID),
				Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.starter.ID)}, {Price: stripe.String(cat.gpu.ID)}}})
			if err != nil {
				t.Fatal(err)
			}
			gpu, _ := e.sc.Prices.Get(cat.gpu.ID, nil)
			meter, _ := e.sc.BillingMeters.Get(gpu.Recurring.Meter, nil)
			if _, err := e.sc.BillingMeterEvents.New(&stripe.BillingMeterEventParams{EventName: stripe.String(meter.EventName),
				Payload: map[string]string{"stripe_customer_id": c.ID, "value": "100"}}); err != nil {
				t.Fatal(err)
			}
			first := sub.LatestInvoice.ID
			canceled, err := e.sc.Subscriptions.Cancel(sub.ID, &stripe.SubscriptionCancelParams{InvoiceNow: stripe.Bool(invoiceNow)})
			if err != nil || canceled.Status != "canceled" {
				t.Fatalf("cancel: %v %v", canceled, err)
			}
			final, _ := e.sc.Invoices.Get(canceled.LatestInvoice.ID, nil)
			switch {
			case invoiceNow && (final.ID == first || final.AmountDue != 450):
				t.Fatalf("final invoice %s of %d, want a new one of 100 minutes at 4.5", final.ID, final.AmountDue)
			case !invoiceNow && final.ID != first:
				t.Fatalf("without invoice_now a final invoice %s was made", final.ID)
			}
		})
	}
}

func TestRule8_ASubscriptionHasAtMostTwentyItems(t *testing.T) {
	e := newEnv(t)
	c := mustCustomer(t, e)
	var items []*stripe.SubscriptionItemsParams
	for i := range 21 {
		id := fmt.Sprintf("p%d", i)
		mustProduct(t, e, id)
		p, err := e.sc.Prices.New(&stripe.PriceParams{Product: stripe.String(id), Currency: stripe.String("usd"), UnitAmount: stripe.Int64(1),
			Recurring: &stripe.PriceRecurringParams{Interval: stripe.String("month")}})
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, &stripe.SubscriptionItemsParams{Price: stripe.String(p.ID)})
	}
	if _, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), Items: items}); stripeErr(t, err).Param != "items" {
		t.Fatalf("21 items: %v", err)
	}
	sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), Items: items[:20]})
	if err != nil {
		t.Fatalf("20 items: %v", err)
	}
	if _, err := e.sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{Items: items[20:]}); stripeErr(t, err).Param != "items" {
		t.Fatalf("a 21st item: %v", err)
	}
}

func TestRule9_APortalSessionNeedsAConfigurationOrASavedDefault(t *testing.T) {
	e := newEnv(t)
	c, _ := e.sc.Customers.New(&stripe.CustomerParams{})
	_, err := e.sc.BillingPortalSessions.New(&stripe.BillingPortalSessionParams{Customer: stripe.String(c.ID)})
	if se := stripeErr(t, err); se.HTTPStatusCode != 400 || !strings.HasPrefix(se.Msg, "No configuration provided and your test mode default configuration has not been created.") {
		t.Fatalf("no configuration: %+v", se)
	}
	e.srv.SetPortalDefault(true)
	if _, err := e.sc.BillingPortalSessions.New(&stripe.BillingPortalSessionParams{Customer: stripe.String(c.ID)}); err != nil {
		t.Fatalf("with the default saved: %v", err)
	}
}

type errorBody struct {
	Code, Param, Message, Type string
}

// readError decodes Stripe's error envelope from a raw answer.
func readError(t *testing.T, resp testenv.Answer) errorBody {
	t.Helper()
	var env struct{ Error errorBody }
	if err := json.Unmarshal(resp.Body, &env); err != nil {
		t.Fatalf("not an error envelope: %s", resp.Body)
	}
	return env.Error
}
