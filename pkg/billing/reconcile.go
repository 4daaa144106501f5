package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

// ReconcileOptions says what a reconcile run does besides comparing.
type ReconcileOptions struct {
	Repair bool // write Stripe's state into the mirror where the two differ
	Replay bool // first re-process the events whose deliveries failed
}

// Difference is one field on which the mirror and Stripe disagree.
type Difference struct {
	OrgID  string `json:"org_id"`
	Field  string `json:"field"`
	Mirror string `json:"mirror"`
	Stripe string `json:"stripe"`
}

// ReconcileReport is what a reconcile run found and did.
type ReconcileReport struct {
	Organizations int          `json:"organizations"`
	Differences   []Difference `json:"differences"`
	// Repaired counts the organizations whose mirror was rewritten, and
	// Remaining the differences still there afterwards (with Repair only).
	Repaired  int           `json:"repaired"`
	Remaining []Difference  `json:"remaining,omitempty"`
	Replay    *ReplayReport `json:"replay,omitempty"`
}

// ReplayReport counts the failed-delivery events a run re-processed, by
// outcome.
type ReplayReport struct {
	Events    int `json:"events"`
	Processed int `json:"processed"`
	Duplicate int `json:"duplicate"`
	Ignored   int `json:"ignored"`
	Failed    int `json:"failed"`
}

// reconcileMetrics are the reconcile action's metrics. ReconcileCompleted
// is its heartbeat, which the template's ReconcileHeartbeatAlarm watches.
var reconcileMetrics = []string{"ReconcileCompleted", "ReconcileOrganizations", "ReconcileDifferences", "ReconcileRepaired",
	"ReconcileRemaining", "ReplayProcessed", "ReplayFailed"}

// EmittedMetrics lists the metrics each function's Embedded Metric Format
// lines carry, by the Function dimension's value, for the template's
// alarms (a template test checks each alarm watches one of these).
func EmittedMetrics() map[string][]string {
	return map[string][]string{"webhook": webhookMetrics, "reconcile": reconcileMetrics,
		"subscribe": stripeMetrics, "upsert-products": stripeMetrics}
}

// reconcileRun is the reconcile action: it runs Reconcile, logs each
// difference (IDs and states only), and counts them in metrics, which the
// template's ReconcileDriftAlarm watches.
func (s *Service) reconcileRun(ctx context.Context, opts ReconcileOptions) (ReconcileReport, error) {
	rep, err := s.Reconcile(ctx, opts)
	if err != nil {
		return rep, err
	}
	for _, d := range rep.Differences {
		s.log.WarnContext(ctx, "reconcile: the mirror differs from Stripe", "org_id", d.OrgID, "field", d.Field, "mirror", d.Mirror, "stripe", d.Stripe)
	}
	counts := map[string]int{"ReconcileCompleted": 1, "ReconcileOrganizations": rep.Organizations, "ReconcileDifferences": len(rep.Differences),
		"ReconcileRepaired": rep.Repaired, "ReconcileRemaining": len(rep.Remaining)}
	if r := rep.Replay; r != nil {
		counts["ReplayProcessed"], counts["ReplayFailed"] = r.Processed, r.Failed
	}
	s.emitEMF("reconcile", reconcileMetrics, counts)
	return rep, nil
}

// stripeOrg is an organization's billing as Stripe has it now.
type stripeOrg struct {
	customers []string             // its live customers, oldest first
	sub       *stripe.Subscription // its newest subscription, latest_invoice expanded
}

