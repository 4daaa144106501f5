package billing

import (
	"context"
	"sort"
	"time"

	"github.com/baseten/billing-functions/pkg/table"
)

// Status is what the core app reads to decide what an organization may use.
type Status struct {
	OrgID        string              `json:"org_id"`
	CustomerID   *string             `json:"customer_id"`
	Subscription *SubscriptionStatus `json:"subscription"`
	Delinquent   bool                `json:"delinquent"`
	// Payment is set while the subscription's latest invoice waits for the
	// customer: its first payment, or a renewal whose charge failed or
	// needs authentication.
	Payment *Payment `json:"payment"`
	// Spend is this period's metered spend and the cap on it, as the usage
	// recorded so far adds up (null without a subscription).
	Spend     *SpendView `json:"spend"`
	UpdatedAt *time.Time `json:"updated_at"`
}

// Payment tells the frontend how the customer pays: confirm the
// PaymentIntent with Stripe.js, the publishable key (get_config) and
// client_secret, or send the customer to the hosted invoice page.
type Payment struct {
	Status string `json:"status"` // requires_payment_method, requires_action or processing
	// Intent says which Stripe.js call takes client_secret: "payment"
	// (an invoice's PaymentIntent) or "setup" (a trial's SetupIntent, which
	// saves a card for when the trial ends).
	Intent           string  `json:"intent"`
	ClientSecret     *string `json:"client_secret"`
	HostedInvoiceURL *string `json:"hosted_invoice_url"`
}

// SubscriptionStatus is the organization's subscription in a Status.
type SubscriptionStatus struct {
	ID                string   `json:"id"`
	Status            string   `json:"status"`
	Tier              string   `json:"tier"`
	InstanceTypes     []string `json:"instance_types"`
	CurrentPeriodEnd  int64    `json:"current_period_end"`
	CancelAtPeriodEnd bool     `json:"cancel_at_period_end"`
	// TrialEnd is when the trial ends (unix seconds), null without one;
	// PaymentMethodOnFile says whether the subscription can be charged
	// then. A trial that ends without one cancels the subscription.
	TrialEnd            *int64 `json:"trial_end"`
	PaymentMethodOnFile bool   `json:"payment_method_on_file"`
}

// status reads the organization's status from the mirror alone: one
// DynamoDB request, no Stripe call.
func (s *Service) status(ctx context.Context, org string) (Status, error) {
	m, err := s.store.GetMirror(ctx, org)
	if err != nil {
		return Status{}, fromTable("read the mirror", err)
	}
	return statusOf(org, m), nil
}

// statusAfter is the status once written, the subscription record a write
// returned, is stored: m is the mirror read before the write. Without a
// record it reads the mirror.
func (s *Service) statusAfter(ctx context.Context, org string, m table.Mirror, written *table.Subscription) (Status, error) {
	if written == nil {
		return s.status(ctx, org)
	}
	m.Subscription = written
	return statusOf(org, m), nil
}

// statusOf is an organization's status as its mirror shows it.
func statusOf(org string, m table.Mirror) Status {
	st := Status{OrgID: org}
	if c := m.Customer; c != nil && !c.Deleted {
		st.CustomerID = &c.CustomerID
	}
	if sub := m.Subscription; sub != nil {
		st.Subscription = &SubscriptionStatus{ID: sub.SubscriptionID, Status: sub.Status, Tier: sub.Tier, InstanceTypes: instanceTypesOf(sub),
			CurrentPeriodEnd: sub.CurrentPeriodEnd, CancelAtPeriodEnd: sub.CancelAtPeriodEnd, PaymentMethodOnFile: sub.Trial.PaymentMethodOnFile}
		if sub.Trial.End != 0 {
			st.Subscription.TrialEnd = &sub.Trial.End
		}
		st.Delinquent = sub.Delinquent()
		switch p := sub.Payment; {
		case p.Status != "" && live(sub) && sub.InvoiceSubscription == sub.SubscriptionID:
			st.Payment = &Payment{Status: p.Status, Intent: "payment", ClientSecret: nonEmpty(p.ClientSecret), HostedInvoiceURL: nonEmpty(p.HostedInvoiceURL)}
		case sub.Status == "trialing" && !sub.Trial.PaymentMethodOnFile && sub.Trial.SetupClientSecret != "":
			st.Payment = &Payment{Status: "requires_payment_method", Intent: "setup", ClientSecret: &sub.Trial.SetupClientSecret}
		}
		view := spendView(m.Spend, sub, m.Spend.TierCap, m.Spend.Currency)
		st.Spend = &view
		if !sub.UpdatedAt.IsZero() {
			st.UpdatedAt = &sub.UpdatedAt
		}
	}
	return st
}

// instanceTypesOf lists the instance types on a subscription, sorted.
func instanceTypesOf(sub *table.Subscription) []string {
	types := []string{}
	for _, it := range sub.Items {
		if it.Key != "" && it.Key != sub.Tier {
			types = append(types, it.Key)
		}
	}
	sort.Strings(types)
	return types
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// live reports whether a subscription still bills: anything but canceled.
func live(sub *table.Subscription) bool {
	return sub != nil && sub.Status != "canceled" && sub.Status != "incomplete_expired"
}
