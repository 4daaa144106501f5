package billing_test

import (
	"context"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/pkg/billing"
)

func TestWebhook_RealDeliveriesFromTheLocalStripeKeepTheMirror(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.gatewayFor()
	f.stripe.SetDelivery(stripelocal.DeliveryMode{Mode: "shuffled", Duplicate: true, JitterMS: 50})
	f.upsert(billing.UpsertRequest{})
	sc := f.sc()
	meta := map[string]string{"org_id": "org_live", "billing_namespace": ns}
	c := f.payingCustomer(meta)
	tier, _ := f.store.GetProductMapping(context.Background(), "business")
	gpu, _ := f.store.GetProductMapping(context.Background(), "gpu-a10g")
	sub, err := sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), Metadata: meta,
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(tier.PriceID)}, {Price: stripe.String(gpu.PriceID)}}})
	if err != nil {
		t.Fatal(err)
	}
	f.stripe.WaitDeliveries()
	s := f.mirror("org_live").Subscription
	if s == nil || s.SubscriptionID != sub.ID || s.Status != "active" || s.Tier != "business" || len(s.Items) != 2 || s.Delinquent() {
		t.Fatalf("after subscribing: %+v", s)
	}
	if m := f.mirror("org_live"); m.Customer == nil || m.Customer.CustomerID != c.ID {
		t.Fatalf("customer mirror %+v", m.Customer)
	}

	// A renewal whose payment fails makes the org delinquent; paying clears it.
	f.stripe.SetPaymentMode(stripelocal.PayNothing) // the renewal waits to be settled
	f.stripe.Advance(32 * 24 * time.Hour)
	if err := f.stripe.Settle(sub.ID, "failed"); err != nil {
		t.Fatal(err)
	}
	f.stripe.WaitDeliveries()
	if s := f.mirror("org_live").Subscription; !s.Delinquent() || s.Status != "past_due" {
		t.Fatalf("after a failed payment: status %s, delinquent %v", s.Status, s.Delinquent())
	}
	if err := f.stripe.Settle(sub.ID, "paid"); err != nil {
		t.Fatal(err)
	}
	f.stripe.WaitDeliveries()
	if s := f.mirror("org_live").Subscription; s.Delinquent() || s.Status != "active" || s.LatestInvoiceStatus != "paid" {
		t.Fatalf("after paying: status %s, invoice %s, delinquent %v", s.Status, s.LatestInvoiceStatus, s.Delinquent())
	}

	// Cancel at the period end, then let the period end.
	if _, err := sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	f.stripe.WaitDeliveries()
	if s := f.mirror("org_live").Subscription; !s.CancelAtPeriodEnd || s.Status != "active" {
		t.Fatalf("cancel at period end: %+v", s)
	}
	f.stripe.Advance(32 * 24 * time.Hour)
	f.stripe.WaitDeliveries()
	if s := f.mirror("org_live").Subscription; s.Status != "canceled" {
		t.Fatalf("after the period end: %s, want canceled", s.Status)
	}

	failed := 0
	for it := sc.Events.List(&stripe.EventListParams{DeliverySuccess: stripe.Bool(false)}); it.Next(); {
		failed++
	}
	if failed != 0 {
		t.Fatalf("%d events were not delivered successfully", failed)
	}
}
