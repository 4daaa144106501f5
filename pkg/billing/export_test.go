package billing

import (
	"context"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

// MirrorFromStripe writes an organization's customer mapping, and its
// subscription with the latest invoice, into the mirror as the webhook's
// events would.
func MirrorFromStripe(ctx context.Context, store *table.Store, org string, sub *stripe.Subscription) error {
	now := time.Now()
	if err := store.CreateCustomer(ctx, table.Customer{OrgID: org, CustomerID: sub.Customer.ID, CreatedAt: now.UTC()}); err != nil {
		return err
	}
	if _, err := store.ApplyChange(ctx, subscriptionChange(org, asWireSubscription(sub), sub.Created), true, now); err != nil {
		return err
	}
	if inv := sub.LatestInvoice; inv != nil && inv.ID != "" {
		_, err := store.ApplyChange(ctx, invoiceChange(org, asWireInvoice(inv), sub.Created), true, now)
		return err
	}
	return nil
}

// MirrorRecord is the subscription record MirrorFromStripe's writes leave
// for sub, for the reconcile scale test to write thousands at a time
// (ApplyChange's conditional updates cost moto about 15 ms each).
func MirrorRecord(org string, sub *stripe.Subscription) table.Subscription {
	snap := subscriptionChange(org, asWireSubscription(sub), sub.Created).Subscription
	rec := table.Subscription{OrgID: org, SubscriptionID: snap.SubscriptionID, CustomerID: snap.CustomerID, Status: snap.Status,
		Tier: snap.Tier, Items: snap.Items, SubscriptionCreated: snap.Created, CurrentPeriodStart: snap.CurrentPeriodStart,
		CurrentPeriodEnd: snap.CurrentPeriodEnd, RequestID: snap.RequestID, CancelAtPeriodEnd: snap.CancelAtPeriodEnd,
		Trial: snap.Trial, SourceTime: snap.SourceTime, Version: 1, UpdatedAt: time.Now().UTC()}
	if inv := sub.LatestInvoice; inv != nil && inv.ID != "" {
		ch := invoiceChange(org, asWireInvoice(inv), sub.Created).Invoice
		rec.InvoiceSubscription, rec.LatestInvoiceID, rec.LatestInvoiceStatus = ch.SubscriptionID, ch.InvoiceID, ch.Status
		rec.InvoicePaymentFail, rec.Payment, rec.InvoiceTime = ch.PaymentFailed, ch.Payment, ch.SourceTime
	}
	return rec
}
