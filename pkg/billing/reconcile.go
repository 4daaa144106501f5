package billing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

// ReconcileOptions says what a reconcile step does besides comparing.
type ReconcileOptions struct {
	Repair bool // write Stripe's state into the mirror where the two differ
	Replay bool // when the step starts a pass, first re-process the events whose deliveries failed
}

// Difference is one field on which the mirror and Stripe disagree.
type Difference struct {
	OrgID  string `json:"org_id"`
	Field  string `json:"field"`
	Mirror string `json:"mirror"`
	Stripe string `json:"stripe"`
}

// ReconcileReport is what one reconcile step compared, found and did, and
// where its pass stands.
type ReconcileReport struct {
	PassID string `json:"pass_id"`
	// Phase is what the pass reads next; Done says this step ended it.
	Phase string `json:"phase"`
	Done  bool   `json:"done"`
	// Organizations counts the customers this step compared, and
	// Subscriptions the subscriptions.
	Organizations int          `json:"organizations"`
	Subscriptions int          `json:"subscriptions"`
	Differences   []Difference `json:"differences"`
	// Repaired counts the organizations whose mirror was rewritten, and
	// Remaining the differences still there afterwards (with Repair only).
	Repaired  int           `json:"repaired"`
	Remaining []Difference  `json:"remaining,omitempty"`
	Replay    *ReplayReport `json:"replay,omitempty"`
	// Step is this step's progress, and Pass the pass's so far, this
	// step included.
	Step table.Progress `json:"step"`
	Pass table.Progress `json:"pass"`
}

// reconcileMetrics are the reconcile action's metrics, one line a step.
// ReconcileCompleted (1 on the step that ends a pass) is its heartbeat,
// which the template's ReconcileHeartbeatAlarm watches.
var reconcileMetrics = []string{"ReconcileCompleted", "ReconcileOrganizations", "ReconcileSubscriptions", "ReconcileDifferences",
	"ReconcileRepaired", "ReconcileRemaining", "ReconcileStripeRequests", "ReconcileDynamoDBRequests", "ReplayProcessed", "ReplayFailed"}

// EmittedMetrics lists the metrics each function's Embedded Metric Format
// lines carry, by the Function dimension's value, for the template's
// alarms (a template test checks each alarm watches one of these).
func EmittedMetrics() map[string][]string {
	return map[string][]string{"webhook": webhookMetrics, "reconcile": reconcileMetrics,
		"subscribe": stripeMetrics, "upsert-products": stripeMetrics}
}

// reconcileRun is the reconcile action: one step of the pass. It logs
// each difference (IDs and states only) and the pass's progress, and
// counts them in metrics, which the template's ReconcileDriftAlarm
// watches.
func (s *Service) reconcileRun(ctx context.Context, opts ReconcileOptions) (ReconcileReport, error) {
	rep, err := s.Reconcile(ctx, opts)
	if err != nil {
		return rep, err
	}
	for _, d := range rep.Differences {
		s.log.WarnContext(ctx, "reconcile: the mirror differs from Stripe", "org_id", d.OrgID, "field", d.Field, "mirror", d.Mirror, "stripe", d.Stripe)
	}
	p := rep.Pass
	s.log.InfoContext(ctx, "reconcile step", "pass_id", rep.PassID, "next", rep.Phase, "done", rep.Done,
		"organizations", rep.Organizations, "subscriptions", rep.Subscriptions, "differences", len(rep.Differences),
		"pass_customers", p.Customers, "pass_subscriptions", p.Subscriptions, "pass_differences", p.Differences,
		"pass_stripe_requests", p.StripeRequests, "pass_dynamodb_requests", p.DynamoDBRequests, "pass_steps", p.Steps)
	completed := 0
	if rep.Done {
		completed = 1
	}
	counts := map[string]int{"ReconcileCompleted": completed, "ReconcileOrganizations": rep.Organizations,
		"ReconcileSubscriptions": rep.Subscriptions, "ReconcileDifferences": len(rep.Differences),
		"ReconcileRepaired": rep.Repaired, "ReconcileRemaining": len(rep.Remaining),
		"ReconcileStripeRequests": int(rep.Step.StripeRequests), "ReconcileDynamoDBRequests": int(rep.Step.DynamoDBRequests)}
	if r := rep.Replay; r != nil {
		counts["ReplayProcessed"], counts["ReplayFailed"] = r.Processed, r.Failed
	}
	s.emitEMF("reconcile", reconcileMetrics, counts)
	return rep, nil
}