// Reconcile compares the mirror with Stripe for every organization of this
// namespace: customer, subscription, status, tier, items, period,
// cancellation, latest invoice and delinquency. With Replay it first
// re-processes events whose deliveries failed; with Repair it writes
// Stripe's state into the mirror. A difference can also be a change in
// flight (a webhook not yet delivered): repair then writes what the
// webhook would, and the webhook arrives as stale.
func (s *Service) Reconcile(ctx context.Context, opts ReconcileOptions) (ReconcileReport, error) {
	var rep ReconcileReport
	keys, err := s.enabledKeys(ctx)
	if err != nil {
		return rep, err
	}
	if opts.Replay {
		replay, err := s.replayFailedEvents(ctx, keys)
		if err != nil {
			return rep, err
		}
		rep.Replay = &replay
	}
	mirrors, err := s.store.ListMirrors(ctx)
	if err != nil {
		return rep, fromTable("read the mirror", err)
	}
	inStripe, readAt, err := s.stripeOrgs(ctx, mirrors)
	if err != nil {
		return rep, err
	}
	orgs := orgIDs(mirrors, inStripe)
	rep.Organizations = len(orgs)
	rep.Differences = []Difference{}
	var differing []string
	for _, org := range orgs {
		diffs := compareOrg(org, mirrors[org], inStripe[org])
		rep.Differences = append(rep.Differences, diffs...)
		if len(diffs) > 0 {
			differing = append(differing, org)
		}
	}
	// Spend is compared, never repaired: a counter adds exactly what was
	// recorded, so a difference is for a person to read.
	spendDiffs, err := s.compareSpend(ctx, mirrors)
	if err != nil {
		return rep, err
	}
	rep.Differences = append(rep.Differences, spendDiffs...)
	// Alerts decided and never sent (their invocation died, or the bus
	// refused them) go out now.
	var pending []Alert
	for _, org := range orgs {
		pending = append(pending, pendingAlerts(org, mirrors[org].Spend, time.Now())...)
	}
	s.sendAlerts(ctx, pending)
	if opts.Repair {
		for _, org := range differing {
			if err := s.repairOrg(ctx, org, mirrors[org], inStripe[org], readAt); err != nil {
				return rep, err
			}
			rep.Repaired++
			m, err := s.store.GetMirror(ctx, org)
			if err != nil {
				return rep, fromTable("read the mirror", err)
			}
			rep.Remaining = append(rep.Remaining, compareOrg(org, m, inStripe[org])...)
		}
	}
	return rep, nil
}

// stripeOrgs lists the customers (this namespace's, and any the mirror
// maps) and every subscription with its latest invoice, 100 per request,
// and keeps each organization's newest subscription, as the mirror does.
// readAt is when Stripe answered the first page, by Stripe's clock, which
// also times its events.
func (s *Service) stripeOrgs(ctx context.Context, mirrors map[string]table.Mirror) (orgs map[string]stripeOrg, readAt int64, err error) {
	mapped := map[string]string{}
	for org, m := range mirrors {
		if m.Customer != nil {
			mapped[m.Customer.CustomerID] = org
		}
	}
	orgs = map[string]stripeOrg{}
	orgOfCustomer := map[string]string{}
	readAt = time.Now().Unix()
	err = s.withStripe(ctx, "list customers and subscriptions", func(api *stripeAPI) error {
		clear(orgs)
		clear(orgOfCustomer)
		ci := api.Customers.List(&stripe.CustomerListParams{ListParams: stripe.ListParams{Context: ctx, Limit: stripe.Int64(100)}})
		for first := true; ci.Next(); first = false {
			if page := ci.CustomerList(); first && page.LastResponse != nil {
				if t, err := http.ParseTime(page.LastResponse.Header.Get("Date")); err == nil {
					readAt = t.Unix()
				}
			}
			c := ci.Customer()
			org, ok := mapped[c.ID]
			if !ok && c.Metadata[metaNamespace] == s.cfg.Namespace {
				org, ok = c.Metadata["org_id"], c.Metadata["org_id"] != ""
			}
			if c.Deleted || !ok {
				continue
			}
			o := orgs[org]
			o.customers = append([]string{c.ID}, o.customers...) // the list is newest first
			orgs[org] = o
			orgOfCustomer[c.ID] = org
		}
		if err := ci.Err(); err != nil {
			return err
		}
		sp := &stripe.SubscriptionListParams{ListParams: stripe.ListParams{Context: ctx, Limit: stripe.Int64(100)}, Status: stripe.String("all")}
		sp.AddExpand("data.latest_invoice")
		si := api.Subscriptions.List(sp)
		for si.Next() {
			sub := si.Subscription()
			if sub.Customer == nil {
				continue
			}
			org, ok := orgOfCustomer[sub.Customer.ID]
			if !ok {
				continue
			}
			o := orgs[org]
			if o.sub == nil || sub.Created > o.sub.Created || (sub.Created == o.sub.Created && sub.ID > o.sub.ID) {
				o.sub = sub
				orgs[org] = o
			}
		}
		return si.Err()
	})
	if err != nil {
		return nil, 0, err
	}
	return orgs, readAt, nil
}

func orgIDs(mirrors map[string]table.Mirror, inStripe map[string]stripeOrg) []string {
	var orgs []string
	for org := range mirrors {
		orgs = append(orgs, org)
	}
	for org := range inStripe {
		if _, ok := mirrors[org]; !ok {
			orgs = append(orgs, org)
		}
	}
	sort.Strings(orgs)
	return orgs
}

// customer is the organization's customer in Stripe: the one the mirror
// maps when it is live, else the oldest.
func (st stripeOrg) customer(m table.Mirror) string {
	if m.Customer != nil && slices.Contains(st.customers, m.Customer.CustomerID) {
		return m.Customer.CustomerID
	}
	if len(st.customers) == 0 {
		return ""
	}
	return st.customers[0]
}

