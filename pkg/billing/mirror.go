package billing

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

// The Stripe-to-mirror mapping, in one place: the small shapes Stripe's
// objects decode into, and the mirror change each one makes. The webhook
// decodes payloads into these shapes; subscribe, reconcile and re-fetches
// convert stripe-go's answers into them (as*), so that every path maps an
// object the same way. stripe-go's full types would cost the webhook
// several times the CPU: their unmarshalers re-scan nested objects.

// wireRef is an expandable field: an ID, or an object with one.
type wireRef struct{ ID string }

func (r *wireRef) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &r.ID)
	}
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	var o struct {
		ID string `json:"id"`
	}
	err := json.Unmarshal(b, &o)
	r.ID = o.ID
	return err
}

type wireSubscription struct {
	ID                 string            `json:"id"`
	Customer           wireRef           `json:"customer"`
	Status             string            `json:"status"`
	Created            int64             `json:"created"`
	CurrentPeriodStart int64             `json:"current_period_start"`
	CurrentPeriodEnd   int64             `json:"current_period_end"`
	CancelAtPeriodEnd  bool              `json:"cancel_at_period_end"`
	Schedule           wireRef           `json:"schedule"`
	Metadata           map[string]string `json:"metadata"`
	Items              struct {
		Data []wireItem `json:"data"`
	} `json:"items"`
	TrialEnd             int64   `json:"trial_end"`
	DefaultPaymentMethod wireRef `json:"default_payment_method"`
	PendingSetupIntent   wireRef `json:"pending_setup_intent"`

	// setupSecret is the pending SetupIntent's client secret: not in a
	// payload, read from Stripe while a trial waits for a card.
	setupSecret string
}

// readSetupSecret reads the client secret of the trial's pending
// SetupIntent into sub.
func readSetupSecret(ctx context.Context, api *stripeAPI, sub *wireSubscription) error {
	si, err := api.SetupIntents.Get(sub.PendingSetupIntent.ID, &stripe.SetupIntentParams{Params: stripe.Params{Context: ctx}})
	if err == nil {
		sub.setupSecret = si.ClientSecret
	}
	return err
}

// awaitsCard reports whether the subscription is in a trial without a
// payment method and has a SetupIntent to save one.
func (s wireSubscription) awaitsCard() bool {
	return s.Status == string(stripe.SubscriptionStatusTrialing) && s.DefaultPaymentMethod.ID == "" && s.PendingSetupIntent.ID != ""
}

type wireItem struct {
	ID    string `json:"id"`
	Price *struct {
		ID       string            `json:"id"`
		Metadata map[string]string `json:"metadata"`
	} `json:"price"`
}

// asWireSubscription converts an answer of Stripe's API to the shape a
// payload decodes into.
func asWireSubscription(s *stripe.Subscription) wireSubscription {
	w := wireSubscription{ID: s.ID, Status: string(s.Status), Created: s.Created, CurrentPeriodStart: s.CurrentPeriodStart,
		CurrentPeriodEnd: s.CurrentPeriodEnd, CancelAtPeriodEnd: s.CancelAtPeriodEnd, Metadata: s.Metadata}
	if s.Customer != nil {
		w.Customer.ID = s.Customer.ID
	}
	w.TrialEnd = s.TrialEnd
	if s.Schedule != nil {
		w.Schedule.ID = s.Schedule.ID
	}
	if s.DefaultPaymentMethod != nil {
		w.DefaultPaymentMethod.ID = s.DefaultPaymentMethod.ID
	}
	if si := s.PendingSetupIntent; si != nil {
		w.PendingSetupIntent.ID, w.setupSecret = si.ID, si.ClientSecret // the secret when expanded
	}
	if s.Items != nil {
		for _, it := range s.Items.Data {
			wi := wireItem{ID: it.ID}
			if it.Price != nil {
				wi.Price = &struct {
					ID       string            `json:"id"`
					Metadata map[string]string `json:"metadata"`
				}{ID: it.Price.ID, Metadata: it.Price.Metadata}
			}
			w.Items.Data = append(w.Items.Data, wi)
		}
	}
	return w
}

type wireInvoice struct {
	ID                  string  `json:"id"`
	Created             int64   `json:"created"`
	Customer            wireRef `json:"customer"`
	Subscription        wireRef `json:"subscription"`
	Status              string  `json:"status"`
	AttemptCount        int64   `json:"attempt_count"`
	Paid                bool    `json:"paid"`
	SubscriptionDetails *struct {
		Metadata map[string]string `json:"metadata"`
	} `json:"subscription_details"`
	PaymentIntent    wireRef `json:"payment_intent"`
	HostedInvoiceURL string  `json:"hosted_invoice_url"`
	BillingReason    string  `json:"billing_reason"`

	// payment is what the invoice's PaymentIntent waits for: not in a
	// payload (it holds the PaymentIntent's ID), read from Stripe when the
	// invoice awaits the customer.
	payment table.Payment
	// chargeRefused: the event says an automatic charge failed or needs
	// authentication, whatever the payload's attempt_count.
	chargeRefused bool
}