// The reconcile pass reads this deployment's objects only, with Stripe's
// Search API (FIDELITY.md, rule 17): its customers, then its
// subscriptions, a page of up to 100 a request, each page compared with
// the mirrors of its organizations (batched reads). That is about 0.02
// Stripe requests an organization, against one or more for any read per
// organization. Search answers can lag writes by up to a minute, so a
// page only proposes differences: each is confirmed by a read of the
// object itself before it is reported or repaired.
const (
	// DefaultReconcileRate paces a pass's Stripe requests: under half of
	// test mode's 25 a second, which every deployment on the account
	// shares.
	DefaultReconcileRate     = 10
	DefaultReconcilePageSize = 100
	// reconcileStepMargin is kept free before the invocation's deadline:
	// a page's reads, confirmations and cursor write fit in it.
	reconcileStepMargin = 5 * time.Second
	// DefaultReconcileLease is how long after its invocation's deadline a
	// step killed there holds the pass, before the next may take it over.
	DefaultReconcileLease = 15 * time.Second
)

// Reconcile runs one step of the reconcile pass: it starts a pass when
// none is running (never a second one while one runs), then compares
// pages until the step's time is up, moving the pass's cursor after each
// page. Customer, subscription, status, tier, items, period,
// cancellation, latest invoice, delinquency and spend are compared. With
// Replay, the step that starts a pass first re-processes events whose
// deliveries failed; with Repair it writes Stripe's state into the
// mirror. A difference can also be a change in flight (a webhook not yet
// delivered): repair then writes what the webhook would, and the webhook
// arrives as stale.
func (s *Service) Reconcile(ctx context.Context, opts ReconcileOptions) (ReconcileReport, error) {
	rep := ReconcileReport{Differences: []Difference{}}
	keys, err := s.enabledKeys(ctx)
	if err != nil {
		return rep, err
	}
	start := func() error {
		if !opts.Replay {
			return nil
		}
		replay, err := s.replayFailedEvents(ctx, keys)
		rep.Replay = &replay
		return err
	}
	pass, step, err := s.runStep(ctx, table.PassReconcile, table.PhaseCustomers, start, func(pace *pacer, pass table.Pass) (passPage, error) {
		return s.reconcilePage(ctx, pace, pass, opts)
	})
	rep.PassID, rep.Phase, rep.Done, rep.Pass, rep.Step = pass.PassID, pass.Phase, pass.Phase == table.PhaseDone, pass.Progress, step.progress
	rep.Organizations, rep.Subscriptions = int(step.progress.Customers), int(step.progress.Subscriptions)
	rep.Differences = append(rep.Differences, step.differences...)
	rep.Remaining, rep.Repaired = step.remaining, step.repaired
	return rep, err
}

// reconcilePage reads the pass's next search page and compares it.
func (s *Service) reconcilePage(ctx context.Context, pace *pacer, pass table.Pass, opts ReconcileOptions) (passPage, error) {
	if pass.Phase == table.PhaseCustomers {
		customers, next, err := s.searchCustomers(ctx, pace, s.namespaceQuery(), pass.Page)
		if err != nil {
			return passPage{}, err
		}
		pg, err := s.compareCustomers(ctx, pace, customers, opts)
		pg.next = next
		return pg, err
	}
	subs, next, err := s.searchSubscriptions(ctx, pace, s.namespaceQuery(), pass.Page, "data.latest_invoice")
	if err != nil {
		return passPage{}, err
	}
	pg, err := s.compareSubscriptions(ctx, pace, subs, opts)
	pg.next = next
	return pg, err
}

