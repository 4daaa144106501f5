package billing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/billing/alertbus"
)

// batchResult decodes a record_usage_batch answer.
func batchResult(t testing.TB, resp billing.Response) billing.UsageBatchResult {
	t.Helper()
	if !resp.OK {
		t.Fatalf("record_usage_batch: %+v", resp.Error)
	}
	raw, _ := json.Marshal(resp.Result)
	var r billing.UsageBatchResult
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func usage(org, instanceType string, minutes int, requestID string) map[string]any {
	return map[string]any{"org_id": org, "instance_type": instanceType, "minutes": minutes, "request_id": requestID}
}

func batch(records ...any) map[string]any {
	return map[string]any{"action": "record_usage_batch", "records": records}
}

func TestRecordUsageBatch_EachRecordOnItsOwnAndEachCountedOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	a := f.subscribe("org_ba", "tier", "starter", "email", "a@example.com", "instance_types", []string{"gpu-a100"})
	b := f.subscribe("org_bb", "tier", "starter", "email", "b@example.com", "instance_types", []string{"gpu-t4"})
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	id := func(n int) string { return fmt.Sprintf("u-%s-%d", run, n) }
	req := batch(
		usage("org_ba", "gpu-a100", 10, id(1)),
		usage("org_bb", "gpu-t4", 20, id(2)),
		usage("org_ba", "gpu-t4", 5, id(3)),       // not on org_ba's subscription
		usage("org_nobody", "gpu-t4", 5, id(4)),   // no subscription
		usage("org_ba", "gpu-a100", -1, id(5)),    // invalid
		usage("org_ba", "gpu-a100", 10, id(1)),    // the first again, within the batch
		usage("org_bb", "gpu-t4", 21, id(2)),      // its request_id with other minutes
		5,                                         // not a record
		usage("org_ba", "no-such-type", 1, id(6)), // not in the catalog
	)
	want := []string{"recorded", "recorded", "not_found", "not_found", "invalid_request", "recorded", "conflict", "invalid_request", "invalid_request"}
	check := func(label string, r billing.UsageBatchResult) {
		t.Helper()
		if len(r.Results) != len(want) {
			t.Fatalf("%s: %d results for %d records", label, len(r.Results), len(want))
		}
		for i, o := range r.Results {
			got := "recorded"
			if !o.Recorded {
				if o.Error == nil {
					t.Fatalf("%s: record %d neither recorded nor failed", label, i)
				}
				got = string(o.Error.Code)
			}
			if got != want[i] {
				t.Errorf("%s: record %d: %s (%+v), want %s", label, i, got, o.Error, want[i])
			}
		}
		if r.Recorded != 3 || r.Failed != 6 {
			t.Errorf("%s: recorded %d, failed %d; want 3 and 6", label, r.Recorded, r.Failed)
		}
	}
	f.requests()
	check("first", batchResult(t, f.call(req)))
	dynamo, stripeReqs := f.requests()
	t.Logf("a batch of %d records: %d DynamoDB requests, %d Stripe requests", len(want), dynamo, stripeReqs)
	if dynamo != 2 || stripeReqs != 2 {
		t.Fatalf("a batch made %d DynamoDB and %d Stripe requests, want 2 (one read, one write) and 2 (one per new record)", dynamo, stripeReqs)
	}
	// Retried whole: the same answers, from the table, nothing sent again.
	check("retried", batchResult(t, f.call(req)))
	if _, stripeReqs := f.requests(); stripeReqs != 0 {
		t.Fatalf("the retried batch made %d Stripe requests", stripeReqs)
	}
	// Split differently: the first record alone, as record_usage, replays.
	single := map[string]any{"action": "record_usage", "org_id": "org_ba", "request_id": id(1), "instance_type": "gpu-a100", "minutes": 10}
	if r := f.ok(single); r["recorded"] != true {
		t.Fatalf("record_usage of a batch's record: %v", r)
	}
	if got := f.meteredMinutes("gpu-a100", *strPtr(a["customer_id"])); got != 10 {
		t.Fatalf("org_ba metered %v, want 10 once", got)
	}
	if got := f.meteredMinutes("gpu-t4", *strPtr(b["customer_id"])); got != 20 {
		t.Fatalf("org_bb metered %v, want 20 once", got)
	}
	// A record_usage's request_id in a later batch counts once too, and
	// the request_id is kept for 35 days.
	f.ok(map[string]any{"action": "record_usage", "org_id": "org_bb", "request_id": id(7), "instance_type": "gpu-t4", "minutes": 3})
	r := batchResult(t, f.call(batch(usage("org_bb", "gpu-t4", 3, id(7)))))
	if !r.Results[0].Recorded {
		t.Fatalf("a record_usage's request_id in a batch: %+v", r.Results[0].Error)
	}
	if got := f.meteredMinutes("gpu-t4", *strPtr(b["customer_id"])); got != 23 {
		t.Fatalf("org_bb metered %v, want 23", got)
	}
	for _, rid := range []string{id(1), id(7)} {
		out, err := f.db.Next.GetItem(context.Background(), &dynamodb.GetItemInput{TableName: aws.String(f.store.Name()),
			Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "REQ#" + rid}, "sk": &types.AttributeValueMemberS{Value: "REQUEST"}}})
		if err != nil {
			t.Fatal(err)
		}
		exp, _ := out.Item["expires_at"].(*types.AttributeValueMemberN)
		n, _ := strconv.ParseInt(exp.Value, 10, 64)
		if left := time.Until(time.Unix(n, 0)); left < 34*24*time.Hour || left > 35*24*time.Hour+time.Minute {
			t.Fatalf("request_id %s is kept %v, want 35 days", rid, left)
		}
	}
}

