package billing

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/form"

	"github.com/baseten/billing-functions/pkg/table"
)

// checkProduct refuses a catalog key without an active mapping of kind
// (invalid_request: not in the catalog, or run upsert-products); found
// says whether the table had a mapping at all.
func checkProduct(field, key string, kind Kind, m table.ProductMapping, found bool) error {
	switch {
	case !found || !m.Active:
		return Errorf(CodeInvalidRequest, "%s: %q has no product mapping: not in the catalog, or upsert-products has not run", field, key)
	case m.Kind != string(kind):
		return Errorf(CodeInvalidRequest, "%s: %q is not a %s", field, key, kind)
	}
	return nil
}

// stripeKey derives the Stripe idempotency key of one step of a request:
// from the request (its ID, its fields and its attempt) and the exact
// parameters the step sends. A retry that sends the same parameters
// replays Stripe's first answer; parameters planned again from a changed
// state get a key of their own, so Stripe never meets a key with other
// parameters; and an attempt after a 5xx, which Stripe stores under the
// key for 24 hours, has keys of its own.
func (s *Service) stripeKey(cmd Command, step string, params stripe.ParamsContainer) string {
	return keyHash(s.cfg.Namespace, cmd.RequestID, cmd.fingerprint(), strconv.FormatInt(cmd.attempt, 10), step, formOf(params))
}

func formOf(params stripe.ParamsContainer) string {
	values := &form.Values{}
	form.AppendTo(values, params)
	return values.Encode()
}

// Metadata of the objects subscribe makes, besides metaNamespace.
const (
	metaOrg     = "org_id"
	metaRequest = "billing_request_id" // on a subscription: the request that made it
)

// ensureCustomerAction is the ensure_customer action.
func (s *Service) ensureCustomerAction(ctx context.Context, cmd Command) (any, error) {
	m, err := s.store.GetMirror(ctx, cmd.OrgID)
	if err != nil {
		return nil, fromTable("read the mirror", err)
	}
	id, err := s.ensureCustomer(ctx, cmd, m)
	return map[string]string{"customer_id": id}, err
}

// ensureCustomer returns the organization's customer, creating it once; m
// is the organization's mirror as the caller read it. Concurrent calls
// create one mapping: the loser of the conditional write deletes the
// Stripe customer it made, if it differs from the winner's. A retry looks
// for a customer an earlier attempt made before it makes one.
func (s *Service) ensureCustomer(ctx context.Context, cmd Command, m table.Mirror) (string, error) {
	if m.Customer != nil {
		if m.Customer.Deleted {
			return "", Errorf(CodeConflict, "the organization's Stripe customer was deleted; it needs a person to restore billing")
		}
		return m.Customer.CustomerID, nil
	}
	var made string
	if cmd.retry {
		var err error
		if made, err = s.findCustomer(ctx, cmd); err != nil {
			return "", err
		}
	}
	if made == "" {
		err := s.withStripe(ctx, "create customer", func(api *stripeAPI) error {
			p := &stripe.CustomerParams{Email: stripe.String(cmd.Email)}
			if cmd.Name != "" {
				p.Name = stripe.String(cmd.Name)
			}
			p.Metadata = map[string]string{metaOrg: cmd.OrgID, metaNamespace: s.cfg.Namespace}
			p.Context = ctx
			// Keyed by the org and what is sent, not the request: concurrent
			// requests for one org make one customer.
			p.SetIdempotencyKey(keyHash(s.cfg.Namespace, "customer", cmd.OrgID, cmd.Email, cmd.Name, strconv.FormatInt(cmd.attempt, 10)))
			c, err := api.Customers.New(p)
			if err == nil {
				made = c.ID
			}
			return err
		})
		if err != nil {
			return "", err
		}
	}
	err := s.store.CreateCustomer(ctx, table.Customer{OrgID: cmd.OrgID, CustomerID: made, CreatedAt: time.Now().UTC()})
	if errors.Is(err, table.ErrConditionFailed) {
		winner, gerr := s.store.GetCustomer(ctx, cmd.OrgID)
		if gerr != nil {
			return "", fromTable("read the customer mapping", gerr)
		}
		if winner.CustomerID != made {
			_ = s.withStripe(ctx, "delete the duplicate customer", func(api *stripeAPI) error {
				_, err := api.Customers.Del(made, &stripe.CustomerParams{Params: stripe.Params{Context: ctx}})
				return err
			})
		}
		return winner.CustomerID, nil
	}
	if err != nil {
		return "", fromTable("write the customer mapping", err)
	}
	return made, nil
}