// compareCustomers compares a page of this namespace's customers with the
// mirror's customer mappings. Each differing customer is read again first
// (search lags), and so is the mapped one when the two differ.
func (s *Service) compareCustomers(ctx context.Context, pace *pacer, customers []*stripe.Customer, opts ReconcileOptions) (passPage, error) {
	var pg passPage
	mirrors, sent, err := s.store.ReadCustomerMirrors(ctx, orgsOf(customers, func(c *stripe.Customer) map[string]string { return c.Metadata }))
	pg.progress.DynamoDBRequests += int64(sent)
	if err != nil {
		return pg, fromTable("read the mirror", err)
	}
	live := map[string]*stripe.Customer{}
	liveNow := func(id string) (*stripe.Customer, error) {
		if c, ok := live[id]; ok {
			return c, nil
		}
		var c *stripe.Customer
		err := s.paced(ctx, pace, "read a customer", func(api *stripeAPI) error {
			var err error
			c, err = api.Customers.Get(id, &stripe.CustomerParams{Params: stripe.Params{Context: ctx}})
			return err
		})
		if err != nil && AsError(err).Code == CodeNotFound {
			c, err = &stripe.Customer{ID: id, Deleted: true}, nil
		}
		if err != nil {
			return nil, err
		}
		live[id] = c
		return c, nil
	}
	for _, c := range customers {
		org := c.Metadata[metaOrg]
		if org == "" {
			continue
		}
		pg.progress.Customers++
		if len(customerDiffs(org, mirrors[org], c, nil)) == 0 {
			continue
		}
		// Confirm against Stripe's own reads: the customer, and the
		// mapped one.
		fresh, err := liveNow(c.ID)
		if err != nil {
			return pg, err
		}
		var mapped *stripe.Customer
		if mc := mirrors[org].Customer; mc != nil && !mc.Deleted && mc.CustomerID != c.ID {
			if mapped, err = liveNow(mc.CustomerID); err != nil {
				return pg, err
			}
		}
		err = s.settle(ctx, &pg, org, customerDiffs(org, mirrors[org], fresh, mapped), opts.Repair, 1,
			func() error {
				return s.repairCustomer(ctx, org, mirrors[org], fresh, mapped, stripeDate(fresh.LastResponse))
			},
			func(m table.Mirror) []Difference { return customerDiffs(org, m, fresh, mapped) })
		if err != nil {
			return pg, err
		}
	}
	return pg, nil
}

// orgsOf lists the organizations a search page's objects name in their
// metadata.
func orgsOf[T any](objs []T, metadata func(T) map[string]string) []string {
	orgs := make([]string, 0, len(objs))
	for _, o := range objs {
		if org := metadata(o)[metaOrg]; org != "" {
			orgs = append(orgs, org)
		}
	}
	return orgs
}

// settle records an organization's confirmed differences on the page;
// with repair it runs fix (writes DynamoDB requests), reads the mirror
// again and records what recompare still finds.
func (s *Service) settle(ctx context.Context, pg *passPage, org string, diffs []Difference, repair bool, writes int64,
	fix func() error, recompare func(table.Mirror) []Difference) error {
	if len(diffs) == 0 {
		return nil
	}
	pg.differences = append(pg.differences, diffs...)
	pg.progress.Differences += int64(len(diffs))
	if !repair {
		return nil
	}
	if err := fix(); err != nil {
		return err
	}
	pg.repaired++
	pg.progress.Repaired++
	m, err := s.store.GetMirror(ctx, org)
	pg.progress.DynamoDBRequests += writes + 1
	if err != nil {
		return fromTable("read the mirror", err)
	}
	pg.remaining = append(pg.remaining, recompare(m)...)
	return nil
}

// customerDiffs compares one of the organization's live customers in
// Stripe with its mirror. mapped is the mirror's other customer as Stripe
// has it, when read: live, the organization has two customers, both of
// which can be charged, and a person must merge them.
func customerDiffs(org string, m table.Mirror, c, mapped *stripe.Customer) []Difference {
	if c.Deleted {
		return nil // deleted since the search indexed it
	}
	mirrorCustomer := ""
	if m.Customer != nil && !m.Customer.Deleted {
		mirrorCustomer = m.Customer.CustomerID
	}
	switch {
	case mirrorCustomer == c.ID:
		return nil
	case mapped != nil && !mapped.Deleted:
		return []Difference{{OrgID: org, Field: "live_customers", Mirror: "1", Stripe: mirrorCustomer + "," + c.ID}}
	}
	return []Difference{{OrgID: org, Field: "customer", Mirror: mirrorCustomer, Stripe: c.ID}}
}

