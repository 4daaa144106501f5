package stripelocal_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/stripe/stripe-go/v76"
)

type catalog struct{ starter, business, gpu, cpu *stripe.Price }

func mustCatalog(t *testing.T, e *env) catalog {
	t.Helper()
	licensed := func(id string, cents int64) *stripe.Price {
		mustProduct(t, e, id)
		p, err := e.sc.Prices.New(&stripe.PriceParams{Product: stripe.String(id), Currency: stripe.String("usd"), UnitAmount: stripe.Int64(cents),
			Recurring: &stripe.PriceRecurringParams{Interval: stripe.String("month")}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	metered := func(id string, perMinute float64) *stripe.Price {
		mustProduct(t, e, id)
		m := mustMeter(t, e, "ns."+id)
		p, err := e.sc.Prices.New(&stripe.PriceParams{Product: stripe.String(id), Currency: stripe.String("usd"), UnitAmountDecimal: stripe.Float64(perMinute),
			Recurring: &stripe.PriceRecurringParams{Interval: stripe.String("month"), UsageType: stripe.String("metered"), Meter: stripe.String(m.ID)}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	return catalog{licensed("starter", 0), licensed("business", 50000), metered("gpu", 4.5), metered("cpu", 0.25)}
}

// mustCustomer makes a customer whose default payment method is a test
// card that pays: pm_card_visa attached (a copy with its own ID) and set as
// the invoices' default, as Stripe's docs do it.
func mustCustomer(t *testing.T, e *env) *stripe.Customer {
	t.Helper()
	return customerWithCard(t, e, "pm_card_visa")
}

func customerWithCard(t *testing.T, e *env, token string) *stripe.Customer {
	t.Helper()
	c, err := e.sc.Customers.New(&stripe.CustomerParams{Metadata: map[string]string{"org_id": "org_1"}})
	if err != nil {
		t.Fatal(err)
	}
	pm, err := e.sc.PaymentMethods.Attach(token, &stripe.PaymentMethodAttachParams{Customer: stripe.String(c.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if pm.ID == token || pm.Customer == nil || pm.Customer.ID != c.ID {
		t.Fatalf("attached %s as %+v: want a copy with its own ID, attached to %s", token, pm, c.ID)
	}
	c, err = e.sc.Customers.Update(c.ID, &stripe.CustomerParams{InvoiceSettings: &stripe.CustomerInvoiceSettingsParams{DefaultPaymentMethod: stripe.String(pm.ID)}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func itemKeys(sub *stripe.Subscription) []string {
	var out []string
	for _, it := range sub.Items.Data {
		out = append(out, it.Price.Product.ID)
	}
	slices.Sort(out)
	return out
}

func TestSubscriptions_CreateWithSeveralItemsUpdateAndCancel(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := mustCustomer(t, e)
	sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{
		Customer: stripe.String(c.ID),
		Items:    []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}, {Price: stripe.String(cat.gpu.ID)}},
		Metadata: map[string]string{"org_id": "org_1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Status != "active" || strings.Join(itemKeys(sub), ",") != "business,gpu" || sub.CurrentPeriodEnd <= sub.CurrentPeriodStart || sub.LatestInvoice == nil {
		t.Fatalf("created %s with %v, period %d-%d", sub.Status, itemKeys(sub), sub.CurrentPeriodStart, sub.CurrentPeriodEnd)
	}

	// Swap the tier price, keep the gpu item, add cpu.
	var tierItem, gpuItem string
	for _, it := range sub.Items.Data {
		if it.Price.ID == cat.business.ID {
			tierItem = it.ID
		} else {
			gpuItem = it.ID
		}
	}
	up, err := e.sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{
		Items:             []*stripe.SubscriptionItemsParams{{ID: stripe.String(tierItem), Price: stripe.String(cat.starter.ID)}, {Price: stripe.String(cat.cpu.ID)}},
		ProrationBehavior: stripe.String("create_prorations"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(itemKeys(up), ",") != "cpu,gpu,starter" {
		t.Fatalf("after swap: %v", itemKeys(up))
	}
	for _, it := range up.Items.Data {
		if it.Price.ID == cat.starter.ID && it.ID != tierItem {
			t.Fatalf("swapping a price replaced the item %s with %s", tierItem, it.ID)
		}
	}

	// Items through their own endpoints.
	if _, err := e.sc.SubscriptionItems.Del(gpuItem, nil); err != nil {
		t.Fatal(err)
	}
	added, err := e.sc.SubscriptionItems.New(&stripe.SubscriptionItemParams{Subscription: stripe.String(sub.ID), Price: stripe.String(cat.gpu.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sc.SubscriptionItems.Update(tierItem, &stripe.SubscriptionItemParams{Price: stripe.String(cat.business.ID), ProrationBehavior: stripe.String("always_invoice")}); err != nil {
		t.Fatal(err)
	}
	got, _ := e.sc.Subscriptions.Get(sub.ID, nil)
	if strings.Join(itemKeys(got), ",") != "business,cpu,gpu" || !slices.ContainsFunc(got.Items.Data, func(it *stripe.SubscriptionItem) bool { return it.ID == added.ID }) {
		t.Fatalf("after item calls: %v", itemKeys(got))
	}
	if got.LatestInvoice.ID == sub.LatestInvoice.ID {
		t.Fatal("always_invoice made no invoice")
	}

	list := e.sc.Subscriptions.List(&stripe.SubscriptionListParams{Customer: stripe.String(c.ID)})
	if !list.Next() || list.Subscription().ID != sub.ID {
		t.Fatalf("list by customer: %v", list.Err())
	}

	canceled, err := e.sc.Subscriptions.Cancel(sub.ID, nil)
	if err != nil || canceled.Status != "canceled" || canceled.EndedAt == 0 {
		t.Fatalf("cancel: %+v %v", canceled, err)
	}
	if _, err := e.sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)}); err == nil {
		t.Fatal("a canceled subscription accepted an update")
	}
}

func TestSubscriptions_MeteredItemsTakeNoQuantity(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := mustCustomer(t, e)
	_, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.gpu.ID), Quantity: stripe.Int64(2)}}})
	if se := stripeErr(t, err); se.HTTPStatusCode != 400 || se.Param != "items[0][quantity]" {
		t.Fatalf("got %+v", se)
	}
}

func TestSubscriptions_CancelAtPeriodEndThenTheClockPassesIt(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := mustCustomer(t, e)
	sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}}})
	if err != nil {
		t.Fatal(err)
	}
	up, err := e.sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)})
	if err != nil || !up.CancelAtPeriodEnd || up.Status != "active" {
		t.Fatalf("cancel at period end: %+v %v", up, err)
	}
	e.srv.Advance(32 * 24 * time.Hour)
	got, _ := e.sc.Subscriptions.Get(sub.ID, nil)
	if got.Status != "canceled" {
		t.Fatalf("after the period end: %s, want canceled", got.Status)
	}
}

func TestSubscriptions_TrialThenRenewalInvoicesUsage(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := mustCustomer(t, e)
	sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), TrialPeriodDays: stripe.Int64(14),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}, {Price: stripe.String(cat.gpu.ID)}}})
	if err != nil || sub.Status != "trialing" || sub.TrialEnd != sub.CurrentPeriodEnd {
		t.Fatalf("trial: %+v %v", sub, err)
	}
	e.srv.Advance(15 * 24 * time.Hour)
	got, _ := e.sc.Subscriptions.Get(sub.ID, nil)
	if got.Status != "active" || got.CurrentPeriodStart != sub.TrialEnd {
		t.Fatalf("after the trial: %s from %d, want active from %d", got.Status, got.CurrentPeriodStart, sub.TrialEnd)
	}
	if _, err := e.sc.BillingMeterEvents.New(&stripe.BillingMeterEventParams{EventName: stripe.String("ns.gpu"),
		Payload: map[string]string{"stripe_customer_id": c.ID, "value": "100"}}); err != nil {
		t.Fatal(err)
	}
	e.srv.Advance(31 * 24 * time.Hour)
	renewed, _ := e.sc.Subscriptions.Get(sub.ID, nil)
	inv, err := e.sc.Invoices.Get(renewed.LatestInvoice.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(50000 + 450); inv.AmountDue != want || inv.Status != "paid" || inv.BillingReason != "subscription_cycle" {
		t.Fatalf("renewal invoice %d %s %s, want %d paid (tier + 100 min × 4.5¢)", inv.AmountDue, inv.Status, inv.BillingReason, want)
	}
}

