package billing

import (
	"context"
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

// Thresholds are the shares of a spend cap whose crossing sends one alert
// per period.
var Thresholds = []int64{50, 80, 100}

// amountScale is the most decimals an amount keeps: Stripe's
// unit_amount_decimal has at most 12, and minutes are whole.
const amountScale = 12

// usageAmount is what minutes of an instance type cost at price (a decimal
// number of minor units per minute), exactly.
func usageAmount(minutes int64, price string) (*big.Rat, bool) {
	p, ok := new(big.Rat).SetString(price)
	if !ok {
		return nil, false
	}
	return p.Mul(p, new(big.Rat).SetInt64(minutes)), true
}

// parseAmount reads a stored amount; empty is zero.
func parseAmount(s string) *big.Rat {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return new(big.Rat)
	}
	return r
}

// formatAmount writes an amount as a decimal number without trailing
// zeros: exact, since every amount is a sum of whole minutes times prices
// of at most amountScale decimals.
func formatAmount(r *big.Rat) string {
	return normalAmount(r.FloatString(amountScale))
}

// effectiveCap is the cap that applies: the organization's own, else the
// tier's default (0: none).
func effectiveCap(sp table.Spend, tierCap int64) int64 {
	if sp.Cap > 0 {
		return sp.Cap
	}
	return tierCap
}

// spendAdd is what a chunk of records adds to an organization's spend,
// as the stored record sp decides it: an addition to sub's current period,
// the start of that period's record when sp is of an earlier one (or
// absent), or nothing when sp is of a later period than the mirror shows
// (the records belong to a closed one).
//
// An addition to the period carries Below, the amount under which it
// reaches no unclaimed threshold line (as sp shows the claims): the write
// holds only then, and a stored amount at or over it cancels the write and
// comes back with the cancellation. An addition without Below (the period's
// first, or one that reaches a line as far as sp knows) is followed by a
// read of the amount and the claims of the lines it reached. An addition
// sets the period's terms (its end, the currency, the tier's cap) only
// when sp holds others: most only add.
func spendAdd(sp table.Spend, sub *table.Subscription, currency string, tierCap int64, amount *big.Rat) *table.SpendAdd {
	if sp.PeriodStart > sub.CurrentPeriodStart {
		return nil
	}
	add := &table.SpendAdd{PeriodStart: sub.CurrentPeriodStart, PeriodEnd: sub.CurrentPeriodEnd, Amount: formatAmount(amount),
		Currency: currency, TierCap: tierCap, Rollover: sp.PeriodStart < sub.CurrentPeriodStart,
		SetTerms: sp.PeriodEnd != sub.CurrentPeriodEnd || sp.Currency != currency || sp.TierCap != tierCap}
	if add.Rollover {
		return add
	}
	sp.TierCap = tierCap
	// Without a line left to reach (no cap, or every one claimed), no Below.
	if lines := unclaimed(sp); len(lines) > 0 {
		if below := new(big.Rat).Sub(lines[0].at, amount); below.Cmp(parseAmount(sp.Amount)) > 0 {
			add.Below = formatAmount(below)
		}
	}
	return add
}

// line is a threshold of a cap and the amount at which it is reached.
type line struct {
	threshold int64
	at        *big.Rat
}

// unclaimed lists, lowest first, the lines of sp's cap no alert was
// claimed for yet (none without a cap).
func unclaimed(sp table.Spend) []line {
	c := effectiveCap(sp, sp.TierCap)
	if c <= 0 {
		return nil
	}
	var out []line
	for _, t := range Thresholds {
		if _, claimed := sp.Alerts[strconv.FormatInt(t, 10)]; !claimed {
			out = append(out, line{t, new(big.Rat).SetFrac64(c*t, 100)})
		}
	}
	return out
}

// crossed lists the thresholds sp's amount has reached that no alert was
// claimed for yet.
func crossed(sp table.Spend) []int64 {
	amount := parseAmount(sp.Amount)
	var out []int64
	for _, l := range unclaimed(sp) {
		if amount.Cmp(l.at) >= 0 {
			out = append(out, l.threshold)
		}
	}
	return out
}

// alertOf is the alert of threshold t of sp.
func alertOf(org string, sp table.Spend, t int64) Alert {
	return Alert{OrgID: org, Threshold: t, Amount: sp.Amount, Cap: effectiveCap(sp, sp.TierCap), Currency: sp.Currency,
		PeriodStart: sp.PeriodStart, PeriodEnd: sp.PeriodEnd}
}

// alertPatience is how long an alert decided by another invocation may
// stay unsent before this one sends it: longer than an invocation lives
// (the template's Timeout is 30 s), so that its decider is done or dead.
const alertPatience = time.Minute

// pendingAlerts are the alerts of a spend record decided over
// alertPatience ago and not marked sent: their decider died between its
// write and the bus, or the bus refused them.
func pendingAlerts(org string, sp table.Spend, now time.Time) []Alert {
	var out []Alert
	for _, t := range Thresholds {
		key := strconv.FormatInt(t, 10)
		at, decided := sp.Alerts[key]
		if _, sent := sp.AlertsSent[key]; decided && !sent && now.Sub(time.Unix(at, 0)) > alertPatience {
			out = append(out, alertOf(org, sp, t))
		}
	}
	return out
}

