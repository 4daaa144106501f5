package billing

import (
	"context"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

// Taking the money and the billing page: the Checkout page that makes a
// subscription once its first payment is made, and the invoices an
// organization has had and will have. The first writes nothing here: the
// webhook mirrors the subscription Checkout makes (checkout.session
// .completed, customer.subscription.created). The others only read Stripe.

// CheckoutSession is the answer of create_checkout_session: where to send
// the customer, and until when the page takes a payment.
type CheckoutSession struct {
	URL       string `json:"url"`
	SessionID string `json:"session_id"`
	ExpiresAt int64  `json:"expires_at"`
}

// createCheckoutSession opens a Stripe Checkout page in subscription mode
// for the organization's customer (made first if need be): the tier's
// licensed price and the instance types' metered prices, the org as
// client_reference_id, and the subscription's metadata as subscribe sets
// it, so that the webhook knows whose subscription Checkout made. It
// answers a CheckoutSession, or, for an organization whose subscription
// waits for its first payment, the Status, whose payment says how to pay.
func (s *Service) createCheckoutSession(ctx context.Context, cmd Command) (any, error) {
	m, prices, err := s.subscriptionPlan(ctx, &cmd)
	if err != nil {
		return nil, err
	}
	if live(m.Subscription) {
		if m.Subscription.Status == "incomplete" {
			return s.status(ctx, cmd.OrgID) // it waits for its first payment: the status's payment says how
		}
		return nil, Errorf(CodeConflict, "the organization is already subscribed (%s)", m.Subscription.Status)
	}
	customer, err := s.ensureCustomer(ctx, cmd, m)
	if err != nil {
		return nil, err
	}
	if m.Customer != nil && m.Customer.Checkout.SessionID != "" {
		open, err := s.closePreviousCheckout(ctx, cmd, m.Customer.Checkout)
		if err != nil || open != nil {
			return open, err
		}
	}
	var cs *stripe.CheckoutSession
	err = s.withStripe(ctx, "create checkout session", func(api *stripeAPI) error {
		p := &stripe.CheckoutSessionParams{Mode: stripe.String(string(stripe.CheckoutSessionModeSubscription)),
			Customer: stripe.String(customer), ClientReferenceID: stripe.String(cmd.OrgID),
			SuccessURL: stripe.String(cmd.SuccessURL), CancelURL: stripe.String(cmd.CancelURL),
			SubscriptionData: &stripe.CheckoutSessionSubscriptionDataParams{
				Metadata:        map[string]string{metaOrg: cmd.OrgID, metaNamespace: s.cfg.Namespace, metaRequest: cmd.RequestID},
				TrialPeriodDays: cmd.TrialDays,
			}}
		p.Metadata = map[string]string{metaOrg: cmd.OrgID, metaNamespace: s.cfg.Namespace}
		for i, price := range prices {
			line := &stripe.CheckoutSessionLineItemParams{Price: stripe.String(price)}
			if i == 0 {
				line.Quantity = stripe.Int64(1) // the tier; a metered price takes no quantity
			}
			p.LineItems = append(p.LineItems, line)
		}
		p.Context = ctx
		p.SetIdempotencyKey(s.stripeKey(cmd, "create checkout session", p))
		var err error
		cs, err = api.CheckoutSessions.New(p)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := s.store.SetCheckout(ctx, cmd.OrgID, table.CheckoutRef{SessionID: cs.ID, RequestID: cmd.RequestID}); err != nil {
		return nil, fromTable("record the checkout session", err)
	}
	return CheckoutSession{URL: cs.URL, SessionID: cs.ID, ExpiresAt: cs.ExpiresAt}, nil
}

// closePreviousCheckout keeps at most one Checkout session of an
// organization open, so that its customer cannot pay for two
// subscriptions: the previous session is expired when it is still open.
// One that was paid means the subscription is on its way to the mirror
// (conflict). The same request's own session, made by an attempt whose
// answer was lost, is answered again while open.
func (s *Service) closePreviousCheckout(ctx context.Context, cmd Command, prev table.CheckoutRef) (any, error) {
	var cs *stripe.CheckoutSession
	err := s.withStripe(ctx, "read the previous checkout session", func(api *stripeAPI) error {
		var err error
		cs, err = api.CheckoutSessions.Get(prev.SessionID, &stripe.CheckoutSessionParams{Params: stripe.Params{Context: ctx}})
		return err
	})
	switch {
	case ErrorCode(err) == CodeNotFound:
		return nil, nil
	case err != nil:
		return nil, err
	case cs.Status == stripe.CheckoutSessionStatusComplete:
		return nil, Errorf(CodeConflict, "the organization paid on a Checkout page: its subscription is on its way")
	case cs.Status != stripe.CheckoutSessionStatusOpen:
		return nil, nil // expired
	case prev.RequestID == cmd.RequestID:
		return CheckoutSession{URL: cs.URL, SessionID: cs.ID, ExpiresAt: cs.ExpiresAt}, nil
	}
	return nil, s.withStripe(ctx, "expire the previous checkout session", func(api *stripeAPI) error {
		p := &stripe.CheckoutSessionExpireParams{}
		p.Context = ctx
		p.SetIdempotencyKey(keyHash(s.cfg.Namespace, "expire checkout", prev.SessionID))
		_, err := api.CheckoutSessions.Expire(prev.SessionID, p)
		return err
	})
}

// subscriptionPlan reads, under the organization's claim (Run took it with
// the request_id), its mirror, the mappings of the subscription's tier and
// instance types, and the request's record in one request. It sets cmd's
// attempt and retry from the record, and returns the mirror and the
// prices, the tier's first.
func (s *Service) subscriptionPlan(ctx context.Context, cmd *Command) (table.Mirror, []string, error) {
	if n := 1 + len(cmd.InstanceTypes); n > MaxSubscriptionItems {
		return table.Mirror{}, nil, Errorf(CodeInvalidRequest, "instance_types: at most %d besides the tier (a subscription has at most %d items)", MaxSubscriptionItems-1, MaxSubscriptionItems)
	}
	m, products, req, err := s.store.ReadClaimed(ctx, cmd.OrgID, cmd.RequestID, append([]string{cmd.Tier}, cmd.InstanceTypes...))
	if err != nil {
		return m, nil, fromTable("read the mirror", err)
	}
	cmd.attempt, cmd.retry = req.Attempt, req.Retry
	tier, ok := products[cmd.Tier]
	if err := checkProduct("tier", cmd.Tier, KindTier, tier, ok); err != nil {
		return m, nil, err
	}
	if err := checkIncluded(m.Terms, cmd.Tier, cmd.InstanceTypes); err != nil {
		return m, nil, err
	}
	prices := []string{tier.PriceID}
	for _, k := range cmd.InstanceTypes {
		p, ok := products[k]
		if err := checkProduct("instance_types", k, KindInstanceType, p, ok); err != nil {
			return m, nil, err
		}
		prices = append(prices, p.PriceID)
	}
	return m, prices, nil
}

// Invoice is one invoice on the billing page. Its period is Stripe's: the
// usage period the invoice's items were added in (for a renewal, the
// period that just ended; the tier's line pays for the next one).
type Invoice struct {
	ID               string  `json:"id"`
	Number           *string `json:"number"`
	Status           string  `json:"status"`
	Total            int64   `json:"total"`
	Currency         string  `json:"currency"`
	Created          int64   `json:"created"`
	PeriodStart      int64   `json:"period_start"`
	PeriodEnd        int64   `json:"period_end"`
	HostedInvoiceURL *string `json:"hosted_invoice_url"`
	InvoicePDF       *string `json:"invoice_pdf"`
}

// InvoiceList is a page of an organization's invoices, newest first.
type InvoiceList struct {
	Invoices []Invoice `json:"invoices"`
	HasMore  bool      `json:"has_more"`
}

// DefaultInvoicePage is how many invoices list_invoices answers without a
// limit.
const DefaultInvoicePage = 10

// listInvoices reads a page of the organization's invoices from Stripe:
// one request. A renewal's invoice is a draft for about an hour before
// Stripe finalizes it; it is listed (without number or URLs until then).
func (s *Service) listInvoices(ctx context.Context, cmd Command) (InvoiceList, error) {
	customer, err := s.customerOf(ctx, cmd.OrgID)
	if err != nil {
		return InvoiceList{}, err
	}
	limit := int64(DefaultInvoicePage)
	if cmd.Limit != nil {
		limit = *cmd.Limit
	}
	out := InvoiceList{Invoices: []Invoice{}}
	err = s.withStripe(ctx, "list invoices", func(api *stripeAPI) error {
		out = InvoiceList{Invoices: []Invoice{}}
		p := &stripe.InvoiceListParams{Customer: stripe.String(customer)}
		p.Limit, p.Context, p.Single = stripe.Int64(limit), ctx, true
		if cmd.StartingAfter != "" {
			p.StartingAfter = stripe.String(cmd.StartingAfter)
		}
		it := api.Invoices.List(p)
		for it.Next() {
			out.Invoices = append(out.Invoices, invoiceOf(it.Invoice()))
		}
		out.HasMore = it.Meta() != nil && it.Meta().HasMore
		return it.Err()
	})
	return out, err
}

func invoiceOf(inv *stripe.Invoice) Invoice {
	out := Invoice{ID: inv.ID, Status: string(inv.Status), Total: inv.Total, Currency: string(inv.Currency), Created: inv.Created,
		PeriodStart: inv.PeriodStart, PeriodEnd: inv.PeriodEnd}
	if inv.Number != "" {
		out.Number = &inv.Number
	}
	if inv.HostedInvoiceURL != "" {
		out.HostedInvoiceURL = &inv.HostedInvoiceURL
	}
	if inv.InvoicePDF != "" {
		out.InvoicePDF = &inv.InvoicePDF
	}
	return out
}

// Preview is the upcoming invoice: what the next invoice would be if the
// period ended now.
type Preview struct {
	Currency    string        `json:"currency"`
	Total       int64         `json:"total"`
	PeriodStart int64         `json:"period_start"`
	PeriodEnd   int64         `json:"period_end"`
	Lines       []PreviewLine `json:"lines"`
}

// PreviewLine is one line of the upcoming invoice: the tier for the next
// period, or an instance type's minutes so far in this one.
type PreviewLine struct {
	Key         string `json:"key"`  // the catalog key, "" for a price outside the catalog
	Kind        string `json:"kind"` // tier or instance_type
	Minutes     *int64 `json:"minutes"`
	Amount      int64  `json:"amount"`
	PeriodStart int64  `json:"period_start"`
	PeriodEnd   int64  `json:"period_end"`
}

// previewInvoice reads the organization's upcoming invoice from Stripe:
// one request, answered from the subscription's items as the mirror knows
// them.
func (s *Service) previewInvoice(ctx context.Context, cmd Command) (Preview, error) {
	sub, err := s.liveSubscription(ctx, Command{OrgID: cmd.OrgID})
	if err != nil {
		return Preview{}, err
	}
	var inv *stripe.Invoice
	err = s.withStripe(ctx, "preview the upcoming invoice", func(api *stripeAPI) error {
		p := &stripe.InvoiceUpcomingParams{Customer: stripe.String(sub.CustomerID), Subscription: stripe.String(sub.SubscriptionID)}
		p.Context = ctx
		var err error
		inv, err = api.Invoices.Upcoming(p)
		return err
	})
	if err != nil {
		return Preview{}, err
	}
	keys := map[string]string{} // price → catalog key
	for _, it := range sub.Items {
		keys[it.PriceID] = it.Key
	}
	out := Preview{Currency: string(inv.Currency), Total: inv.Total, PeriodStart: inv.PeriodStart, PeriodEnd: inv.PeriodEnd, Lines: []PreviewLine{}}
	if inv.Lines != nil {
		for _, l := range inv.Lines.Data {
			line := PreviewLine{Amount: l.Amount, Kind: string(KindInstanceType)}
			if l.Price != nil {
				line.Key = keys[l.Price.ID]
				if l.Price.Recurring != nil && l.Price.Recurring.UsageType == stripe.PriceRecurringUsageTypeLicensed {
					line.Kind = string(KindTier)
				}
			}
			if line.Kind == string(KindInstanceType) {
				minutes := l.Quantity
				line.Minutes = &minutes
			}
			if l.Period != nil {
				line.PeriodStart, line.PeriodEnd = l.Period.Start, l.Period.End
			}
			out.Lines = append(out.Lines, line)
		}
	}
	return out, nil
}

// customerOf returns the organization's Stripe customer from the mirror,
// or not_found.
func (s *Service) customerOf(ctx context.Context, org string) (string, error) {
	m, err := s.store.GetMirror(ctx, org)
	if err != nil {
		return "", fromTable("read the mirror", err)
	}
	if m.Customer == nil || m.Customer.Deleted {
		return "", Errorf(CodeNotFound, "the organization has no Stripe customer; call ensure_customer or subscribe first")
	}
	return m.Customer.CustomerID, nil
}