// awaitsCustomer reports whether the invoice's payment waits for the
// customer: it is open and unpaid, and either a subscription's first
// invoice (default_incomplete does not charge it) or one whose automatic
// charge failed or needs authentication. A renewal before its first
// attempt waits for Stripe, not the customer.
func (inv wireInvoice) awaitsCustomer() bool {
	return inv.Status == string(stripe.InvoiceStatusOpen) && !inv.Paid && inv.PaymentIntent.ID != "" &&
		(inv.BillingReason == string(stripe.InvoiceBillingReasonSubscriptionCreate) || inv.AttemptCount > 0 || inv.chargeRefused)
}

// paymentOf is what a PaymentIntent waits for from the customer, or
// nothing.
func paymentOf(pi *stripe.PaymentIntent, hostedInvoiceURL string) table.Payment {
	status := ""
	switch pi.Status {
	case stripe.PaymentIntentStatusRequiresPaymentMethod, stripe.PaymentIntentStatusRequiresConfirmation:
		status = string(stripe.PaymentIntentStatusRequiresPaymentMethod)
	case stripe.PaymentIntentStatusRequiresAction, stripe.PaymentIntentStatusProcessing:
		status = string(pi.Status)
	default:
		return table.Payment{}
	}
	return table.Payment{Status: status, ClientSecret: pi.ClientSecret, HostedInvoiceURL: hostedInvoiceURL}
}

// asWireInvoice converts an answer of Stripe's API to the shape a payload
// decodes into.
func asWireInvoice(inv *stripe.Invoice) wireInvoice {
	w := wireInvoice{ID: inv.ID, Created: inv.Created, Status: string(inv.Status), AttemptCount: inv.AttemptCount, Paid: inv.Paid,
		HostedInvoiceURL: inv.HostedInvoiceURL, BillingReason: string(inv.BillingReason)}
	if inv.Customer != nil {
		w.Customer.ID = inv.Customer.ID
	}
	if pi := inv.PaymentIntent; pi != nil {
		w.PaymentIntent.ID = pi.ID
		if pi.Status != "" && w.awaitsCustomer() { // expanded
			w.payment = paymentOf(pi, inv.HostedInvoiceURL)
		}
	}
	if inv.Subscription != nil {
		w.Subscription.ID = inv.Subscription.ID
	}
	if inv.SubscriptionDetails != nil {
		w.SubscriptionDetails = &struct {
			Metadata map[string]string `json:"metadata"`
		}{Metadata: inv.SubscriptionDetails.Metadata}
	}
	return w
}

type wireCustomer struct {
	ID       string            `json:"id"`
	Deleted  bool              `json:"deleted"`
	Metadata map[string]string `json:"metadata"`
}

// subscriptionChange maps a Stripe subscription to the mirror. Items are
// named by their price's billing_key; the tier is the item of kind tier.
func subscriptionChange(org string, sub wireSubscription, at int64) table.Change {
	snap := &table.SubscriptionSnapshot{
		OrgID: org, CustomerID: sub.Customer.ID, SubscriptionID: sub.ID, Status: sub.Status, Created: sub.Created,
		CurrentPeriodStart: sub.CurrentPeriodStart, CurrentPeriodEnd: sub.CurrentPeriodEnd, CancelAtPeriodEnd: sub.CancelAtPeriodEnd,
		ScheduleID: sub.Schedule.ID, RequestID: sub.Metadata[metaRequest], SourceTime: at, Items: []table.Item{},
		Trial: table.Trial{End: sub.TrialEnd, PaymentMethodOnFile: sub.DefaultPaymentMethod.ID != ""},
	}
	if sub.awaitsCard() {
		snap.Trial.SetupClientSecret = sub.setupSecret
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

// invoiceChange reads an invoice's state from the invoice itself: a
// payment failed when it was attempted and is still open, or was marked
// uncollectible.
func invoiceChange(org string, inv wireInvoice, at int64) table.Change {
	failed := (inv.Status == string(stripe.InvoiceStatusOpen) && inv.AttemptCount > 0 && !inv.Paid) || inv.Status == string(stripe.InvoiceStatusUncollectible)
	return table.Change{Invoice: &table.InvoiceSnapshot{OrgID: org, SubscriptionID: inv.Subscription.ID, InvoiceID: inv.ID,
		Status: inv.Status, PaymentFailed: failed, Payment: inv.payment, Created: inv.Created, SourceTime: at}}
}

// customerChange records whether the organization's customer still exists.
func customerChange(org string, c wireCustomer, at int64) table.Change {
	return table.Change{Customer: &table.CustomerSnapshot{OrgID: org, CustomerID: c.ID, Deleted: c.Deleted, SourceTime: at}}
}
