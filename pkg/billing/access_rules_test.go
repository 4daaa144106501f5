package billing

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

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

// Spend is exact in minor units, rolls over with the period, and each
// threshold is crossed by one addition.
func TestAddSpend_ExactRollsOverAndCrossesEachThresholdOnce(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	sub := &table.Subscription{CurrentPeriodStart: 1000, CurrentPeriodEnd: 2000}
	add := func(sp table.Spend, minutes int64, price string) table.Spend {
		a, ok := usageAmount(minutes, price)
		if !ok {
			t.Fatalf("price %s", price)
		}
		to := addSpend(sp, sub, "usd", 100, a, now)
		to.Version = sp.Version + 1
		return to
	}
	sp := add(table.Spend{}, 3, "0.0867") // 0.2601
	sp = add(sp, 7, "0.0867")             // 0.8670
	if sp.Amount != "0.867" || len(sp.Alerts) != 0 {
		t.Fatalf("amount %s alerts %v, want 0.867 and none", sp.Amount, sp.Alerts)
	}
	sp = add(sp, 5, "10.24") // 52.067: crosses 50
	if sp.Amount != "52.067" || len(newAlerts("o", table.Spend{}, sp)) != 1 || sp.Alerts["50"] != now.Unix() {
		t.Fatalf("after crossing 50: %+v", sp)
	}
	prev := sp
	sp = add(sp, 5, "10.24") // 103.267: crosses 80 and 100 together
	if got := newAlerts("o", prev, sp); len(got) != 2 || got[0].Threshold != 80 || got[1].Threshold != 100 || got[1].Amount != "103.267" {
		t.Fatalf("alerts of the addition past 80 and 100: %+v", got)
	}
	prev = sp
	sp = add(sp, 1, "0.0867")
	if got := newAlerts("o", prev, sp); len(got) != 0 {
		t.Fatalf("a threshold alerted twice: %+v", got)
	}
	// The organization's own cap replaces the tier's.
	sp.Cap = 1000
	if effectiveCap(sp, 100) != 1000 || effectiveCap(table.Spend{}, 100) != 100 {
		t.Error("the organization's cap does not override the tier's")
	}
	// A new period starts from zero, with no alert sent, and keeps the cap.
	sub = &table.Subscription{CurrentPeriodStart: 2000, CurrentPeriodEnd: 3000}
	next := add(sp, 2, "0.5")
	if next.Amount != "1" || len(next.Alerts) != 0 || next.PeriodStart != 2000 || next.Cap != 1000 {
		t.Fatalf("rolled over: %+v", next)
	}
}
