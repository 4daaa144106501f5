package billing

import (
	"encoding/json"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/baseten/billing-functions/pkg/table"
)

// The access table, row by row: each reason, and that an earlier row wins.
func TestAccessRules_EachReasonAndItsOrder(t *testing.T) {
	sub := func(status string) *table.Subscription {
		return &table.Subscription{SubscriptionID: "sub_1", Status: status}
	}
	failed := sub("active")
	failed.InvoicePaymentFail, failed.InvoiceSubscription = true, "sub_1"
	cases := []struct {
		name    string
		facts   accessFacts
		allowed bool
		reason  string
	}{
		{"never subscribed", accessFacts{}, false, ReasonNoSubscription},
		{"canceled", accessFacts{sub: sub("canceled"), included: true}, false, ReasonCanceled},
		{"expired before its first payment", accessFacts{sub: sub("incomplete_expired"), included: true}, false, ReasonCanceled},
		{"first payment pending", accessFacts{sub: sub("incomplete"), included: true}, false, ReasonPaymentRequired},
		{"first payment pending beats not in plan", accessFacts{sub: sub("incomplete")}, false, ReasonPaymentRequired},
		{"not in plan", accessFacts{sub: sub("active")}, false, ReasonNotInPlan},
		{"not in plan beats past due", accessFacts{sub: sub("past_due")}, false, ReasonNotInPlan},
		{"past due within grace", accessFacts{sub: sub("past_due"), included: true}, true, ReasonPastDue},
		{"latest invoice failed within grace", accessFacts{sub: failed, included: true}, true, ReasonPastDue},
		{"past due after grace", accessFacts{sub: sub("past_due"), included: true, pastGrace: true}, false, ReasonPastDue},
		{"unpaid", accessFacts{sub: sub("unpaid"), included: true}, false, ReasonPastDue},
		{"past due beats the cap", accessFacts{sub: sub("past_due"), included: true, overCap: true, pastGrace: true}, false, ReasonPastDue},
		{"the cap beats past due within grace", accessFacts{sub: sub("past_due"), included: true, overCap: true}, false, ReasonSpendCapReached},
		{"cap reached", accessFacts{sub: sub("active"), included: true, overCap: true}, false, ReasonSpendCapReached},
		{"trialing", accessFacts{sub: sub("trialing"), included: true}, true, ReasonOK},
		{"active", accessFacts{sub: sub("active"), included: true}, true, ReasonOK},
	}
	for _, c := range cases {
		allowed, reason := decideAccess(c.facts)
		if allowed != c.allowed || reason != c.reason {
			t.Errorf("%s: %v %s, want %v %s", c.name, allowed, reason, c.allowed, c.reason)
		}
	}
}