// findCustomer returns the organization's live customer in Stripe, the
// oldest if there are several, or "": by email, the one index Stripe's
// customer list has, then by our metadata.
func (s *Service) findCustomer(ctx context.Context, cmd Command) (string, error) {
	found := ""
	err := s.withStripe(ctx, "look for the organization's customer", func(api *stripeAPI) error {
		found = ""
		p := &stripe.CustomerListParams{Email: stripe.String(cmd.Email)}
		p.Limit, p.Context = stripe.Int64(100), ctx
		it := api.Customers.List(p)
		for it.Next() {
			if c := it.Customer(); !c.Deleted && c.Metadata[metaOrg] == cmd.OrgID && c.Metadata[metaNamespace] == s.cfg.Namespace {
				found = c.ID // the list is newest first: the last match is the oldest
			}
		}
		return it.Err()
	})
	return found, err
}

func (s *Service) subscribe(ctx context.Context, cmd Command) (Status, error) {
	m, prices, err := s.subscriptionPlan(ctx, &cmd)
	if err != nil {
		return Status{}, err
	}
	var items []*stripe.SubscriptionItemsParams
	for _, price := range prices {
		items = append(items, &stripe.SubscriptionItemsParams{Price: stripe.String(price)})
	}
	if live(m.Subscription) {
		if m.Subscription.RequestID == cmd.RequestID || m.Subscription.Status == "incomplete" {
			// This request made it (an earlier attempt's answer was lost),
			// or it waits for its first payment: the status says how to pay.
			return statusOf(cmd.OrgID, m), nil
		}
		return Status{}, Errorf(CodeConflict, "the organization is already subscribed (%s)", m.Subscription.Status)
	}
	customer, err := s.ensureCustomer(ctx, cmd, m)
	if err != nil {
		return Status{}, err
	}
	if cmd.retry {
		// An earlier attempt may have made the subscription, its answer
		// lost before the mirror heard of it.
		sub, err := s.findSubscription(ctx, customer, cmd.RequestID)
		if err != nil {
			return Status{}, err
		}
		if sub != nil {
			written, err := s.applyAnswer(ctx, cmd.OrgID, sub)
			if err != nil {
				return Status{}, err
			}
			return s.statusAfter(ctx, cmd.OrgID, withCustomer(m, cmd.OrgID, customer), written)
		}
	}
	written, err := s.changeSubscription(ctx, cmd.OrgID, "", func(api *stripeAPI) (*stripe.Subscription, error) {
		p := &stripe.SubscriptionParams{Customer: stripe.String(customer), Items: items,
			// The first invoice waits for a payment method the customer
			// gives (Elements, Checkout), and keeps it for the renewals.
			PaymentBehavior: stripe.String("default_incomplete"),
			PaymentSettings: &stripe.SubscriptionPaymentSettingsParams{SaveDefaultPaymentMethod: stripe.String("on_subscription")}}
		p.Metadata = map[string]string{metaOrg: cmd.OrgID, metaNamespace: s.cfg.Namespace, metaRequest: cmd.RequestID}
		if cmd.TrialDays != nil {
			// A trial needs no card; one that ends without a card cancels
			// the subscription (the org may subscribe again) rather than
			// leave it paused or past due.
			p.TrialPeriodDays = cmd.TrialDays
			p.TrialSettings = &stripe.SubscriptionTrialSettingsParams{EndBehavior: &stripe.SubscriptionTrialSettingsEndBehaviorParams{
				MissingPaymentMethod: stripe.String(string(stripe.SubscriptionTrialSettingsEndBehaviorMissingPaymentMethodCancel))}}
		}
		// The client secrets of the first payment, or of the trial's
		// SetupIntent, for the status.
		p.AddExpand("latest_invoice.payment_intent")
		p.AddExpand("pending_setup_intent")
		p.Context = ctx
		p.SetIdempotencyKey(s.stripeKey(cmd, "create subscription", p))
		return api.Subscriptions.New(p)
	})
	if err != nil {
		return Status{}, err
	}
	return s.statusAfter(ctx, cmd.OrgID, withCustomer(m, cmd.OrgID, customer), written)
}

