package billing

import (
	"context"
	"strings"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

func onSubscription(ctx context.Context, d *delivery) error {
	var sub wireSubscription
	if err := decodeObject(d, &sub); err != nil {
		return err
	}
	fetch := func(ctx context.Context) (wireSubscription, error) {
		var got *stripe.Subscription
		err := d.refetch(ctx, func(api *stripeAPI) error {
			var err error
			got, err = api.Subscriptions.Get(sub.ID, &stripe.SubscriptionParams{Params: stripe.Params{Context: ctx}})
			return err
		})
		if err != nil {
			return wireSubscription{}, fromStripe("re-fetch subscription", err)
		}
		return fromStripeSubscription(got), nil
	}
	if d.mismatch {
		got, err := fetch(ctx)
		if err != nil {
			return err
		}
		sub = got
	}
	org, ours, err := d.owner(ctx, sub.Metadata, sub.Customer.ID)
	if err != nil || !ours {
		return orIgnore(err, d, "foreign")
	}
	return d.apply(ctx, org, subscriptionChange(org, sub, d.ev.Created), d.mismatch, func(ctx context.Context) (table.Change, error) {
		got, err := fetch(ctx)
		if err != nil {
			return table.Change{}, err
		}
		return subscriptionChange(org, got, d.ev.Created), nil
	})
}

// subscriptionChange maps a Stripe subscription to the mirror. Items are
// named by their price's billing_key; the tier is the item of kind tier.
func subscriptionChange(org string, sub wireSubscription, at int64) table.Change {
	snap := &table.SubscriptionSnapshot{
		OrgID: org, CustomerID: sub.Customer.ID, SubscriptionID: sub.ID, Status: sub.Status,
		Created: sub.Created, CurrentPeriodEnd: sub.CurrentPeriodEnd, CancelAtPeriodEnd: sub.CancelAtPeriodEnd, SourceTime: at,
		Items: []table.Item{},
	}
	for _, it := range sub.Items.Data {
		if it.Price == nil {
			continue
		}
		key := it.Price.Metadata[metaKey]
		snap.Items = append(snap.Items, table.Item{Key: key, ItemID: it.ID, PriceID: it.Price.ID})
		if it.Price.Metadata[metaKind] == string(KindTier) {
			snap.Tier = key
		}
	}
	return table.Change{Subscription: snap}
}

func onInvoice(ctx context.Context, d *delivery) error {
	var inv wireInvoice
	if err := decodeObject(d, &inv); err != nil {
		return err
	}
	fetch := func(ctx context.Context) (wireInvoice, error) {
		var got *stripe.Invoice
		err := d.refetch(ctx, func(api *stripeAPI) error {
			var err error
			got, err = api.Invoices.Get(inv.ID, &stripe.InvoiceParams{Params: stripe.Params{Context: ctx}})
			return err
		})
		if err != nil {
			return wireInvoice{}, fromStripe("re-fetch invoice", err)
		}
		return fromStripeInvoice(got), nil
	}
	if d.mismatch {
		got, err := fetch(ctx)
		if err != nil {
			return err
		}
		inv = got
	}
	if inv.Subscription.ID == "" {
		return d.ignore("not_a_subscription_invoice")
	}
	var meta map[string]string
	if inv.SubscriptionDetails != nil {
		meta = inv.SubscriptionDetails.Metadata
	}
	org, ours, err := d.owner(ctx, meta, inv.Customer.ID)
	if err != nil || !ours {
		return orIgnore(err, d, "foreign")
	}
	return d.apply(ctx, org, invoiceChange(org, inv, d.ev.Created), d.mismatch, func(ctx context.Context) (table.Change, error) {
		got, err := fetch(ctx)
		if err != nil {
			return table.Change{}, err
		}
		return invoiceChange(org, got, d.ev.Created), nil
	})
}

// invoiceChange reads an invoice's state from the invoice itself: a
// payment failed when it was attempted and is still open, or was marked
// uncollectible.
func invoiceChange(org string, inv wireInvoice, at int64) table.Change {
	failed := (inv.Status == string(stripe.InvoiceStatusOpen) && inv.AttemptCount > 0 && !inv.Paid) || inv.Status == string(stripe.InvoiceStatusUncollectible)
	return table.Change{Invoice: &table.InvoiceSnapshot{OrgID: org, SubscriptionID: inv.Subscription.ID, InvoiceID: inv.ID,
		Status: inv.Status, PaymentFailed: failed, SourceTime: at}}
}

func onCustomer(ctx context.Context, d *delivery) error {
	var c wireCustomer
	if err := decodeObject(d, &c); err != nil {
		return err
	}
	deleted := d.ev.Type == "customer.deleted"
	fetch := func(ctx context.Context) (bool, error) {
		var got *stripe.Customer
		err := d.refetch(ctx, func(api *stripeAPI) error {
			var err error
			got, err = api.Customers.Get(c.ID, &stripe.CustomerParams{Params: stripe.Params{Context: ctx}})
			return err
		})
		if stripeMissing(err) {
			return true, nil
		}
		if err != nil {
			return false, fromStripe("re-fetch customer", err)
		}
		if !got.Deleted {
			c.Metadata = got.Metadata
		}
		return got.Deleted, nil
	}
	if d.mismatch && !deleted {
		var err error
		if deleted, err = fetch(ctx); err != nil {
			return err
		}
	}
	org, ours, err := d.owner(ctx, c.Metadata, c.ID)
	if err != nil || !ours {
		return orIgnore(err, d, "foreign")
	}
	change := func(deleted bool) table.Change {
		return table.Change{Customer: &table.CustomerSnapshot{OrgID: org, CustomerID: c.ID, Deleted: deleted, SourceTime: d.ev.Created}}
	}
	return d.apply(ctx, org, change(deleted), d.mismatch, func(ctx context.Context) (table.Change, error) {
		deleted, err := fetch(ctx)
		return change(deleted), err
	})
}

// onCheckoutCompleted mirrors the subscription a Checkout session made,
// fetched from Stripe (the session holds only its ID).
func onCheckoutCompleted(ctx context.Context, d *delivery) error {
	var cs wireCheckoutSession
	if err := decodeObject(d, &cs); err != nil {
		return err
	}
	if cs.Subscription.ID == "" {
		return d.ignore("not_a_subscription_checkout")
	}
	org, ours, err := d.owner(ctx, cs.Metadata, cs.Customer.ID)
	if err != nil || !ours {
		return orIgnore(err, d, "foreign")
	}
	var sub *stripe.Subscription
	err = d.refetch(ctx, func(api *stripeAPI) error {
		var err error
		sub, err = api.Subscriptions.Get(cs.Subscription.ID, &stripe.SubscriptionParams{Params: stripe.Params{Context: ctx}})
		return err
	})
	if err != nil {
		return fromStripe("fetch the checkout's subscription", err)
	}
	return d.apply(ctx, org, subscriptionChange(org, fromStripeSubscription(sub), d.ev.Created), true, nil)
}

// onCatalogObject handles product.* and price.* events of our namespace:
// those caused by upsert-products (its idempotency keys start with "bf-")
// are already in the mapping; any other change is drift, flagged for
// people, since the next upsert-products run would undo it.
func onCatalogObject(ctx context.Context, d *delivery) error {
	var obj struct {
		ID       string            `json:"id"`
		Metadata map[string]string `json:"metadata"`
	}
	if err := decodeObject(d, &obj); err != nil {
		return err
	}
	if obj.Metadata[metaNamespace] != d.svc.cfg.Namespace {
		return d.ignore("foreign")
	}
	if d.ev.Request != nil && strings.HasPrefix(d.ev.Request.IdempotencyKey, "bf-") {
		return d.apply(ctx, "", table.Change{}, false, nil)
	}
	d.svc.log.WarnContext(ctx, "catalog drift: a Stripe object of this namespace was changed outside upsert-products",
		"event_id", d.ev.ID, "type", d.ev.Type, "object_id", obj.ID, "billing_key", obj.Metadata[metaKey])
	return d.apply(ctx, "", table.Change{Drift: &table.Drift{Key: obj.Metadata[metaKey], ObjectID: obj.ID, EventType: d.ev.Type, At: d.ev.Created}}, false, nil)
}

func orIgnore(err error, d *delivery, outcome string) error {
	if err != nil {
		return err
	}
	return d.ignore(outcome)
}