func TestCatalog_EntitlementsAreCheckedAndStoredAsTerms(t *testing.T) {
	c := DefaultCatalog()
	capAmount := int64(500)
	for i := range c.Entries {
		switch c.Entries[i].Key {
		case "starter":
			c.Entries[i].Includes = []string{"gpu-t4", "cpu-1x2", "gpu-h200", "cpu-1x2", "business"}
		case "gpu-t4":
			c.Entries[i].SpendCap = &capAmount
		}
	}
	err := c.Validate()
	for _, want := range []string{`includes "gpu-h200", which is not an instance type`, `includes "cpu-1x2" twice`,
		`includes "business", which is not an instance type`, "entries[7] (gpu-t4): includes and spend_cap are for a tier only"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}

	c = DefaultCatalog()
	c.Entries[0].Includes = []string{"gpu-t4", "cpu-1x2"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	terms := c.Terms()
	if got := terms.Tiers["starter"]; strings.Join(got.Includes, ",") != "cpu-1x2,gpu-t4" || got.SpendCap != 100000 {
		t.Errorf("starter's terms: %+v", got)
	}
	if got := terms.Tiers["business"]; len(got.Includes) != 9 || got.SpendCap != 0 {
		t.Errorf("business includes every instance type and has no cap: %+v", got)
	}
	if terms.Prices["gpu-a100"] != "10.24" || terms.Currency != "usd" {
		t.Errorf("prices %v currency %s", terms.Prices, terms.Currency)
	}
	// An entitlement changes nothing in Stripe: the hash Stripe's objects
	// are compared with is the entry's JSON without them, as it was before
	// entitlements existed.
	before := DefaultCatalog().Entries[0]
	if contentHash(before.stripeTerms()) != contentHash(c.Entries[0].stripeTerms()) {
		t.Error("includes changed the hash Stripe's objects are compared with")
	}
	if raw, _ := json.Marshal(before.stripeTerms()); strings.Contains(string(raw), "spend_cap") || strings.Contains(string(raw), "includes") {
		t.Errorf("the hashed terms hold an entitlement: %s", raw)
	}
}

// Spend is exact in minor units, starts again with each period, and a
// threshold is crossed once its line is reached, until claimed.
func TestSpend_ExactRolloverAndThresholds(t *testing.T) {
	sub := &table.Subscription{CurrentPeriodStart: 1000, CurrentPeriodEnd: 2000}
	amount := func(minutes int64, price string) *big.Rat {
		a, ok := usageAmount(minutes, price)
		if !ok {
			t.Fatalf("price %s", price)
		}
		return a
	}
	total := new(big.Rat).Add(amount(3, "0.0867"), amount(7, "0.0867"))
	if got := formatAmount(total); got != "0.867" {
		t.Fatalf("3 + 7 minutes at 0.0867: %s, want 0.867 exactly", got)
	}
	if got := formatAmount(amount(1_000_000, "16.5")); got != "16500000" {
		t.Fatalf("a million minutes at 16.5: %s", got)
	}
	// The first addition of a period starts its record; later ones add.
	if add := spendAdd(table.Spend{}, sub, "usd", 100, total); add == nil || !add.Rollover || add.Amount != "0.867" || add.TierCap != 100 {
		t.Fatalf("first addition: %+v", add)
	}
	if add := spendAdd(table.Spend{PeriodStart: 500, Amount: "99"}, sub, "usd", 100, total); add == nil || !add.Rollover {
		t.Fatalf("an earlier period's record: %+v, want a new period", add)
	}
	if add := spendAdd(table.Spend{PeriodStart: 1000, Amount: "99"}, sub, "usd", 100, total); add == nil || add.Rollover {
		t.Fatalf("this period's record: %+v, want an addition", add)
	}
	// An addition sets the terms only where the record holds others.
	stored := table.Spend{PeriodStart: 1000, PeriodEnd: sub.CurrentPeriodEnd, Currency: "usd", TierCap: 100, Amount: "99"}
	if add := spendAdd(stored, sub, "usd", 100, total); add == nil || add.SetTerms {
		t.Fatalf("the record's own terms: %+v, want an addition alone", add)
	}
	if add := spendAdd(stored, sub, "usd", 500, total); add == nil || !add.SetTerms || add.TierCap != 500 {
		t.Fatalf("another tier's cap: %+v, want the terms set", add)
	}
	if add := spendAdd(table.Spend{PeriodStart: 2000}, sub, "usd", 100, total); add != nil {
		t.Fatalf("a later period's record: %+v, want nothing added to it", add)
	}
	// Thresholds: the lines of a cap of 100 are 50, 80 and 100.
	sp := table.Spend{PeriodStart: 1000, TierCap: 100, Amount: "79.99", Alerts: map[string]int64{}}
	if got := crossed(sp); fmt.Sprint(got) != "[50]" {
		t.Fatalf("at 79.99 of 100: %v", got)
	}
	sp.Amount, sp.Alerts["50"] = "103.267", 1
	if got := crossed(sp); fmt.Sprint(got) != "[80 100]" {
		t.Fatalf("at 103.267 with 50 claimed: %v", got)
	}
	sp.Cap = 1000 // the organization's own cap replaces the tier's
	if got := crossed(sp); len(got) != 0 || effectiveCap(sp, 100) != 1000 || effectiveCap(table.Spend{}, 100) != 100 {
		t.Fatalf("with a cap of 1000: %v", got)
	}
	if got := crossed(table.Spend{Amount: "1e9"}); len(got) != 0 {
		t.Fatalf("no cap, no threshold: %v", got)
	}
}
