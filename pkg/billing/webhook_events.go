package billing

import (
	"context"
	"strings"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

// mirrored is how one kind of Stripe object reaches the mirror. Its
// handler runs every event about such an object through one skeleton:
// decode the payload, re-fetch the object when the payload is at another API
// version, find its organization, and apply its change with the ordering
// guard, re-fetching once on a same-second tie.
type mirrored[T any] struct {
	what string // for messages: "subscription"
	// fetch reads the object again from Stripe, which answers at the pinned
	// API version; prev is the object as known so far.
	fetch func(ctx context.Context, api *stripeAPI, prev T) (T, error)
	// adjust, when set, adds what the event's type says about the object.
	adjust func(ev *wireEvent, obj *T)
	// stale, when set, says whether a payload at another API version needs
	// a re-fetch at all; nil means it always does.
	stale func(T) bool
	// skip, when set, names why an object is not mirrored ("" mirrors it).
	skip func(T) string
	// enrich, when set, reads from Stripe what the mirror needs of one of
	// this deployment's objects and its payload lacks.
	enrich func(ctx context.Context, d *delivery, obj *T) error
	owner  func(T) (metadata map[string]string, customerID string)
	change func(org string, obj T, at int64) table.Change
}

func (m mirrored[T]) handler() eventHandler {
	return func(ctx context.Context, d *delivery) error {
		var obj T
		if err := decodeObject(d, &obj); err != nil {
			return err
		}
		if m.adjust != nil {
			m.adjust(d.ev, &obj)
		}
		fetch := func(ctx context.Context, prev T) (T, error) {
			var got T
			err := d.refetch(ctx, "re-fetch "+m.what, func(api *stripeAPI) error {
				var err error
				got, err = m.fetch(ctx, api, prev)
				return err
			})
			return got, err
		}
		if d.mismatch && (m.stale == nil || m.stale(obj)) {
			got, err := fetch(ctx, obj)
			if err != nil {
				return err
			}
			obj = got
		}
		if m.skip != nil {
			if outcome := m.skip(obj); outcome != "" {
				return d.ignore(outcome)
			}
		}
		metadata, customerID := m.owner(obj)
		org, ours, err := d.owner(ctx, metadata, customerID)
		if err != nil || !ours {
			return orIgnore(err, d, "foreign")
		}
		changeOf := func(ctx context.Context, obj T) (table.Change, error) {
			if m.enrich != nil {
				if err := m.enrich(ctx, d, &obj); err != nil {
					return table.Change{}, err
				}
			}
			return m.change(org, obj, d.ev.Created), nil
		}
		ch, err := changeOf(ctx, obj)
		if err != nil {
			return err
		}
		return d.apply(ctx, org, ch, d.mismatch, func(ctx context.Context) (table.Change, error) {
			got, err := fetch(ctx, obj)
			if err != nil {
				return table.Change{}, err
			}
			return changeOf(ctx, got)
		})
	}
}

var subscriptions = mirrored[wireSubscription]{
	what: "subscription",
	fetch: func(ctx context.Context, api *stripeAPI, prev wireSubscription) (wireSubscription, error) {
		got, err := api.Subscriptions.Get(prev.ID, &stripe.SubscriptionParams{Params: stripe.Params{Context: ctx}})
		if err != nil {
			return wireSubscription{}, err
		}
		return asWireSubscription(got), nil
	},
	// A trial without a card: its SetupIntent's client secret saves one.
	enrich: func(ctx context.Context, d *delivery, sub *wireSubscription) error {
		if !sub.awaitsCard() || sub.setupSecret != "" {
			return nil
		}
		return d.refetch(ctx, "read the trial's SetupIntent", func(api *stripeAPI) error { return readSetupSecret(ctx, api, sub) })
	},
	owner:  func(s wireSubscription) (map[string]string, string) { return s.Metadata, s.Customer.ID },
	change: subscriptionChange,
}

var invoices = mirrored[wireInvoice]{
	what: "invoice",
	fetch: func(ctx context.Context, api *stripeAPI, prev wireInvoice) (wireInvoice, error) {
		got, err := api.Invoices.Get(prev.ID, &stripe.InvoiceParams{Params: stripe.Params{Context: ctx}})
		if err != nil {
			return wireInvoice{}, err
		}
		return asWireInvoice(got), nil
	},
	skip: func(inv wireInvoice) string {
		if inv.Subscription.ID == "" {
			return "not_a_subscription_invoice"
		}
		return ""
	},
	adjust: func(ev *wireEvent, inv *wireInvoice) {
		inv.chargeRefused = ev.Type == "invoice.payment_failed" || ev.Type == "invoice.payment_action_required"
	},
	// An invoice that awaits the customer: its PaymentIntent says for what,
	// and holds the client secret Stripe.js confirms it with.
	enrich: func(ctx context.Context, d *delivery, inv *wireInvoice) error {
		if !inv.awaitsCustomer() || inv.payment.Status != "" {
			return nil
		}
		return d.refetch(ctx, "read the invoice's payment", func(api *stripeAPI) error {
			pi, err := api.PaymentIntents.Get(inv.PaymentIntent.ID, &stripe.PaymentIntentParams{Params: stripe.Params{Context: ctx}})
			if err == nil {
				inv.payment = paymentOf(pi, inv.HostedInvoiceURL)
			}
			return err
		})
	},
	// Invoices carry their subscription's metadata.
	owner: func(inv wireInvoice) (map[string]string, string) {
		if inv.SubscriptionDetails == nil {
			return nil, inv.Customer.ID
		}
		return inv.SubscriptionDetails.Metadata, inv.Customer.ID
	},
	change: invoiceChange,
}

// customers mirror whether the organization's customer exists. A deleted
// customer is known from the event's type, or from Stripe's 404; it keeps
// the metadata its payload had, which a deleted customer's object lacks.
var customers = mirrored[wireCustomer]{
	what: "customer",
	fetch: func(ctx context.Context, api *stripeAPI, prev wireCustomer) (wireCustomer, error) {
		got, err := api.Customers.Get(prev.ID, &stripe.CustomerParams{Params: stripe.Params{Context: ctx}})
		switch err = fromStripe("re-fetch customer", err); {
		case ErrorCode(err) == CodeNotFound:
			return wireCustomer{ID: prev.ID, Deleted: true, Metadata: prev.Metadata}, nil
		case err != nil:
			return wireCustomer{}, err
		case got.Deleted:
			return wireCustomer{ID: prev.ID, Deleted: true, Metadata: prev.Metadata}, nil
		}
		return wireCustomer{ID: got.ID, Metadata: got.Metadata}, nil
	},
	adjust: func(ev *wireEvent, c *wireCustomer) { c.Deleted = c.Deleted || ev.Type == "customer.deleted" },
	stale:  func(c wireCustomer) bool { return !c.Deleted },
	owner:  func(c wireCustomer) (map[string]string, string) { return c.Metadata, c.ID },
	change: customerChange,
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
	err = d.refetch(ctx, "fetch the checkout's subscription", func(api *stripeAPI) error {
		var err error
		sub, err = api.Subscriptions.Get(cs.Subscription.ID, &stripe.SubscriptionParams{Params: stripe.Params{Context: ctx}})
		return err
	})
	if err != nil {
		return err
	}
	return d.apply(ctx, org, subscriptionChange(org, asWireSubscription(sub), d.ev.Created), true, nil)
}

type wireCheckoutSession struct {
	Customer     wireRef           `json:"customer"`
	Subscription wireRef           `json:"subscription"`
	Metadata     map[string]string `json:"metadata"`
}

// onCatalogObject handles product.* and price.* events of our namespace:
// those caused by this code (upsert-products, or a price migration making
// an old price active for a while; their idempotency keys start with
// "bf-") are already known; any other change is drift, flagged for
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