// withCustomer is m with the organization's customer mapping, which
// ensureCustomer may just have made.
func withCustomer(m table.Mirror, org, customer string) table.Mirror {
	if m.Customer == nil {
		m.Customer = &table.Customer{OrgID: org, CustomerID: customer}
	}
	return m
}

// MaxSubscriptionItems is how many items a Stripe subscription may have.
const MaxSubscriptionItems = 20

// findSubscription returns the customer's subscription made by requestID,
// from Stripe, or nil.
func (s *Service) findSubscription(ctx context.Context, customer, requestID string) (*stripe.Subscription, error) {
	var found *stripe.Subscription
	err := s.withStripe(ctx, "look for the request's subscription", func(api *stripeAPI) error {
		found = nil
		p := &stripe.SubscriptionListParams{Customer: stripe.String(customer), Status: stripe.String("all")}
		p.Limit, p.Context = stripe.Int64(100), ctx
		it := api.Subscriptions.List(p)
		for it.Next() {
			if sub := it.Subscription(); sub.Metadata[metaRequest] == requestID {
				found = sub
			}
		}
		return it.Err()
	})
	return found, err
}

// readMirror reads the org's mirror and the product mappings of
// productKeys in one request. A retry first reads the subscription from
// Stripe into the mirror: an earlier attempt may have changed it and not
// lived to write the mirror.
func (s *Service) readMirror(ctx context.Context, cmd Command, productKeys ...string) (table.Mirror, map[string]table.ProductMapping, error) {
	m, products, err := s.store.ReadMirror(ctx, cmd.OrgID, productKeys)
	if err != nil {
		return m, nil, fromTable("read the mirror", err)
	}
	if cmd.retry && m.Subscription != nil {
		var sub *stripe.Subscription
		err := s.withStripe(ctx, "re-read the subscription", func(api *stripeAPI) error {
			var err error
			sub, err = api.Subscriptions.Get(m.Subscription.SubscriptionID, &stripe.SubscriptionParams{Params: stripe.Params{Context: ctx}})
			return err
		})
		if err != nil {
			return m, nil, err
		}
		written, err := s.applyAnswer(ctx, cmd.OrgID, sub)
		if err != nil {
			return m, nil, err
		}
		if written == nil {
			if m, err = s.store.GetMirror(ctx, cmd.OrgID); err != nil {
				return m, nil, fromTable("read the mirror", err)
			}
		} else {
			m.Subscription = written
		}
	}
	return m, products, nil
}

