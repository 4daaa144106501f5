package billing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/dynamoproxy"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/billing/alertbus"
)

// access calls check_access and checks what it cost: one DynamoDB request
// and no Stripe request.
func (f *fixture) access(org, instanceType string) map[string]any {
	f.t.Helper()
	f.requests()
	got := f.ok(map[string]any{"action": "check_access", "org_id": org, "instance_type": instanceType})
	if dynamo, stripeReqs := f.requests(); dynamo != 1 || stripeReqs != 0 {
		f.t.Errorf("check_access %s %s: %d DynamoDB and %d Stripe requests, want 1 and 0", org, instanceType, dynamo, stripeReqs)
	}
	return got
}

func wantAccess(t *testing.T, got map[string]any, allowed bool, reason string) {
	t.Helper()
	if got["allowed"] != allowed || got["reason"] != reason {
		t.Fatalf("check_access: %v, want allowed=%v reason=%s", got, allowed, reason)
	}
}

// A catalog whose Starter tier includes two instance types.
func narrowStarter() *billing.Catalog {
	c := billing.DefaultCatalog()
	for i := range c.Entries {
		if c.Entries[i].Key == "starter" {
			c.Entries[i].Includes = []string{"gpu-t4", "cpu-1x2"}
		}
	}
	return &c
}

func TestCheckAccess_EachReasonFromOneDynamoDBRequest(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{Catalog: narrowStarter()})
	f.subscribe("org_acc", "tier", "starter", "email", "a@example.com", "instance_types", []string{"gpu-t4"})

	wantAccess(t, f.access("org_acc", "gpu-t4"), true, billing.ReasonOK)
	wantAccess(t, f.access("org_acc", "cpu-1x2"), false, billing.ReasonNotInPlan) // included, not on the subscription
	wantAccess(t, f.access("org_acc", "gpu-a100"), false, billing.ReasonNotInPlan)
	wantAccess(t, f.access("org_nobody", "gpu-t4"), false, billing.ReasonNoSubscription)
	wantError(t, f.call(req("set_instance_types", "org_acc", "instance_types", []string{"gpu-t4", "gpu-a100"})), billing.CodeInvalidRequest)
	wantError(t, f.call(req("subscribe", "org_acc2", "tier", "starter", "email", "b@example.com", "instance_types", []string{"gpu-h100"})), billing.CodeInvalidRequest)

	// The tier's default cap, then the organization's own: 100 minutes of
	// a T4 at 1.0517 cents is 105.17 cents, past a cap of 100.
	got := f.access("org_acc", "gpu-t4")
	if sp := got["spend"].(map[string]any); sp["cap"] != float64(100000) || sp["amount"] != "0" || sp["currency"] != "usd" {
		t.Fatalf("spend before usage: %v", sp)
	}
	if r := f.ok(req("set_spend_cap", "org_acc", "amount", 100, "currency", "usd")); r["cap"] != float64(100) {
		t.Fatalf("set_spend_cap: %v", r)
	}
	wantError(t, f.call(req("set_spend_cap", "org_acc", "amount", 100, "currency", "eur")), billing.CodeInvalidRequest)
	f.ok(req("record_usage", "org_acc", "instance_type", "gpu-t4", "minutes", 100))
	got = f.access("org_acc", "gpu-t4")
	wantAccess(t, got, false, billing.ReasonSpendCapReached)
	if sp := got["spend"].(map[string]any); sp["amount"] != "105.17" || sp["cap"] != float64(100) || len(sp["alerts"].([]any)) != 3 {
		t.Fatalf("spend after usage: %v", sp)
	}
	// Over the cap, usage that happened is still recorded and billed.
	f.ok(req("record_usage", "org_acc", "instance_type", "gpu-t4", "minutes", 3))
	if got := f.meteredMinutes("gpu-t4", f.mirror("org_acc").Customer.CustomerID); got != 103 {
		t.Fatalf("Stripe metered %v minutes, want 103: a cap never drops billable usage", got)
	}
	if st := f.ok(map[string]any{"action": "get_status", "org_id": "org_acc"}); st["spend"].(map[string]any)["amount"] != "108.3251" {
		t.Fatalf("get_status spend: %v", st["spend"])
	}
	if r := f.ok(req("set_spend_cap", "org_acc", "amount", nil)); r["cap"] != nil {
		t.Fatalf("removing the cap: %v", r)
	}
	wantAccess(t, f.access("org_acc", "gpu-t4"), true, billing.ReasonOK) // back to the tier's 100000

	// The first payment pending.
	f.ok(req("subscribe", "org_acc3", "tier", "starter", "email", "c@example.com", "instance_types", []string{"gpu-t4"}))
	wantAccess(t, f.access("org_acc3", "gpu-t4"), false, billing.ReasonPaymentRequired)

	f.ok(req("cancel", "org_acc", "at_period_end", false))
	wantAccess(t, f.access("org_acc", "gpu-t4"), false, billing.ReasonCanceled)

	raw, _ := json.Marshal(map[string]any{"action": "check_access", "org_id": "org_acc", "instance_type": "gpu-t4"})
	resp, _ := disabledService(t).HandleSubscribe(context.Background(), raw)
	if r, _ := json.Marshal(resp.Result); !resp.OK || !strings.Contains(string(r), `"allowed":true,"reason":"billing_disabled"`) {
		t.Fatalf("with billing disabled: %+v %s", resp, r)
	}

	// DynamoDB throttled past the SDK's retries: unavailable, never a guess.
	proxy := f.viaFaultProxy()
	proxy.Inject(dynamoproxy.Fault{Op: "BatchGetItem", Kind: "throttle", Count: 8})
	resp = f.call(map[string]any{"action": "check_access", "org_id": "org_acc3", "instance_type": "gpu-t4"})
	wantError(t, resp, billing.CodeUnavailable)
	if !resp.Error.Retryable || resp.Result != nil {
		t.Fatalf("a DynamoDB failure: %+v, want a retryable error and no answer", resp)
	}
}