// Alert is one threshold of a spend cap crossed by usage.
type Alert struct {
	OrgID       string `json:"org_id"`
	Threshold   int64  `json:"threshold"`
	Amount      string `json:"amount"`
	Cap         int64  `json:"cap"`
	Currency    string `json:"currency"`
	PeriodStart int64  `json:"period_start"`
	PeriodEnd   int64  `json:"period_end"`
}

// orgUsage is one organization's stored answers and the spend they add.
type orgUsage struct {
	org     string
	sub     *table.Subscription
	records []table.FinishedRequest
	amounts map[string]*big.Rat // by request ID, the records that add spend
}

// usageStoreTimeout bounds the writes of a batch's answers and spend:
// transactions that meet other batches of the same organization wait for
// each other, one round each.
const usageStoreTimeout = 10 * time.Second

// usageTries bounds the transactions of one part of a usage write that
// meets a moved spend record or a concurrent transaction.
const usageTries = 20

// storeUsage writes each organization's answers with the spend they add, in
// transactions of at most 100 actions: a record counts in its answer and
// its organization's spend, or in neither. A record another invocation
// stored first is dropped (it counted there). Additions commute (ADD), so
// concurrent batches for one organization do not collide; only a period's
// first addition can meet another's, and is decided again. Then
// claimAlerts decides the alerts. It returns the DynamoDB requests and the
// alerts this call claimed.
func (s *Service) storeUsage(ctx context.Context, parts []*orgUsage, view table.UsageView, now time.Time) (int, []Alert, error) {
	spends := view.Spends
	sent := 0
	added := map[string]bool{}
	// Each round takes at most one chunk per organization, so that a
	// transaction never touches one spend record twice.
	for len(parts) > 0 {
		var batch []table.UsageWrite
		var owners []*orgUsage
		actions := 0
		var rest []*orgUsage
		for _, p := range parts {
			w := s.nextUsageWrite(p, spends[p.org], view.Terms)
			if actions+w.Actions() > table.MaxUsageActions && len(batch) > 0 {
				rest = append(rest, p)
				continue
			}
			batch, owners = append(batch, w), append(owners, p)
			actions += w.Actions()
		}
		var err error
		var conflict table.UsageConflict
		for try := 1; ; try++ {
			conflict, err = s.store.WriteUsage(ctx, batch, now, usageKeep)
			sent++
			if err == nil || try == usageTries {
				break
			}
			switch {
			case errors.Is(err, table.ErrConditionFailed):
				for i, w := range batch {
					if sp, ok := conflict.Spends[w.OrgID]; ok {
						spends[w.OrgID] = sp // returned with the cancellation
					} else if conflict.SpendMoved[w.OrgID] {
						sp, gerr := s.store.GetSpend(ctx, w.OrgID)
						sent++
						if gerr != nil {
							return sent, nil, gerr
						}
						spends[w.OrgID] = sp
					}
					owners[i].drop(conflict.StoredBefore)
					batch[i] = s.nextUsageWrite(owners[i], spends[w.OrgID], view.Terms)
				}
			case errors.Is(err, table.ErrTransactionConflict), errors.Is(err, table.ErrUnavailable):
				if serr := sleepCtx(ctx, jittered(try)); serr != nil {
					return sent, nil, err
				}
			default:
				return sent, nil, err
			}
		}
		if err != nil {
			return sent, nil, err
		}
		for i, w := range batch {
			if a := w.Add; a != nil {
				sp := spends[w.OrgID]
				if a.Rollover {
					sp = table.Spend{Cap: sp.Cap, Amount: "0"}
				}
				sp.PeriodStart, sp.PeriodEnd, sp.Currency, sp.TierCap = a.PeriodStart, a.PeriodEnd, a.Currency, a.TierCap
				sp.Amount = formatAmount(new(big.Rat).Add(parseAmount(sp.Amount), parseAmount(a.Amount))) // at least
				spends[w.OrgID] = sp
				// An addition without Below may have reached a line: the
				// period's first knows its amount (it started the record),
				// any other reads it.
				if a.Below == "" && len(unclaimed(sp)) > 0 {
					added[w.OrgID] = !a.Rollover
				}
			}
			owners[i].advance(len(w.Records))
			if len(owners[i].records) > 0 {
				rest = append(rest, owners[i])
			}
		}
		parts = rest
	}
	n, alerts, err := s.claimAlerts(ctx, added, spends, now)
	return sent + n, alerts, err
}