func TestInvoices_SettleFailedThenPaidMovesTheStatus(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := mustCustomer(t, e)
	e.srv.SetPaymentMode(stripelocal.PayNothing)
	sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), PaymentBehavior: stripe.String("default_incomplete"),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}}})
	if err != nil || sub.Status != "incomplete" {
		t.Fatalf("created %s %v, want incomplete", sub.Status, err)
	}
	status := func() stripe.SubscriptionStatus {
		got, _ := e.sc.Subscriptions.Get(sub.ID, nil)
		return got.Status
	}
	steps := []struct {
		outcome string
		want    stripe.SubscriptionStatus
		advance bool
	}{
		{"paid", "active", false},
		{"failed", "past_due", true}, // the renewal's payment fails
		{"paid", "active", false},
	}
	for _, s := range steps {
		if s.advance {
			e.srv.Advance(32 * 24 * time.Hour)
		}
		if err := e.srv.Settle(sub.ID, s.outcome); err != nil {
			t.Fatal(err)
		}
		if got := status(); got != s.want {
			t.Fatalf("after %s: %s, want %s", s.outcome, got, s.want)
		}
	}
	var types []string
	for it := e.sc.Events.List(&stripe.EventListParams{Type: stripe.String("invoice.payment_*")}); it.Next(); {
		types = append(types, string(it.Event().Type))
	}
	if strings.Join(types, ",") != "invoice.payment_succeeded,invoice.payment_failed,invoice.payment_succeeded" {
		t.Fatalf("payment events (newest first) = %v", types)
	}
	if err := e.srv.Settle(sub.ID, "paid"); err == nil {
		t.Fatal("settling a paid invoice again succeeded")
	}
}