// compareOrg lists the fields on which the mirror and Stripe disagree.
func compareOrg(org string, m table.Mirror, st stripeOrg) []Difference {
	var diffs []Difference
	differ := func(field, mirror, stripe string) {
		if mirror != stripe {
			diffs = append(diffs, Difference{OrgID: org, Field: field, Mirror: mirror, Stripe: stripe})
		}
	}
	mirrorCustomer := ""
	if m.Customer != nil && !m.Customer.Deleted {
		mirrorCustomer = m.Customer.CustomerID
	}
	differ("customer", mirrorCustomer, st.customer(m))
	if len(st.customers) > 1 {
		// Two live customers for one organization can both be charged: a
		// person must merge them.
		differ("live_customers", "1", strings.Join(st.customers, ","))
	}

	want := mirrorView{}
	if st.sub != nil {
		want = viewOfStripe(st.sub)
	}
	got := mirrorView{}
	if m.Subscription != nil {
		got = viewOfMirror(*m.Subscription)
	}
	differ("subscription", got.id, want.id)
	if got.id != want.id {
		return diffs // the fields below would differ only because of it
	}
	differ("status", got.status, want.status)
	differ("tier", got.tier, want.tier)
	differ("items", got.items, want.items)
	differ("current_period_end", got.periodEnd, want.periodEnd)
	differ("cancel_at_period_end", got.cancelAtEnd, want.cancelAtEnd)
	differ("latest_invoice", got.invoice, want.invoice)
	differ("delinquent", got.delinquent, want.delinquent)
	return diffs
}

// mirrorView is a subscription's compared fields, as text.
type mirrorView struct {
	id, status, tier, items, periodEnd, cancelAtEnd, invoice, delinquent string
}

func viewOfMirror(sub table.Subscription) mirrorView {
	v := mirrorView{id: sub.SubscriptionID, status: sub.Status, tier: sub.Tier, items: itemsText(sub.Items),
		periodEnd: strconv.FormatInt(sub.CurrentPeriodEnd, 10), cancelAtEnd: strconv.FormatBool(sub.CancelAtPeriodEnd),
		delinquent: strconv.FormatBool(sub.Delinquent())}
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
		CurrentPeriodEnd: snap.CurrentPeriodEnd, CancelAtPeriodEnd: snap.CancelAtPeriodEnd}
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

// repairOrg writes Stripe's state of one organization into the mirror, as
// guarded changes timed at readAt (when Stripe was read): a webhook that
// landed since is newer and wins. A customer mapping is created only where
// the mirror has none; one that points elsewhere is left for a person.
func (s *Service) repairOrg(ctx context.Context, org string, m table.Mirror, st stripeOrg, readAt int64) error {
	now := time.Now()
	apply := func(ch table.Change) error {
		_, err := s.store.ApplyChange(ctx, ch, true, now)
		if errors.Is(err, table.ErrStale) {
			return nil
		}
		return fromTable("repair the mirror", err)
	}
	switch {
	case m.Customer == nil && st.customer(m) != "":
		err := s.store.CreateCustomer(ctx, table.Customer{OrgID: org, CustomerID: st.customer(m), CreatedAt: now.UTC()})
		if err != nil && !errors.Is(err, table.ErrConditionFailed) {
			return fromTable("repair the customer mapping", err)
		}
	case m.Customer != nil && !m.Customer.Deleted && st.customer(m) != m.Customer.CustomerID:
		// The mapped customer is gone from Stripe: mirror its deletion.
		if err := apply(table.Change{Customer: &table.CustomerSnapshot{OrgID: org, CustomerID: m.Customer.CustomerID, Deleted: true, SourceTime: readAt}}); err != nil {
			return err
		}
	}
	if st.sub == nil {
		return nil
	}
	if err := apply(subscriptionChange(org, asWireSubscription(st.sub), readAt)); err != nil {
		return err
	}
	if inv := st.sub.LatestInvoice; inv != nil && inv.ID != "" {
		return apply(invoiceChange(org, asWireInvoice(inv), readAt))
	}
	return nil
}

