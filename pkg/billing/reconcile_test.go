package billing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

func TestReconcile_ReportsEachDifferenceAndRepairClearsThem(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.gatewayFor()
	f.upsert(billing.UpsertRequest{})
	f.subscribed("org_tier", "org_lost", "org_late", "org_ok")
	if rep := f.reconcile(billing.ReconcileOptions{}); rep.Organizations != 4 || len(rep.Differences) != 0 {
		t.Fatalf("after subscribing through the webhook: %d orgs, differences %+v", rep.Organizations, rep.Differences)
	}
	// Drift: webhooks held (an outage), then changes in Stripe.
	f.stripe.SetDelivery(stripelocal.DeliveryMode{Mode: "hold"})
	sc := f.sc()
	business, _ := f.store.GetProductMapping(context.Background(), "business")
	sub := f.stripeSub(f.mirror("org_tier").Subscription.SubscriptionID)
	var tierItem string
	for _, it := range sub.Items.Data {
		if it.Price.Metadata["billing_key"] == "starter" {
			tierItem = it.ID
		}
	}
	if _, err := sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{Items: []*stripe.SubscriptionItemsParams{{ID: stripe.String(tierItem), Price: stripe.String(business.PriceID)}}}); err != nil {
		t.Fatal(err)
	}
	late, err := sc.Customers.New(&stripe.CustomerParams{Metadata: map[string]string{"org_id": "org_new", "billing_namespace": ns}})
	if err != nil {
		t.Fatal(err)
	}
	// A lost write: the mirror of org_lost no longer has its subscription.
	if _, err := testenv.DynamoDB(t).DeleteItem(context.Background(), &dynamodb.DeleteItemInput{TableName: aws.String(f.store.Name()), Key: map[string]ddbtypes.AttributeValue{
		"pk": &ddbtypes.AttributeValueMemberS{Value: "ORG#org_lost"}, "sk": &ddbtypes.AttributeValueMemberS{Value: "SUBSCRIPTION"}}}); err != nil {
		t.Fatal(err)
	}
	// A failed renewal nobody heard of makes org_late past due.
	f.stripe.SetPaymentMode(stripelocal.PayNothing) // the renewal waits to be settled
	lateSub := f.mirror("org_late").Subscription.SubscriptionID
	f.stripe.Advance(32 * 24 * time.Hour)
	if err := f.stripe.Settle(lateSub, "failed"); err != nil {
		t.Fatal(err)
	}

	orgs := []string{"org_tier", "org_lost", "org_late", "org_ok", "org_new"}
	mirrors := func() []table.Mirror {
		var out []table.Mirror
		for _, org := range orgs {
			out = append(out, f.mirror(org))
		}
		return out
	}
	before := mirrors()
	rep := f.reconcile(billing.ReconcileOptions{})
	if after := mirrors(); !reflect.DeepEqual(before, after) {
		t.Fatal("a reconcile without repair changed the mirror")
	}
	if d := fields(rep.Differences, "org_tier"); d["tier"].Mirror != "starter" || d["tier"].Stripe != "business" || d["items"].Field == "" {
		t.Errorf("org_tier: %+v, want tier starter→business and items", d)
	}
	if d := fields(rep.Differences, "org_lost"); d["subscription"].Mirror != "" || d["subscription"].Stripe == "" {
		t.Errorf("org_lost: %+v, want the missing subscription", d)
	}
	if d := fields(rep.Differences, "org_new"); d["customer"].Stripe != late.ID || d["customer"].Mirror != "" {
		t.Errorf("org_new: %+v, want the unmapped customer", d)
	}
	if d := fields(rep.Differences, "org_late"); d["status"].Stripe != "past_due" || d["delinquent"].Stripe != "true" || d["delinquent"].Mirror != "false" {
		t.Errorf("org_late: %+v, want past_due and delinquent", d)
	}
	if d := fields(rep.Differences, "org_ok"); len(d) != 2 || d["current_period_end"].Field == "" || d["latest_invoice"].Field == "" {
		// org_ok renewed during the outage: its period and invoice moved.
		t.Errorf("org_ok: %+v, want only its renewed period and new invoice", d)
	}

	rep = f.reconcile(billing.ReconcileOptions{Repair: true})
	if rep.Repaired != 5 || len(rep.Remaining) != 0 {
		t.Fatalf("repair: repaired %d orgs, remaining %+v", rep.Repaired, rep.Remaining)
	}
	if m := f.mirror("org_late"); !m.Subscription.Delinquent() {
		t.Error("org_late is not delinquent after the repair")
	}
	if rep := f.reconcile(billing.ReconcileOptions{}); len(rep.Differences) != 0 {
		t.Fatalf("after repair: %+v", rep.Differences)
	}
	// The held webhooks arrive after all: older than the repair, they
	// change nothing.
	f.stripe.SetDelivery(stripelocal.DeliveryMode{Mode: "ordered"})
	f.stripe.Release("shuffled")
	f.stripe.WaitDeliveries()
	if rep := f.reconcile(billing.ReconcileOptions{}); len(rep.Differences) != 0 {
		t.Fatalf("after the late webhooks: %+v", rep.Differences)
	}
}

