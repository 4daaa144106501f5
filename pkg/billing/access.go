package billing

import (
	"context"
	"errors"
	"math/big"
	"slices"
	"strconv"
	"time"

	"github.com/baseten/billing-functions/pkg/table"
)

// Access reasons: why check_access allows or denies. The README lists
// them; decideAccess is the one place that chooses.
const (
	ReasonOK              = "ok"
	ReasonBillingDisabled = "billing_disabled"
	ReasonNoSubscription  = "no_subscription"
	ReasonCanceled        = "canceled"
	ReasonPaymentRequired = "payment_required"
	ReasonNotInPlan       = "instance_type_not_in_plan"
	ReasonPastDue         = "past_due"
	ReasonSpendCapReached = "spend_cap_reached"
)

// AccessResult answers check_access.
type AccessResult struct {
	Allowed bool       `json:"allowed"`
	Reason  string     `json:"reason"`
	Tier    *string    `json:"tier"`
	Status  *string    `json:"status"`
	Spend   *SpendView `json:"spend"`
}

// SpendView is an organization's spend this period and the cap on it
// (null without one).
type SpendView struct {
	PeriodStart int64  `json:"period_start"`
	PeriodEnd   int64  `json:"period_end"`
	Amount      string `json:"amount"`
	Cap         *int64 `json:"cap"`
	Currency    string `json:"currency"`
	// Alerts are the thresholds crossed this period, in order, each with
	// when the write that crossed it was made.
	Alerts []SpendAlert `json:"alerts"`
}

// SpendAlert is one threshold (50, 80 or 100 percent of the cap) crossed.
type SpendAlert struct {
	Threshold int64 `json:"threshold"`
	At        int64 `json:"at"`
}

// accessRule is one row of the access table: when it applies, whether it
// allows, and its reason. The first row that applies decides.
type accessRule struct {
	reason  string
	allowed bool
	applies func(a accessFacts) bool
}

// accessFacts are what the rules read, taken from the mirror alone.
type accessFacts struct {
	sub          *table.Subscription
	instanceType string
	included     bool // the tier includes the instance type and it is on the subscription
	overCap      bool
	pastGrace    bool // past_due for longer than the grace period
}

// accessRules decide check_access, in order.
var accessRules = []accessRule{
	{ReasonNoSubscription, false, func(a accessFacts) bool { return a.sub == nil }},
	{ReasonCanceled, false, func(a accessFacts) bool { return !live(a.sub) }},
	{ReasonPaymentRequired, false, func(a accessFacts) bool { return a.sub.Status == "incomplete" }},
	{ReasonNotInPlan, false, func(a accessFacts) bool { return !a.included }},
	{ReasonPastDue, false, func(a accessFacts) bool { return a.sub.Status == "unpaid" || (a.sub.Delinquent() && a.pastGrace) }},
	{ReasonSpendCapReached, false, func(a accessFacts) bool { return a.overCap }},
	{ReasonPastDue, true, func(a accessFacts) bool { return a.sub.Delinquent() }},
	{ReasonOK, true, func(accessFacts) bool { return true }},
}

// decideAccess applies the access table.
func decideAccess(a accessFacts) (bool, string) {
	for _, r := range accessRules {
		if r.applies(a) {
			return r.allowed, r.reason
		}
	}
	return false, ReasonNoSubscription // unreachable: the last rule always applies
}