func TestRecordUsageBatch_RefusesAMalformedRequestWhole(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	many := make([]any, billing.MaxUsageBatch+1)
	for i := range many {
		many[i] = usage("o", "gpu-t4", 1, fmt.Sprintf("r%d", i))
	}
	for name, r := range map[string]map[string]any{
		"no records":       {"action": "record_usage_batch"},
		"empty":            batch(),
		"not an array":     {"action": "record_usage_batch", "records": "x"},
		"over 500 records": batch(many...),
	} {
		resp := f.call(r)
		if resp.OK || resp.Error.Code != billing.CodeInvalidRequest {
			t.Errorf("%s: %+v, want invalid_request", name, resp)
		}
	}
}

func TestRecordUsageBatch_BacksOffOn429AndAnswersUnavailableForWhatMissesTheDeadline(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	st := f.subscribe("org_bl", "tier", "starter", "email", "l@example.com", "instance_types", []string{"gpu-a10g"})
	customer := *strPtr(st["customer_id"])
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	var records []any
	for i := range 30 {
		records = append(records, usage("org_bl", "gpu-a10g", 1, fmt.Sprintf("d-%s-%d", run, i)))
	}
	// Stripe refuses the first three sends with 429: the pool backs off
	// and every record is still recorded.
	f.stripe.InjectFault(stripelocal.Fault{Kind: "429", Count: 3, Path: "POST /v1/billing/meter_events"})
	start := time.Now()
	if r := batchResult(t, f.call(batch(records[:10]...))); r.Recorded != 10 {
		t.Fatalf("after 429s: %d of 10 recorded: %+v", r.Recorded, r.Results)
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("three 429s and no back-off: the batch took %v", took)
	}
	// Slow Stripe and a deadline: what is not sent in time is unavailable
	// (retryable), and the retry records it, each once.
	f.stripe.InjectFault(stripelocal.Fault{Kind: "delay", DelayMS: 400, Count: 100, Path: "POST /v1/billing/meter_events"})
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	r := batchResult(t, f.callWith(ctx, batch(records[10:]...)))
	unavailable := 0
	for _, o := range r.Results {
		if !o.Recorded && o.Error.Code == billing.CodeUnavailable && o.Error.Retryable {
			unavailable++
		}
	}
	t.Logf("with a 1.5 s deadline and 400 ms per send: %d recorded, %d unavailable", r.Recorded, unavailable)
	if r.Recorded == 0 || unavailable == 0 || r.Recorded+unavailable != 20 {
		t.Fatalf("under a deadline: %d recorded, %d unavailable of 20", r.Recorded, unavailable)
	}
	if r := batchResult(t, f.call(batch(records...))); r.Recorded != 30 {
		t.Fatalf("the retry recorded %d of 30: %+v", r.Recorded, r.Results)
	}
	if got := f.meteredMinutes("gpu-a10g", customer); got != 30 {
		t.Fatalf("metered %v, want 30: each record once", got)
	}
}