func TestReconcile_ReplayRecoversEventsWhoseDeliveriesFailed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	// The only endpoint is down: every delivery fails until Stripe gives up.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + l.Addr().String() + "/integrations/stripe/webhooks"
	l.Close()
	f.stripe.AddWebhookEndpoint(down, []string{fixtureSecret}, nil, "")
	f.subscribed("org_1", "org_2")
	f.stripe.SetPaymentMode(stripelocal.PayNothing) // the renewal waits to be settled
	sub2 := f.stripeSub(f.mirror("org_2").Subscription.SubscriptionID)
	f.stripe.Advance(32 * 24 * time.Hour)
	if err := f.stripe.Settle(sub2.ID, "failed"); err != nil {
		t.Fatal(err)
	}
	f.stripe.WaitDeliveries()
	// Another deployment's customer, undelivered too.
	if _, err := f.sc().Customers.New(&stripe.CustomerParams{Metadata: map[string]string{"org_id": "org_x", "billing_namespace": "someone-else"}}); err != nil {
		t.Fatal(err)
	}
	f.stripe.WaitDeliveries()
	if rep := f.reconcile(billing.ReconcileOptions{}); len(fields(rep.Differences, "org_2")) == 0 {
		t.Fatal("the missed renewal shows no difference")
	}

	rep := f.reconcile(billing.ReconcileOptions{Replay: true})
	if r := rep.Replay; r == nil || r.Processed == 0 || r.Failed != 0 || r.Ignored == 0 {
		t.Fatalf("replay: %+v, want events processed, another deployment's ignored, none failed", rep.Replay)
	}
	if len(rep.Differences) != 0 {
		t.Fatalf("after the replay: %+v", rep.Differences)
	}
	if m := f.mirror("org_2"); m.Subscription.Status != "past_due" || !m.Subscription.Delinquent() {
		t.Fatalf("org_2 after replay: %+v", m.Subscription)
	}
	// Replaying again finds the same events, already mirrored.
	again := f.reconcile(billing.ReconcileOptions{Replay: true})
	if again.Replay.Processed != 0 || again.Replay.Duplicate == 0 {
		t.Fatalf("second replay: %+v, want only duplicates", again.Replay)
	}
}

func TestReconcile_ActionLogsAndCountsDrift(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.gatewayFor()
	f.upsert(billing.UpsertRequest{})
	f.subscribed("org_1")
	if _, err := testenv.DynamoDB(t).DeleteItem(context.Background(), &dynamodb.DeleteItemInput{TableName: aws.String(f.store.Name()), Key: map[string]ddbtypes.AttributeValue{
		"pk": &ddbtypes.AttributeValueMemberS{Value: "ORG#org_1"}, "sk": &ddbtypes.AttributeValueMemberS{Value: "SUBSCRIPTION"}}}); err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	f.svc.SetMetricsOutput(&metrics)
	// The daily schedule's input, exactly as template.yaml sends it.
	out := f.ok(map[string]any{"action": "reconcile", "replay": true})
	if out["organizations"] != float64(1) || len(out["differences"].([]any)) != 1 || out["repaired"] != float64(0) {
		t.Fatalf("reconcile action answered %v", out)
	}
	// The reconcile's line; subscribe's own (its Stripe budget) follows.
	var line map[string]any
	first, _, _ := strings.Cut(metrics.String(), "\n")
	if err := json.Unmarshal([]byte(first), &line); err != nil {
		t.Fatalf("metrics line %q: %v", metrics.String(), err)
	}
	if line["Function"] != "reconcile" || line["ReconcileDifferences"] != float64(1) || line["ReconcileCompleted"] != float64(1) ||
		line["ReconcileStripeRequests"] != out["step"].(map[string]any)["stripe_requests"] || line["ReconcileStripeRequests"].(float64) < 2 ||
		line["ReconcileDynamoDBRequests"].(float64) < 4 || line["_aws"] == nil {
		t.Fatalf("metrics %v", line)
	}
	wantError(t, f.call(map[string]any{"action": "reconcile", "repair": "yes"}), billing.CodeInvalidRequest)
}