// Ten batches at once for one organization cross 50% and 80% of its cap
// together: each threshold is alerted once, and the spend is each record
// once, also when every batch is sent again.
func TestSpend_ConcurrentBatchesAlertOncePerThresholdAndRetriesCountOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	var logs safeBuffer
	f.svc = billing.NewService(f.svc.Config(), billing.NewKeySource(f.svc.Config(), nil), f.store, slog.New(slog.NewJSONHandler(&logs, nil)))
	f.svc.SetMetricsOutput(&strings.Builder{})
	bus := testenv.NewAlertBus(t)
	f.svc.SetAlertBus(alertbus.New(bus.Client, bus.Name))
	f.upsert(billing.UpsertRequest{})
	f.subscribe("org_cap", "tier", "starter", "email", "cap@example.com", "instance_types", []string{"gpu-a100"})
	f.ok(req("set_spend_cap", "org_cap", "amount", 1200, "currency", "usd")) // 50%: 600, 80%: 960, 100%: 1200

	run := fmt.Sprint(time.Now().UnixNano())
	batches := make([]map[string]any, 10)
	for b := range batches {
		var records []any
		for r := range 10 {
			records = append(records, usage("org_cap", "gpu-a100", 1, fmt.Sprintf("cap-%s-%d-%d", run, b, r)))
		}
		batches[b] = batch(records...)
	}
	sendAll := func() {
		var wg sync.WaitGroup
		for _, b := range batches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r := batchResult(t, f.call(b)); r.Recorded != 10 {
					t.Errorf("a batch recorded %d of 10: %+v", r.Recorded, r.Results)
				}
			}()
		}
		wg.Wait()
	}
	sendAll()
	sendAll() // every batch retried whole

	spend := f.ok(map[string]any{"action": "get_status", "org_id": "org_cap"})["spend"].(map[string]any)
	if spend["amount"] != "1024" {
		var warnings []string
		for line := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
				warnings = append(warnings, line)
			}
		}
		t.Fatalf("spend %v, want 100 minutes at 10.24 cents: 1024; warnings:\n%s", spend, strings.Join(warnings, "\n"))
	}
	alerts := map[string]int{}
	for line := range strings.SplitSeq(logs.String(), "\n") {
		var l struct {
			Msg       string `json:"msg"`
			Threshold int64  `json:"threshold"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "spend alert" {
			alerts[fmt.Sprint(l.Threshold)]++
		}
	}
	if alerts["50"] != 1 || alerts["80"] != 1 || alerts["100"] != 0 {
		t.Fatalf("alerts logged per threshold: %v, want one 50%% and one 80%%", alerts)
	}
	// What the bus delivered to the core app's queue.
	onBus := map[string]int{}
	for _, raw := range bus.Events(t) {
		var ev struct {
			AlertID   string `json:"alert_id"`
			OrgID     string `json:"org_id"`
			Threshold int64  `json:"threshold"`
			Cap       int64  `json:"cap"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil || ev.OrgID != "org_cap" || ev.Cap != 1200 || !strings.HasSuffix(ev.AlertID, fmt.Sprint(":", ev.Threshold)) {
			t.Fatalf("an alert event: %s (%v)", raw, err)
		}
		onBus[fmt.Sprint(ev.Threshold)]++
	}
	if onBus["50"] != 1 || onBus["80"] != 1 || len(onBus) != 2 {
		t.Fatalf("alerts on the bus per threshold: %v, want one 50%% and one 80%%", onBus)
	}
	sp, err := f.store.GetSpend(context.Background(), "org_cap")
	if err != nil || len(sp.Alerts) != 2 {
		t.Fatalf("the spend record's alerts: %+v %v", sp.Alerts, err)
	}
	if got := f.meteredMinutes("gpu-a100", f.mirror("org_cap").Customer.CustomerID); got != 100 {
		t.Fatalf("Stripe's meter counted %v minutes, want 100: the counter and Stripe agree", got)
	}
}