// A batch stores each segment's answers and spend once its meter events
// are sent, while the next segments are sent: the first record's answer is
// in the table before the batch answers. An organization whose records
// span every segment is counted exactly, once per record, and crosses each
// threshold of its cap with one alert although the crossings come in
// different segments.
func TestRecordUsageBatch_StoresEachSegmentWhileTheNextAreSent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	cfg := f.svc.Config()
	cfg.UsageRate = 1000
	f.svc = billing.NewService(cfg, billing.NewKeySource(cfg, nil), f.store, discardLogger())
	f.svc.SetMetricsOutput(io.Discard)
	bus := testenv.NewAlertBus(t)
	f.svc.SetAlertBus(alertbus.New(bus.Client, bus.Name))
	f.upsert(billing.UpsertRequest{})
	orgs := []string{"org_sg_a", "org_sg_b", "org_sg_c"}
	customers := map[string]string{}
	for _, org := range orgs {
		customers[org] = *strPtr(f.subscribe(org, "tier", "starter", "email", org+"@example.com", "instance_types", []string{"gpu-a100"})["customer_id"])
	}
	f.ok(req("set_spend_cap", orgs[0], "amount", 1000, "currency", "usd")) // 50% at 500, 80% at 800, 100% at 1000
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	var records []any
	for i := range 300 { // six segments; each organization's records in all of them
		records = append(records, usage(orgs[i%len(orgs)], "gpu-a100", 1, fmt.Sprintf("sg-%s-%d", run, i)))
	}
	first := map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "REQ#" + fmt.Sprintf("sg-%s-0", run)}, "sk": &types.AttributeValueMemberS{Value: "REQUEST"}}
	meterEvents := func() int {
		n := 0
		for k, v := range f.stripe.Counts() {
			if strings.Contains(k, "/v1/billing/meter_events") {
				n += v
			}
		}
		return n
	}
	f.stripe.ResetCounts()
	f.stripe.InjectFault(stripelocal.Fault{Kind: "delay", DelayMS: 20, Count: 1 << 30})
	answered := make(chan billing.Response)
	go func() { answered <- f.call(batch(records...)) }()
	sentWhenStored := -1 // the meter events Stripe had received when the first answer was seen stored
	var resp billing.Response
	for waiting := true; waiting; {
		select {
		case resp = <-answered:
			waiting = false
		case <-time.After(5 * time.Millisecond):
			if sentWhenStored < 0 {
				sent := meterEvents()
				out, err := f.db.Next.GetItem(context.Background(), &dynamodb.GetItemInput{TableName: aws.String(f.store.Name()), Key: first, ConsistentRead: aws.Bool(true)})
				if err == nil && out.Item != nil {
					sentWhenStored = sent
				}
			}
		}
	}
	f.stripe.ClearFaults()
	if r := batchResult(t, resp); r.Recorded != len(records) {
		t.Fatalf("recorded %d of %d", r.Recorded, len(records))
	}
	if sentWhenStored < 0 || sentWhenStored >= len(records) {
		t.Fatalf("the first record's answer was seen stored when Stripe had %d of %d meter events: after the whole batch was sent", sentWhenStored, len(records))
	}
	t.Logf("the first record's answer was stored when Stripe had %d of %d meter events", sentWhenStored, len(records))
	for _, org := range orgs {
		if got := f.mirror(org).Spend.Amount; got != "1024" { // 100 minutes × 10.24
			t.Errorf("%s's spend is %s, want 1024", org, got)
		}
		if got := f.meteredMinutes("gpu-a100", customers[org]); got != 100 {
			t.Errorf("%s metered %v minutes, want 100", org, got)
		}
	}
	alerts := alertsOnBus(t, bus)
	if want := map[string]int{orgs[0] + ":50": 1, orgs[0] + ":80": 1, orgs[0] + ":100": 1}; !reflect.DeepEqual(alerts, want) {
		t.Fatalf("alerts %v, want one per threshold of %s", alerts, orgs[0])
	}
}