// checkAccess answers whether the organization may run the instance type
// now, from DynamoDB alone (one request) and never from Stripe. An empty
// Stripe key allows everything. A DynamoDB failure answers unavailable,
// never a guess: whether to fail open or closed is the caller's choice.
func (s *Service) checkAccess(ctx context.Context, cmd Command) (AccessResult, error) {
	if _, err := s.enabledKeys(ctx); errors.Is(err, ErrBillingDisabled) {
		return AccessResult{Allowed: true, Reason: ReasonBillingDisabled}, nil
	} else if err != nil {
		return AccessResult{}, err
	}
	// One BatchGetItem: the subscription, the spend and the catalog's terms.
	m, _, err := s.store.ReadMirror(ctx, cmd.OrgID, nil)
	if err != nil {
		return AccessResult{}, fromTable("read the organization's access", err)
	}
	var catalog table.Terms
	if m.Terms != nil {
		catalog = *m.Terms
	}
	res := AccessResult{}
	facts := accessFacts{sub: m.Subscription, instanceType: cmd.InstanceType}
	if sub := m.Subscription; sub != nil {
		res.Tier, res.Status = &sub.Tier, &sub.Status
		onSub := slices.ContainsFunc(sub.Items, func(it table.Item) bool { return it.Key == cmd.InstanceType })
		terms, known := catalog.Tiers[sub.Tier]
		facts.included = onSub && (!known || slices.Contains(terms.Includes, cmd.InstanceType))
		facts.pastGrace = time.Since(time.Unix(sub.CurrentPeriodStart, 0)) > s.cfg.PastDueGrace
		view := spendView(m.Spend, sub, terms.SpendCap, catalog.Currency)
		res.Spend = &view
		facts.overCap = view.Cap != nil && parseAmount(view.Amount).Cmp(new(big.Rat).SetInt64(*view.Cap)) >= 0
	}
	res.Allowed, res.Reason = decideAccess(facts)
	return res, nil
}

// spendView is the spend of sub's current period: zero when the stored
// record is of an earlier one.
func spendView(sp table.Spend, sub *table.Subscription, tierCap int64, currency string) SpendView {
	v := SpendView{PeriodStart: sub.CurrentPeriodStart, PeriodEnd: sub.CurrentPeriodEnd, Amount: "0", Currency: currency, Alerts: []SpendAlert{}}
	if sp.PeriodStart == sub.CurrentPeriodStart && sp.Amount != "" {
		v.Amount = sp.Amount
		for _, t := range Thresholds {
			if at, ok := sp.Alerts[strconv.FormatInt(t, 10)]; ok {
				v.Alerts = append(v.Alerts, SpendAlert{Threshold: t, At: at})
			}
		}
	}
	if sp.Currency != "" {
		v.Currency = sp.Currency
	}
	if c := effectiveCap(sp, tierCap); c > 0 {
		v.Cap = &c
	}
	return v
}

// SpendCapResult answers set_spend_cap: the organization's own cap (null
// when the tier's default applies).
type SpendCapResult struct {
	OrgID string `json:"org_id"`
	Cap   *int64 `json:"cap"`
}

// setSpendCap sets or, with a null amount, removes the organization's own
// cap. The currency must be the catalog's.
func (s *Service) setSpendCap(ctx context.Context, cmd Command) (SpendCapResult, error) {
	var amount int64
	if cmd.Amount != nil {
		amount = *cmd.Amount
		terms, err := s.store.GetTerms(ctx)
		switch {
		case errors.Is(err, table.ErrNotFound):
			return SpendCapResult{}, Errorf(CodeNotFound, "the catalog's terms are not stored yet; run upsert-products")
		case err != nil:
			return SpendCapResult{}, fromTable("read the catalog's terms", err)
		case cmd.Currency != terms.Currency:
			return SpendCapResult{}, Errorf(CodeInvalidRequest, "currency: the catalog bills in %s", terms.Currency)
		}
	}
	if _, err := s.store.SetSpendCap(ctx, cmd.OrgID, amount); err != nil {
		return SpendCapResult{}, fromTable("write the spend cap", err)
	}
	res := SpendCapResult{OrgID: cmd.OrgID}
	if amount > 0 {
		res.Cap = &amount
	}
	return res, nil
}

// checkIncluded refuses instance types the tier does not include, as the
// catalog's terms say (nothing is refused before upsert-products stored
// them).
func checkIncluded(terms *table.Terms, tier string, instanceTypes []string) error {
	if terms == nil {
		return nil
	}
	tt, ok := terms.Tiers[tier]
	if !ok {
		return nil
	}
	for _, k := range instanceTypes {
		if !slices.Contains(tt.Includes, k) {
			return Errorf(CodeInvalidRequest, "instance_types: %s is not included in the %s tier", k, tier)
		}
	}
	return nil
}