func TestInvoices_FourFailedAttemptsMakeItUnpaid(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := mustCustomer(t, e)
	sub, _ := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}}})
	e.srv.SetPaymentMode(stripelocal.PayNothing)
	e.srv.Advance(32 * 24 * time.Hour)
	for range 4 {
		if err := e.srv.Settle(sub.ID, "failed"); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := e.sc.Subscriptions.Get(sub.ID, nil)
	if got.Status != "unpaid" {
		t.Fatalf("status %s, want unpaid", got.Status)
	}
}

// FIDELITY.md rule 18: a meter price switched mid-period (classic billing
// mode, all our API version has) bills only the usage after the switch;
// the period's usage before it is never billed.
func TestSubscriptions_AMeterPriceSwitchedMidPeriodBillsOnlyTheUsageAfterIt(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := mustCustomer(t, e)
	sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}, {Price: stripe.String(cat.gpu.ID)}}})
	if err != nil {
		t.Fatal(err)
	}
	use := func(minutes string) {
		t.Helper()
		if _, err := e.sc.BillingMeterEvents.New(&stripe.BillingMeterEventParams{EventName: stripe.String("ns.gpu"),
			Payload: map[string]string{"stripe_customer_id": c.ID, "value": minutes}}); err != nil {
			t.Fatal(err)
		}
	}
	use("100")
	e.srv.Advance(10 * 24 * time.Hour)
	// The same meter at 9¢ a minute.
	dearer, err := e.sc.Prices.New(&stripe.PriceParams{Product: stripe.String("gpu"), Currency: stripe.String("usd"), UnitAmountDecimal: stripe.Float64(9),
		Recurring: &stripe.PriceRecurringParams{Interval: stripe.String("month"), UsageType: stripe.String("metered"), Meter: stripe.String(cat.gpu.Recurring.Meter)}})
	if err != nil {
		t.Fatal(err)
	}
	var gpuItem string
	for _, it := range sub.Items.Data {
		if it.Price.ID == cat.gpu.ID {
			gpuItem = it.ID
		}
	}
	if _, err := e.sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{ProrationBehavior: stripe.String("none"),
		Items: []*stripe.SubscriptionItemsParams{{ID: stripe.String(gpuItem), Price: stripe.String(dearer.ID)}}}); err != nil {
		t.Fatal(err)
	}
	e.srv.Advance(time.Second)
	use("10")
	e.srv.Advance(25 * 24 * time.Hour)
	renewed, _ := e.sc.Subscriptions.Get(sub.ID, nil)
	inv, err := e.sc.Invoices.Get(renewed.LatestInvoice.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(50000 + 90); inv.AmountDue != want || inv.BillingReason != "subscription_cycle" {
		t.Fatalf("renewal invoice %d (%s), want %d: the tier and the 10 minutes after the switch at 9¢; the 100 before it go unbilled", inv.AmountDue, inv.BillingReason, want)
	}
}