// repairCustomer writes the customer Stripe has into the mirror: a
// mapping where the mirror has none, the deletion of a mapped customer
// Stripe deleted. Two live customers are left for a person.
func (s *Service) repairCustomer(ctx context.Context, org string, m table.Mirror, c, mapped *stripe.Customer, readAt int64) error {
	switch {
	case m.Customer == nil:
		err := s.store.CreateCustomer(ctx, table.Customer{OrgID: org, CustomerID: c.ID, CreatedAt: time.Now().UTC()})
		if err != nil && !errors.Is(err, table.ErrConditionFailed) {
			return fromTable("repair the customer mapping", err)
		}
	case mapped != nil && mapped.Deleted:
		return s.applyRepair(ctx, table.Change{Customer: &table.CustomerSnapshot{OrgID: org, CustomerID: mapped.ID, Deleted: true, SourceTime: readAt}})
	}
	return nil
}

// applyRepair writes one guarded change timed at when Stripe was read: a
// webhook that landed since is newer and wins.
func (s *Service) applyRepair(ctx context.Context, ch table.Change) error {
	_, err := s.store.ApplyChange(ctx, ch, true, time.Now())
	if errors.Is(err, table.ErrStale) {
		return nil
	}
	return fromTable("repair the mirror", err)
}

// compareSubscriptions compares a page of this namespace's subscriptions
// with the mirror: the one the mirror holds field by field, and any newer
// one as a subscription the mirror missed (older ones were replaced, as
// the mirror keeps the newest). A differing subscription is read again
// before it is reported. It then compares the spend of the organizations
// whose subscription it compared, and sends their pending alerts.
func (s *Service) compareSubscriptions(ctx context.Context, pace *pacer, subs []*stripe.Subscription, opts ReconcileOptions) (passPage, error) {
	var pg passPage
	mirrors, sent, err := s.store.ReadMirrors(ctx, orgsOf(subs, func(sub *stripe.Subscription) map[string]string { return sub.Metadata }))
	pg.progress.DynamoDBRequests += int64(sent)
	if err != nil {
		return pg, fromTable("read the mirror", err)
	}
	compared := map[string]table.Mirror{}
	for _, sub := range subs {
		org := sub.Metadata[metaOrg]
		if org == "" {
			continue
		}
		pg.progress.Subscriptions++
		m := mirrors[org]
		if m.Subscription != nil && m.Subscription.SubscriptionID == sub.ID {
			compared[org] = m
		}
		if len(subscriptionDiffs(org, m, sub)) == 0 {
			continue
		}
		var fresh *stripe.Subscription
		err := s.paced(ctx, pace, "read a subscription", func(api *stripeAPI) error {
			p := &stripe.SubscriptionParams{Params: stripe.Params{Context: ctx}}
			p.AddExpand("latest_invoice")
			var err error
			fresh, err = api.Subscriptions.Get(sub.ID, p)
			return err
		})
		if err != nil {
			return pg, err
		}
		err = s.settle(ctx, &pg, org, subscriptionDiffs(org, m, fresh), opts.Repair, 2,
			func() error { return s.repairSubscription(ctx, org, fresh, stripeDate(fresh.LastResponse)) },
			func(after table.Mirror) []Difference { return subscriptionDiffs(org, after, fresh) })
		if err != nil {
			return pg, err
		}
	}
	// Spend is compared, never repaired: a counter adds exactly what was
	// recorded, so a difference is for a person to read.
	spendDiffs, reads, err := s.compareSpend(ctx, pace, compared)
	pg.progress.DynamoDBRequests += int64(reads)
	if err != nil {
		return pg, err
	}
	pg.differences = append(pg.differences, spendDiffs...)
	pg.progress.Differences += int64(len(spendDiffs))
	// Alerts decided and never sent (their invocation died, or the bus
	// refused them) go out now.
	var pending []Alert
	for org, m := range compared {
		pending = append(pending, pendingAlerts(org, m.Spend, time.Now())...)
	}
	s.sendAlerts(ctx, pending)
	return pg, nil
}