// Reconcile compares each spend counter with what Stripe's meters summed
// this period, priced the same way, and reports, never repairs, a
// difference.
func TestReconcile_ComparesEachSpendCounterWithStripesSummaries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	f.subscribe("org_sp", "tier", "starter", "email", "sp@example.com", "instance_types", []string{"gpu-a100", "cpu-1x2"})
	f.subscribe("org_idle", "tier", "starter", "email", "idle@example.com", "instance_types", []string{"gpu-a100"})
	f.ok(req("record_usage", "org_sp", "instance_type", "gpu-a100", "minutes", 10))
	f.ok(req("record_usage", "org_sp", "instance_type", "cpu-1x2", "minutes", 3))
	spendDiffs := func(rep billing.ReconcileReport) []billing.Difference {
		var out []billing.Difference
		for _, d := range rep.Differences {
			if d.Field == "spend" {
				out = append(out, d)
			}
		}
		return out
	}
	if d := spendDiffs(f.reconcile(billing.ReconcileOptions{})); len(d) != 0 {
		t.Fatalf("spend differences with every record counted: %+v", d)
	}
	// Usage sent to Stripe by hand, past the counter.
	m, err := f.store.GetProductMapping(context.Background(), "gpu-a100")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.sc().BillingMeterEvents.New(&stripe.BillingMeterEventParams{EventName: stripe.String(m.MeterEventName),
		Identifier: stripe.String(fmt.Sprint("by-hand-", time.Now().UnixNano())), Timestamp: stripe.Int64(time.Now().Unix()),
		Payload: map[string]string{"stripe_customer_id": f.mirror("org_sp").Customer.CustomerID, "value": "5"}}); err != nil {
		t.Fatal(err)
	}
	d := spendDiffs(f.reconcile(billing.ReconcileOptions{Repair: true}))
	// 10 × 10.24 + 3 × 0.0867 = 102.6601; Stripe also has 5 × 10.24 more.
	if len(d) != 1 || d[0].OrgID != "org_sp" || d[0].Mirror != "102.6601" || d[0].Stripe != "153.8601" {
		t.Fatalf("spend differences: %+v, want org_sp's 102.6601 against 153.8601", d)
	}
	if got := f.mirror("org_sp").Spend.Amount; got != "102.6601" {
		t.Fatalf("repair changed the counter to %s: spend is reported, never repaired", got)
	}
}

