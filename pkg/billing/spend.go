package billing

import (
	"context"
	"errors"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

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
	s := r.FloatString(amountScale)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// effectiveCap is the cap that applies: the organization's own, else the
// tier's default (0: none).
func effectiveCap(sp table.Spend, tierCap int64) int64 {
	if sp.Cap > 0 {
		return sp.Cap
	}
	return tierCap
}

// addSpend is the spend record once amount is added to it for the period
// of sub, with the alerts that addition crosses: decided here, from the
// version read, and written only if that version still holds.
func addSpend(sp table.Spend, sub *table.Subscription, currency string, tierCap int64, amount *big.Rat, now time.Time) table.Spend {
	to := sp
	if sp.PeriodStart != sub.CurrentPeriodStart {
		to.Amount, to.Alerts, to.AlertsSent = "0", nil, nil // a new period: the counter rolls over
	}
	to.PeriodStart, to.PeriodEnd, to.Currency, to.TierCap = sub.CurrentPeriodStart, sub.CurrentPeriodEnd, currency, tierCap
	before := parseAmount(to.Amount)
	after := new(big.Rat).Add(before, amount)
	to.Amount = formatAmount(after)
	alerts := map[string]int64{}
	for k, v := range to.Alerts {
		alerts[k] = v
	}
	if c := effectiveCap(sp, tierCap); c > 0 {
		for _, t := range Thresholds {
			line := new(big.Rat).SetFrac64(c*t, 100)
			key := strconv.FormatInt(t, 10)
			if _, sent := alerts[key]; !sent && after.Cmp(line) >= 0 {
				alerts[key] = now.Unix()
			}
		}
	}
	to.Alerts = alerts
	if to.AlertsSent == nil {
		to.AlertsSent = map[string]int64{}
	}
	return to
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
			out = append(out, Alert{OrgID: org, Threshold: t, Amount: sp.Amount, Cap: effectiveCap(sp, sp.TierCap), Currency: sp.Currency,
				PeriodStart: sp.PeriodStart, PeriodEnd: sp.PeriodEnd})
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

// newAlerts are the thresholds to has that from had not.
func newAlerts(org string, from, to table.Spend) []Alert {
	var out []Alert
	for _, t := range Thresholds {
		key := strconv.FormatInt(t, 10)
		_, was := from.Alerts[key]
		if from.PeriodStart != to.PeriodStart {
			was = false
		}
		if _, is := to.Alerts[key]; is && !was {
			out = append(out, Alert{OrgID: org, Threshold: t, Amount: to.Amount, Cap: effectiveCap(to, to.TierCap), Currency: to.Currency,
				PeriodStart: to.PeriodStart, PeriodEnd: to.PeriodEnd})
		}
	}
	return out
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
// stored first is dropped (it counted there); a spend record that moved is
// read again and the addition decided again. It returns the DynamoDB
// requests and the alerts its writes crossed.
func (s *Service) storeUsage(ctx context.Context, parts []*orgUsage, view table.UsageView, now time.Time) (int, []Alert, error) {
	spends := view.Spends
	sent := 0
	var alerts []Alert
	// Each round takes at most one chunk per organization, so that a
	// transaction never touches one spend record twice.
	for len(parts) > 0 {
		var batch []table.UsageWrite
		var owners []*orgUsage
		actions := 0
		var rest []*orgUsage
		for _, p := range parts {
			w := s.nextUsageWrite(p, spends[p.org], view.Terms, now)
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
				if serr := sleepCtx(ctx, jittered(try)/4); serr != nil {
					return sent, alerts, err
				}
				for i, w := range batch {
					if sp, ok := conflict.Spends[w.OrgID]; ok {
						spends[w.OrgID] = sp // returned with the cancellation
					} else if conflict.SpendMoved[w.OrgID] {
						sp, gerr := s.store.GetSpend(ctx, w.OrgID)
						sent++
						if gerr != nil {
							return sent, alerts, gerr
						}
						spends[w.OrgID] = sp
					}
					owners[i].drop(conflict.StoredBefore)
					batch[i] = s.nextUsageWrite(owners[i], spends[w.OrgID], view.Terms, now)
				}
			case errors.Is(err, table.ErrTransactionConflict), errors.Is(err, table.ErrUnavailable):
				if serr := sleepCtx(ctx, jittered(try)); serr != nil {
					return sent, alerts, err
				}
			default:
				return sent, alerts, err
			}
		}
		if err != nil {
			return sent, alerts, err
		}
		for i, w := range batch {
			if w.To != nil {
				alerts = append(alerts, newAlerts(w.OrgID, spends[w.OrgID], *w.To)...)
				spends[w.OrgID] = *w.To
				spends[w.OrgID] = bumped(spends[w.OrgID])
			}
			owners[i].advance(len(w.Records))
			if len(owners[i].records) > 0 {
				rest = append(rest, owners[i])
			}
		}
		parts = rest
	}
	return sent, alerts, nil
}

// bumped is a spend record as written: one version on.
func bumped(sp table.Spend) table.Spend {
	sp.Version++
	return sp
}

// chunk is how many of an organization's records go in one transaction,
// with its spend record.
const chunk = table.MaxUsageActions - 1

// nextUsageWrite is p's next chunk: up to 99 answers, and the spend record
// with their amounts added, unless none adds any.
func (s *Service) nextUsageWrite(p *orgUsage, sp table.Spend, terms table.Terms, now time.Time) table.UsageWrite {
	n := min(len(p.records), chunk)
	w := table.UsageWrite{OrgID: p.org, Records: p.records[:n], From: sp}
	total := new(big.Rat)
	adds := false
	for _, r := range w.Records {
		if a, ok := p.amounts[r.RequestID]; ok {
			total.Add(total, a)
			adds = true
		}
	}
	if adds && p.sub != nil {
		if sp.PeriodStart > p.sub.CurrentPeriodStart {
			// The spend record is of a later period than the mirror shows:
			// these records belong to a closed one.
			return w
		}
		tierCap := terms.Tiers[p.sub.Tier].SpendCap
		to := addSpend(sp, p.sub, terms.Currency, tierCap, total, now)
		w.To = &to
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