// replayFailedEvents re-processes, oldest first, the events Stripe lists
// as not delivered (delivery_success=false; the Events API keeps 30 days).
// Each goes through the webhook's own path, so one already mirrored is a
// duplicate and another deployment's is ignored.
func (s *Service) replayFailedEvents(ctx context.Context, keys Keys) (ReplayReport, error) {
	var rep ReplayReport
	var evs []*stripe.Event
	err := s.withStripe(ctx, "list undelivered events", func(api *stripeAPI) error {
		evs = evs[:0]
		p := &stripe.EventListParams{ListParams: stripe.ListParams{Context: ctx, Limit: stripe.Int64(100)}, DeliverySuccess: stripe.Bool(false)}
		it := api.Events.List(p)
		for it.Next() {
			evs = append(evs, it.Event())
		}
		return it.Err()
	})
	if err != nil {
		return rep, err
	}
	slices.Reverse(evs)
	for _, e := range evs {
		if e.Data == nil || len(e.Data.Raw) == 0 {
			continue
		}
		ev := &wireEvent{ID: e.ID, Type: string(e.Type), Created: e.Created, APIVersion: e.APIVersion, Livemode: e.Livemode}
		if e.Request != nil {
			ev.Request = &struct {
				IdempotencyKey string `json:"idempotency_key"`
			}{IdempotencyKey: e.Request.IdempotencyKey}
		}
		ev.Data = &struct {
			Object json.RawMessage `json:"object"`
		}{Object: e.Data.Raw}
		rep.Events++
		res, err := s.handleEvent(ctx, ev, keys)
		switch {
		case err != nil:
			rep.Failed++
			s.log.WarnContext(ctx, "replay: event failed; Stripe's retries or the next run take it", "event_id", e.ID, "type", ev.Type, "error", AsError(err).Message)
		case res.Status == StatusProcessed:
			rep.Processed++
		case res.Status == StatusDuplicate:
			rep.Duplicate++
		default:
			rep.Ignored++
		}
	}
	return rep, nil
}

// compareSpend compares each organization's spend this period with what
// Stripe's meters summed for its customer (one event summary request per
// metered instance type), priced as the counter prices it. Only
// organizations with spend this period are read: the others add no
// request. Stripe's summaries take minute boundaries, so the period's
// start is rounded down to its minute, and they are eventually consistent:
// usage recorded in the last minutes may show as a difference until they
// catch up.
func (s *Service) compareSpend(ctx context.Context, mirrors map[string]table.Mirror) ([]Difference, error) {
	var orgs []string
	for org, m := range mirrors {
		if sub := m.Subscription; sub != nil && m.Spend.PeriodStart == sub.CurrentPeriodStart && m.Spend.Amount != "" && m.Spend.Amount != "0" {
			orgs = append(orgs, org)
		}
	}
	if len(orgs) == 0 {
		return nil, nil
	}
	sort.Strings(orgs)
	terms, err := s.store.GetTerms(ctx)
	if err != nil {
		return nil, fromTable("read the catalog's terms", err)
	}
	mappings, err := s.store.ListProductMappings(ctx)
	if err != nil {
		return nil, fromTable("read product mappings", err)
	}
	meters := map[string]string{}
	for _, m := range mappings {
		meters[m.Key] = m.MeterID
	}
	// Usage may be stamped up to five minutes ahead (record_usage's limit).
	end := (time.Now().Add(6*time.Minute).Unix()/60 + 1) * 60
	var diffs []Difference
	for _, org := range orgs {
		m := mirrors[org]
		inStripe := new(big.Rat)
		for _, it := range m.Subscription.Items {
			meterID, price := meters[it.Key], terms.Prices[it.Key]
			if meterID == "" || price == "" || m.Customer == nil {
				continue
			}
			minutes, err := s.meteredSince(ctx, meterID, m.Customer.CustomerID, m.Subscription.CurrentPeriodStart/60*60, end)
			if err != nil {
				return diffs, err
			}
			amount, _ := usageAmount(minutes, price)
			inStripe.Add(inStripe, amount)
		}
		if counted := parseAmount(m.Spend.Amount); counted.Cmp(inStripe) != 0 {
			diffs = append(diffs, Difference{OrgID: org, Field: "spend", Mirror: formatAmount(counted), Stripe: formatAmount(inStripe)})
		}
	}
	return diffs, nil
}

// meteredSince is the minutes a meter summed for a customer in [start, end).
func (s *Service) meteredSince(ctx context.Context, meterID, customer string, start, end int64) (int64, error) {
	var total float64
	err := s.withStripe(ctx, "read a meter's event summary", func(api *stripeAPI) error {
		total = 0
		it := api.BillingMeterEventSummaries.List(&stripe.BillingMeterEventSummaryListParams{ID: stripe.String(meterID),
			Customer: stripe.String(customer), StartTime: stripe.Int64(start), EndTime: stripe.Int64(end),
			ListParams: stripe.ListParams{Context: ctx}})
		for it.Next() {
			total += it.BillingMeterEventSummary().AggregatedValue
		}
		return it.Err()
	})
	return int64(math.Round(total)), err
}