// An alert the bus refused stays pending on the spend record, and the next
// usage write of the organization, or reconcile, sends it once its decider
// is surely gone.
func TestSpend_AnAlertNotSentIsSentByTheNextWriteOrReconcile(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	bus := testenv.NewAlertBus(t)
	f.svc.SetAlertBus(alertbus.New(bus.Client, bus.Name+"-missing")) // refuses every event
	f.upsert(billing.UpsertRequest{})
	for _, org := range []string{"org_pa", "org_pb"} {
		f.subscribe(org, "tier", "starter", "email", org+"@example.com", "instance_types", []string{"gpu-a100"})
		f.ok(req("set_spend_cap", org, "amount", 100, "currency", "usd"))
		f.ok(req("record_usage", org, "instance_type", "gpu-a100", "minutes", 10)) // 102.4: 50, 80 and 100 at once
	}
	if got := bus.Events(t); len(got) != 0 {
		t.Fatalf("events reached the bus: %s", got)
	}
	age := func(org string) { // as if decided two minutes ago
		t.Helper()
		sp, err := f.store.GetSpend(context.Background(), org)
		if err != nil || len(sp.Alerts) != 3 || len(sp.AlertsSent) != 0 {
			t.Fatalf("%s's spend record: %+v %v, want three alerts decided and none sent", org, sp, err)
		}
		old := &types.AttributeValueMemberN{Value: fmt.Sprint(time.Now().Add(-2 * time.Minute).Unix())}
		_, err = testenv.DynamoDB(t).UpdateItem(context.Background(), &dynamodb.UpdateItemInput{TableName: aws.String(f.store.Name()),
			Key:                       map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "ORG#" + org}, "sk": &types.AttributeValueMemberS{Value: "SPEND"}},
			UpdateExpression:          aws.String("SET alerts = :a"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":a": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"50": old, "80": old, "100": old}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	f.svc.SetAlertBus(alertbus.New(bus.Client, bus.Name))
	onBus := func() map[string]int { return alertsOnBus(t, bus) }
	// Too recent: its decider may still be sending it.
	f.ok(req("record_usage", "org_pa", "instance_type", "gpu-a100", "minutes", 1))
	if got := onBus(); len(got) != 0 {
		t.Fatalf("a pending alert sent within its decider's lifetime: %v", got)
	}
	age("org_pa")
	f.ok(req("record_usage", "org_pa", "instance_type", "gpu-a100", "minutes", 1))
	f.ok(req("record_usage", "org_pa", "instance_type", "gpu-a100", "minutes", 1))
	if got := onBus(); fmt.Sprint(got) != "map[org_pa:100:1 org_pa:50:1 org_pa:80:1]" {
		t.Fatalf("after the next writes: %v, want org_pa's three alerts once each", got)
	}
	age("org_pb")
	f.reconcile(billing.ReconcileOptions{})
	f.reconcile(billing.ReconcileOptions{})
	if got := onBus(); fmt.Sprint(got) != "map[org_pb:100:1 org_pb:50:1 org_pb:80:1]" {
		t.Fatalf("after reconcile: %v, want org_pb's three alerts once each", got)
	}
}

// alertsOnBus counts the alert events the bus delivered so far, by
// "organization:threshold".
func alertsOnBus(t *testing.T, bus *testenv.AlertBus) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, raw := range bus.Events(t) {
		var ev struct {
			OrgID     string `json:"org_id"`
			Threshold int64  `json:"threshold"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatalf("an alert event: %s (%v)", raw, err)
		}
		got[fmt.Sprint(ev.OrgID, ":", ev.Threshold)]++
	}
	return got
}