// liveSubscription returns the org's billing subscription from the mirror
// (readMirror), or not_found.
func (s *Service) liveSubscription(ctx context.Context, cmd Command) (*table.Subscription, error) {
	m, _, err := s.readMirror(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return liveIn(m)
}

// liveIn returns m's subscription, or not_found when none bills.
func liveIn(m table.Mirror) (*table.Subscription, error) {
	if !live(m.Subscription) {
		return nil, Errorf(CodeNotFound, "the organization has no active subscription")
	}
	return m.Subscription, nil
}

// changeableIn returns m's subscription for a change of its items: a
// subscription whose first payment is pending cannot change (Stripe takes
// only metadata until it is paid).
func changeableIn(m table.Mirror) (*table.Subscription, error) {
	sub, err := liveIn(m)
	if err == nil && sub.Status == "incomplete" {
		return nil, Errorf(CodePaymentRequired, "the first payment of the subscription is pending: pay its first invoice, then change it")
	}
	return sub, err
}

// changeSubscription calls Stripe and writes the subscription it returns
// to the mirror at once (applyAnswer). A price migration's schedule on the
// subscription (scheduleID) is released first: its next phase would undo
// the change at the period's end, and Stripe refuses a cancellation on a
// scheduled subscription (FIDELITY.md, rule 19). The next migration
// schedules its moves again.
func (s *Service) changeSubscription(ctx context.Context, org, scheduleID string, call func(api *stripeAPI) (*stripe.Subscription, error)) (*table.Subscription, error) {
	if scheduleID != "" {
		if err := s.releaseSchedule(ctx, scheduleID); err != nil {
			return nil, err
		}
	}
	var sub *stripe.Subscription
	err := s.withStripe(ctx, "update subscription", func(api *stripeAPI) error {
		var err error
		if sub, err = call(api); err != nil || !replayed(sub.LastResponse) {
			return err
		}
		// A replayed body is as old as the request that first ran, while
		// its Date is today's: read the subscription as it is now.
		sub, err = api.Subscriptions.Get(sub.ID, &stripe.SubscriptionParams{Params: stripe.Params{Context: ctx}})
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.applyAnswer(ctx, org, sub)
}

// applyAnswer writes a subscription Stripe answered with to the mirror,
// with the webhook's ordering guard. Its source time is Stripe's own clock
// (the Date of the answer), so the webhook for the same change is a
// duplicate, older, or a tie that re-fetches. It returns the subscription
// record as stored after the write (a newer webhook's, if one landed
// first), or nil when the table did not say.
func (s *Service) applyAnswer(ctx context.Context, org string, sub *stripe.Subscription) (*table.Subscription, error) {
	at := stripeDate(sub.LastResponse)
	w := asWireSubscription(sub)
	if w.awaitsCard() && w.setupSecret == "" { // not expanded
		err := s.withStripe(ctx, "read the trial's SetupIntent", func(api *stripeAPI) error { return readSetupSecret(ctx, api, &w) })
		if err != nil {
			return nil, err
		}
	}
	var inv *table.InvoiceSnapshot
	if latest := sub.LatestInvoice; latest != nil && latest.Status != "" { // expanded: its payment is known now
		inv = invoiceChange(org, asWireInvoice(latest), at).Invoice
	}
	written, err := s.store.ApplySubscriptionAnswer(ctx, subscriptionChange(org, w, at).Subscription, inv, time.Now())
	if err != nil && !errors.Is(err, table.ErrStale) { // stale: a newer webhook already landed
		return nil, fromTable("write the mirror", err)
	}
	return written, nil
}

func (s *Service) changeTier(ctx context.Context, cmd Command) (Status, error) {
	m, products, err := s.readMirror(ctx, cmd, cmd.Tier)
	if err != nil {
		return Status{}, err
	}
	tier, ok := products[cmd.Tier]
	if err := checkProduct("tier", cmd.Tier, KindTier, tier, ok); err != nil {
		return Status{}, err
	}
	sub, err := changeableIn(m)
	if err != nil {
		return Status{}, err
	}
	if err := checkIncluded(m.Terms, cmd.Tier, instanceTypesOf(sub)); err != nil {
		return Status{}, Errorf(CodeInvalidRequest, "tier: %s; remove it with set_instance_types first", AsError(err).Message)
	}
	i := slices.IndexFunc(sub.Items, func(it table.Item) bool { return it.Key == sub.Tier && it.Key != "" })
	if i < 0 {
		return Status{}, Errorf(CodeInternal, "the subscription has no tier item")
	}
	if sub.Items[i].PriceID == tier.PriceID {
		return statusOf(cmd.OrgID, m), nil // already there
	}
	proration := cmd.Proration
	if proration == "" {
		proration = "create_prorations"
	}
	written, err := s.changeSubscription(ctx, cmd.OrgID, sub.ScheduleID, func(api *stripeAPI) (*stripe.Subscription, error) {
		p := &stripe.SubscriptionParams{ProrationBehavior: stripe.String(proration),
			Items: []*stripe.SubscriptionItemsParams{{ID: stripe.String(sub.Items[i].ItemID), Price: stripe.String(tier.PriceID)}}}
		p.Context = ctx
		p.SetIdempotencyKey(s.stripeKey(cmd, "change tier", p))
		return api.Subscriptions.Update(sub.SubscriptionID, p)
	})
	if err != nil {
		return Status{}, err
	}
	return s.statusAfter(ctx, cmd.OrgID, m, written)
}

// setInstanceTypes makes the subscription's metered items exactly the
// given set: it adds and removes the difference, and moves kept items to
// their key's current price.
func (s *Service) setInstanceTypes(ctx context.Context, cmd Command) (Status, error) {
	if n := 1 + len(cmd.InstanceTypes); n > MaxSubscriptionItems {
		return Status{}, Errorf(CodeInvalidRequest, "instance_types: at most %d besides the tier (a subscription has at most %d items)", MaxSubscriptionItems-1, MaxSubscriptionItems)
	}
	mirror, products, err := s.readMirror(ctx, cmd, cmd.InstanceTypes...)
	if err != nil {
		return Status{}, err
	}
	want := map[string]table.ProductMapping{}
	for _, k := range cmd.InstanceTypes {
		m, ok := products[k]
		if err := checkProduct("instance_types", k, KindInstanceType, m, ok); err != nil {
			return Status{}, err
		}
		want[k] = m
	}
	sub, err := changeableIn(mirror)
	if err != nil {
		return Status{}, err
	}
	if err := checkIncluded(mirror.Terms, sub.Tier, cmd.InstanceTypes); err != nil {
		return Status{}, err
	}
	var changes []*stripe.SubscriptionItemsParams
	have := map[string]bool{}
	for _, it := range sub.Items {
		if it.Key == "" || it.Key == sub.Tier {
			continue
		}
		have[it.Key] = true
		// A kept type stays on its price, even one upsert-products has
		// since replaced: switching a meter price mid-period would leave
		// the period's usage so far unbilled (FIDELITY.md, rule 18).
		if _, keep := want[it.Key]; !keep {
			changes = append(changes, &stripe.SubscriptionItemsParams{ID: stripe.String(it.ItemID), Deleted: stripe.Bool(true)})
		}
	}
	for _, k := range cmd.InstanceTypes {
		if !have[k] {
			changes = append(changes, &stripe.SubscriptionItemsParams{Price: stripe.String(want[k].PriceID)})
		}
	}
	if len(changes) == 0 {
		return statusOf(cmd.OrgID, mirror), nil
	}
	written, err := s.changeSubscription(ctx, cmd.OrgID, sub.ScheduleID, func(api *stripeAPI) (*stripe.Subscription, error) {
		p := &stripe.SubscriptionParams{Items: changes}
		p.Context = ctx
		p.SetIdempotencyKey(s.stripeKey(cmd, "set instance types", p))
		return api.Subscriptions.Update(sub.SubscriptionID, p)
	})
	if err != nil {
		return Status{}, err
	}
	return s.statusAfter(ctx, cmd.OrgID, mirror, written)
}

// usageGrace is how long after a period ends Stripe still counts usage for
// it: an invoice is finalized an hour after it is made, and until then it
// takes the period's late usage.
const usageGrace = time.Hour

// Usage is recorded as a Billing Meter event whose identifier derives from
// request_id: Stripe counts a retry once. Usage from before the current
// period (less Stripe's hour of grace) is refused: Stripe would accept it
// and never bill it. record_usage and record_usage_batch share the path
// (usage_batch.go).

// meterEvent is a usage record checked and ready for Stripe.
type meterEvent struct {
	eventName, customer, identifier string
	minutes, at                     int64
}

// usageEvent decides whether a usage record may be sent, from the
// instance type's mapping and the organization's live subscription, and
// what is sent: record_usage and record_usage_batch decide it here.
func (s *Service) usageEvent(cmd Command, m table.ProductMapping, sub *table.Subscription, now time.Time) (meterEvent, error) {
	if !slices.ContainsFunc(sub.Items, func(it table.Item) bool { return it.Key == cmd.InstanceType }) {
		return meterEvent{}, Errorf(CodeNotFound, "instance_type: %s is not on the subscription; call set_instance_types first", cmd.InstanceType)
	}
	at := now.Unix()
	if cmd.Timestamp != nil {
		at = *cmd.Timestamp
		if at < now.Add(-35*24*time.Hour).Unix() || at > now.Add(5*time.Minute).Unix() {
			return meterEvent{}, Errorf(CodeInvalidRequest, "timestamp: must be within the past 35 days and at most 5 minutes ahead")
		}
		if start := sub.CurrentPeriodStart; start > 0 && at < start-int64(usageGrace/time.Second) {
			return meterEvent{}, Errorf(CodeInvalidRequest, "timestamp: before the subscription's current period (from %s), whose invoice is final: Stripe would never bill it",
				time.Unix(start, 0).UTC().Format(time.RFC3339))
		}
	}
	// The identifier makes Stripe count the request_id once, whatever the
	// idempotency key: a retry with new keys is still counted once.
	return meterEvent{eventName: m.MeterEventName, customer: sub.CustomerID, identifier: keyHash(s.cfg.Namespace, "usage", cmd.RequestID),
		minutes: *cmd.Minutes, at: at}, nil
}

// sendUsage sends one meter event. Stripe refusing the identifier means it
// counted it already: that is success. It sends no idempotency key of
// ours: the identifier makes Stripe count the record once, and a key of
// ours would replay a stored 5xx to every retry for 24 hours.
func (s *Service) sendUsage(ctx context.Context, ev meterEvent) error {
	err := s.withStripe(ctx, "record usage", func(api *stripeAPI) error {
		p := &stripe.BillingMeterEventParams{EventName: stripe.String(ev.eventName), Identifier: stripe.String(ev.identifier),
			Timestamp: stripe.Int64(ev.at), Payload: map[string]string{"stripe_customer_id": ev.customer, "value": stripeInt(ev.minutes)}}
		p.Context = ctx
		_, err := api.BillingMeterEvents.New(p)
		return err
	})
	if ErrorCode(err) == CodeConflict {
		return nil // Stripe holds the identifier: an earlier attempt of this request_id was counted
	}
	return err
}

// cancel cancels at the period's end (the default), or now. Cancelling now
// makes a final invoice of the usage not yet invoiced (invoice_now): without
// it Stripe would never bill that usage. The tier's unused time is not
// credited (prorate stays off): a period is paid for in advance.
func (s *Service) cancel(ctx context.Context, cmd Command) (Status, error) {
	m, _, err := s.readMirror(ctx, cmd)
	if err != nil {
		return Status{}, err
	}
	sub, err := liveIn(m)
	if err != nil {
		return Status{}, err
	}
	atEnd := cmd.AtPeriodEnd == nil || *cmd.AtPeriodEnd
	if atEnd && sub.Status == "incomplete" {
		atEnd = false // nothing was paid for: it ends now
	}
	written, err := s.changeSubscription(ctx, cmd.OrgID, sub.ScheduleID, func(api *stripeAPI) (*stripe.Subscription, error) {
		if atEnd {
			p := &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)}
			p.Context = ctx
			p.SetIdempotencyKey(s.stripeKey(cmd, "cancel at period end", p))
			return api.Subscriptions.Update(sub.SubscriptionID, p)
		}
		p := &stripe.SubscriptionCancelParams{InvoiceNow: stripe.Bool(sub.Status != "incomplete")}
		p.Context = ctx
		p.SetIdempotencyKey(s.stripeKey(cmd, "cancel now", p))
		return api.Subscriptions.Cancel(sub.SubscriptionID, p)
	})
	if err != nil {
		return Status{}, err
	}
	return s.statusAfter(ctx, cmd.OrgID, m, written)
}

// resume takes back a cancellation at the period's end (the subscription
// bills on); a subscription already canceled cannot be resumed.
func (s *Service) resume(ctx context.Context, cmd Command) (Status, error) {
	m, _, err := s.readMirror(ctx, cmd)
	if err != nil {
		return Status{}, err
	}
	sub, err := liveIn(m)
	if err != nil {
		return Status{}, err
	}
	if !sub.CancelAtPeriodEnd {
		return statusOf(cmd.OrgID, m), nil
	}
	written, err := s.changeSubscription(ctx, cmd.OrgID, sub.ScheduleID, func(api *stripeAPI) (*stripe.Subscription, error) {
		p := &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(false)}
		p.Context = ctx
		p.SetIdempotencyKey(s.stripeKey(cmd, "resume", p))
		return api.Subscriptions.Update(sub.SubscriptionID, p)
	})
	if err != nil {
		return Status{}, err
	}
	return s.statusAfter(ctx, cmd.OrgID, m, written)
}

// checkReturnURL accepts https, or http on this machine for development.
func checkReturnURL(field, raw string) error {
	u, err := url.Parse(raw)
	if err == nil && u.Host != "" && u.User == nil {
		host := u.Hostname()
		local := host == "localhost" || host == "127.0.0.1" || host == "::1"
		if u.Scheme == "https" || (u.Scheme == "http" && local) {
			return nil
		}
	}
	return Errorf(CodeInvalidRequest, "%s: must be an https URL, or http on localhost", field)
}