// claimAlerts reads, after this call's additions committed, the spend of
// each organization whose addition may have reached a threshold line (it
// carried no Below), and claims each threshold its amount has reached. An
// addition that reaches a line always gets here: with Below it would have
// been cancelled. The read comes after the write, so it sees at least the
// amount that reached the line; ClaimAlert's condition lets one claim
// succeed.
func (s *Service) claimAlerts(ctx context.Context, added map[string]bool, spends map[string]table.Spend, now time.Time) (int, []Alert, error) {
	var orgs, toRead []string
	for org, read := range added {
		orgs = append(orgs, org)
		if read {
			toRead = append(toRead, org)
		}
	}
	sort.Strings(orgs)
	sent := 0
	if len(toRead) > 0 {
		current, n, err := s.store.GetSpends(ctx, toRead)
		sent += n
		if err != nil {
			return sent, nil, err
		}
		for org, sp := range current {
			spends[org] = sp
		}
	}
	var alerts []Alert
	for _, org := range orgs {
		sp := spends[org]
		for _, t := range crossed(sp) {
			err := s.store.ClaimAlert(ctx, org, sp.PeriodStart, strconv.FormatInt(t, 10), now)
			sent++
			switch {
			case err == nil:
				alerts = append(alerts, alertOf(org, sp, t))
			case !errors.Is(err, table.ErrConditionFailed): // another claimed it: not ours to send
				return sent, alerts, err
			}
		}
	}
	return sent, alerts, nil
}

// chunk is how many of an organization's records go in one transaction,
// with its spend record.
const chunk = table.MaxUsageActions - 1

// nextUsageWrite is p's next chunk: up to 99 answers, and what their
// amounts add to the spend, unless none adds any.
func (s *Service) nextUsageWrite(p *orgUsage, sp table.Spend, terms table.Terms) table.UsageWrite {
	n := min(len(p.records), chunk)
	w := table.UsageWrite{OrgID: p.org, Records: p.records[:n]}
	total := new(big.Rat)
	adds := false
	for _, r := range w.Records {
		if a, ok := p.amounts[r.RequestID]; ok {
			total.Add(total, a)
			adds = true
		}
	}
	if adds && p.sub != nil {
		w.Add = spendAdd(sp, p.sub, terms.Currency, terms.Tiers[p.sub.Tier].SpendCap, total)
	}
	return w
}

// drop removes the records another invocation stored first.
func (p *orgUsage) drop(stored map[string]bool) {
	if len(stored) == 0 {
		return
	}
	kept := p.records[:0]
	for _, r := range p.records {
		if !stored[r.RequestID] {
			kept = append(kept, r)
		}
	}
	p.records = kept
}

// advance moves past the first n records, written.
func (p *orgUsage) advance(n int) { p.records = p.records[n:] }

// jittered is the wait before the try-th try of a contended write: up to
// 20 ms a try, at most 200 ms, spread at random so that writers that met
// do not meet again.
func jittered(try int) time.Duration {
	return time.Duration(rand.Int64N(int64(min(try, 10)) * int64(20*time.Millisecond))) //nolint:gosec // a backoff's spread, not a secret
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// compareSpend compares the spend this period of each organization in
// mirrors with what Stripe's meters summed for its customer (one event
// summary request per metered instance type), priced as the counter
// prices it. Only organizations with spend this period are read: the
// others add no request. Stripe's summaries take minute boundaries, so
// the period's start is rounded down to its minute, and they are
// eventually consistent: usage recorded in the last minutes may show as a
// difference until they catch up. It also returns its DynamoDB requests.
func (s *Service) compareSpend(ctx context.Context, pace *pacer, mirrors map[string]table.Mirror) ([]Difference, int, error) {
	var orgs []string
	for org, m := range mirrors {
		if sub := m.Subscription; sub != nil && m.Spend.PeriodStart == sub.CurrentPeriodStart && m.Spend.Amount != "" && m.Spend.Amount != "0" {
			orgs = append(orgs, org)
		}
	}
	if len(orgs) == 0 {
		return nil, 0, nil
	}
	sort.Strings(orgs)
	terms, err := s.store.GetTerms(ctx)
	if err != nil {
		return nil, 1, fromTable("read the catalog's terms", err)
	}
	mappings, err := s.store.ListProductMappings(ctx)
	if err != nil {
		return nil, 2, fromTable("read product mappings", err)
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
			minutes, err := s.meteredSince(ctx, pace, meterID, m.Customer.CustomerID, m.Subscription.CurrentPeriodStart/60*60, end)
			if err != nil {
				return diffs, 2, err
			}
			amount, _ := usageAmount(minutes, price)
			inStripe.Add(inStripe, amount)
		}
		if counted := parseAmount(m.Spend.Amount); counted.Cmp(inStripe) != 0 {
			diffs = append(diffs, Difference{OrgID: org, Field: "spend", Mirror: formatAmount(counted), Stripe: formatAmount(inStripe)})
		}
	}
	return diffs, 2, nil
}

// meteredSince is the minutes a meter summed for a customer in [start, end).
func (s *Service) meteredSince(ctx context.Context, pace *pacer, meterID, customer string, start, end int64) (int64, error) {
	var total float64
	err := s.paced(ctx, pace, "read a meter's event summary", func(api *stripeAPI) error {
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