// subscriptionDiffs compares one of the organization's subscriptions in
// Stripe with its mirror.
func subscriptionDiffs(org string, m table.Mirror, sub *stripe.Subscription) []Difference {
	var diffs []Difference
	differ := func(field, mirror, stripe string) {
		if mirror != stripe {
			diffs = append(diffs, Difference{OrgID: org, Field: field, Mirror: mirror, Stripe: stripe})
		}
	}
	cur := m.Subscription
	switch {
	case cur == nil:
		differ("subscription", "", sub.ID)
		return diffs
	case cur.SubscriptionID != sub.ID:
		// The mirror keeps the newest subscription: an older one was
		// replaced, a newer one was missed.
		if sub.Created > cur.SubscriptionCreated {
			differ("subscription", cur.SubscriptionID, sub.ID)
		}
		return diffs
	}
	got, want := viewOfMirror(*cur), viewOfStripe(sub)
	differ("status", got.status, want.status)
	differ("tier", got.tier, want.tier)
	differ("items", got.items, want.items)
	differ("current_period_end", got.periodEnd, want.periodEnd)
	differ("cancel_at_period_end", got.cancelAtEnd, want.cancelAtEnd)
	differ("schedule", got.schedule, want.schedule)
	differ("latest_invoice", got.invoice, want.invoice)
	differ("delinquent", got.delinquent, want.delinquent)
	return diffs
}

// mirrorView is a subscription's compared fields, as text.
type mirrorView struct {
	id, status, tier, items, periodEnd, cancelAtEnd, schedule, invoice, delinquent string
}

func viewOfMirror(sub table.Subscription) mirrorView {
	v := mirrorView{id: sub.SubscriptionID, status: sub.Status, tier: sub.Tier, items: itemsText(sub.Items),
		periodEnd: strconv.FormatInt(sub.CurrentPeriodEnd, 10), cancelAtEnd: strconv.FormatBool(sub.CancelAtPeriodEnd),
		schedule: sub.ScheduleID, delinquent: strconv.FormatBool(sub.Delinquent())}
	if sub.InvoiceSubscription == sub.SubscriptionID && sub.LatestInvoiceID != "" {
		v.invoice = sub.LatestInvoiceID + " " + sub.LatestInvoiceStatus
	}
	return v
}

// viewOfStripe maps a Stripe subscription as the webhook would, so that
// the two views differ only where the mirror missed something.
func viewOfStripe(sub *stripe.Subscription) mirrorView {
	snap := subscriptionChange("", asWireSubscription(sub), 0).Subscription
	mirror := table.Subscription{SubscriptionID: snap.SubscriptionID, Status: snap.Status, Tier: snap.Tier, Items: snap.Items,
		CurrentPeriodEnd: snap.CurrentPeriodEnd, CancelAtPeriodEnd: snap.CancelAtPeriodEnd, ScheduleID: snap.ScheduleID}
	if inv := sub.LatestInvoice; inv != nil && inv.ID != "" {
		ch := invoiceChange("", asWireInvoice(inv), 0).Invoice
		mirror.InvoiceSubscription, mirror.LatestInvoiceID, mirror.LatestInvoiceStatus, mirror.InvoicePaymentFail =
			snap.SubscriptionID, ch.InvoiceID, ch.Status, ch.PaymentFailed
	}
	return viewOfMirror(mirror)
}

func itemsText(items []table.Item) string {
	parts := make([]string, 0, len(items))
	for _, it := range items {
		parts = append(parts, fmt.Sprintf("%s=%s/%s", it.Key, it.ItemID, it.PriceID))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// repairSubscription writes a subscription and its latest invoice as
// Stripe has them into the mirror, as guarded changes timed at readAt.
func (s *Service) repairSubscription(ctx context.Context, org string, sub *stripe.Subscription, readAt int64) error {
	if err := s.applyRepair(ctx, subscriptionChange(org, asWireSubscription(sub), readAt)); err != nil {
		return err
	}
	if inv := sub.LatestInvoice; inv != nil && inv.ID != "" {
		return s.applyRepair(ctx, invoiceChange(org, asWireInvoice(inv), readAt))
	}
	return nil
}
