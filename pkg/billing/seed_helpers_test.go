package billing_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/billing"
)

// Organizations made straight in the local Stripe, for the tests that
// need Stripe's objects without going through subscribe.

// liveSubscriptions makes n paid subscriptions to the business tier in
// the local Stripe, one organization each (org_live0, org_live1, …), in
// process (stripelocal.SeedOrganization): their webhooks go to whatever
// endpoint is registered, and nothing is mirrored otherwise.
func (f *fixture) liveSubscriptions(n int) []*stripe.Subscription {
	f.upsert(billing.UpsertRequest{})
	return f.seed(n, "org_live", ns, true, "business")
}

// seed makes n organizations (prefix0, prefix1, …) of namespace in the
// local Stripe, each a customer and a subscription to the catalog keys
// given, in process; paying ones are active.
func (f *fixture) seed(n int, prefix, namespace string, paying bool, keys ...string) []*stripe.Subscription {
	f.t.Helper()
	var prices []string
	for _, k := range keys {
		m, err := f.store.GetProductMapping(context.Background(), k)
		if err != nil {
			f.t.Fatal(err)
		}
		prices = append(prices, m.PriceID)
	}
	out := make([]*stripe.Subscription, n)
	for i := range n {
		raw, err := f.stripe.SeedOrganization(map[string]string{"org_id": fmt.Sprintf("%s%d", prefix, i), "billing_namespace": namespace}, paying, prices...)
		if err != nil {
			f.t.Fatal(err)
		}
		b, _ := json.Marshal(raw)
		if err := json.Unmarshal(b, &out[i]); err != nil {
			f.t.Fatal(err)
		}
	}
	return out
}

// mirrored seeds n organizations as seed does and mirrors each as the
// webhook would, without a webhook.
func (f *fixture) mirrored(n int, prefix string, keys ...string) []*stripe.Subscription {
	f.t.Helper()
	subs := f.seed(n, prefix, ns, true, keys...)
	for i, sub := range subs {
		if err := billing.MirrorFromStripe(context.Background(), f.store, fmt.Sprintf("%s%d", prefix, i), sub); err != nil {
			f.t.Fatal(err)
		}
	}
	return subs
}

// liveSubscription makes a real subscription in the local Stripe, so that a
// re-fetch has something to find.
func (f *fixture) liveSubscription(org string) *stripe.Subscription {
	f.t.Helper()
	f.upsert(billing.UpsertRequest{})
	sc := f.sc()
	c := f.payingCustomer(map[string]string{"org_id": org, "billing_namespace": ns})
	m, _ := f.store.GetProductMapping(context.Background(), "business")
	sub, err := sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(m.PriceID)}},
		Metadata: map[string]string{"org_id": org, "billing_namespace": ns}})
	if err != nil {
		f.t.Fatal(err)
	}
	f.stripe.ResetCounts()
	f.db.Reset()
	return sub
}

// payingCustomer makes a customer, straight in Stripe, whose invoices a
// test card pays: pm_card_visa attached and made the default.
func (f *fixture) payingCustomer(meta map[string]string) *stripe.Customer {
	f.t.Helper()
	sc := f.sc()
	c, err := sc.Customers.New(&stripe.CustomerParams{Metadata: meta})
	if err != nil {
		f.t.Fatal(err)
	}
	pm, err := sc.PaymentMethods.Attach("pm_card_visa", &stripe.PaymentMethodAttachParams{Customer: stripe.String(c.ID)})
	if err != nil {
		f.t.Fatal(err)
	}
	c, err = sc.Customers.Update(c.ID, &stripe.CustomerParams{InvoiceSettings: &stripe.CustomerInvoiceSettingsParams{DefaultPaymentMethod: stripe.String(pm.ID)}})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}
