package billing_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

func TestWebhook_NewEventIsMirroredWithOneDynamoDBRequest(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.db.Reset()
	payload := eventJSON("evt_1", "customer.subscription.created", 100, stripe.APIVersion, subscriptionObject("sub_1", "org_1", "active", false, "business", "gpu-t4"))
	wantStatus(t, f.send(payload), 200, `{"status":"processed"}`)
	reads, writes := f.db.Reset()
	stripeCalls := len(f.stripe.Counts())
	t.Logf("new event of ours: %d DynamoDB requests, %d Stripe requests", reads+writes, stripeCalls)
	if reads+writes != 1 || stripeCalls != 0 {
		t.Fatalf("new event: %d DynamoDB and %d Stripe requests, want 1 and 0", reads+writes, stripeCalls)
	}
	m := f.mirror("org_1")
	s := m.Subscription
	if s == nil || s.SubscriptionID != "sub_1" || s.Status != "active" || s.Tier != "business" || len(s.Items) != 2 || s.CurrentPeriodEnd != 5000 {
		t.Fatalf("mirror %+v", s)
	}
	f.db.Reset() // the test's own read

	wantStatus(t, f.send(payload), 200, `{"status":"duplicate"}`)
	reads, writes = f.db.Reset()
	t.Logf("duplicate: %d DynamoDB requests, %d Stripe requests", reads+writes, len(f.stripe.Counts()))
	if reads+writes != 1 {
		t.Fatalf("duplicate: %d DynamoDB requests, want 1", reads+writes)
	}
	older := eventJSON("evt_0", "customer.subscription.created", 90, stripe.APIVersion, subscriptionObject("sub_1", "org_1", "incomplete", false, "business"))
	wantStatus(t, f.send(older), 200, `{"status":"ignored"}`)
	reads, writes = f.db.Reset()
	t.Logf("stale: %d DynamoDB requests, %d Stripe requests", reads+writes, len(f.stripe.Counts()))
	if reads+writes != 1 || f.mirror("org_1").Subscription.Status != "active" {
		t.Fatalf("stale: %d DynamoDB requests; status %s", reads+writes, f.mirror("org_1").Subscription.Status)
	}
}

func TestWebhook_DuplicateDeliveredTwentyTimesConcurrentlyHasOneEffect(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	payload := eventJSON("evt_dup", "customer.subscription.updated", 100, stripe.APIVersion, subscriptionObject("sub_1", "org_1", "active", false, "starter"))
	sig := signed(payload, fixtureSecret, time.Now())
	var wg sync.WaitGroup
	bodies := make([]string, 20)
	codes := make([]int, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := f.deliver(payload, sig)
			codes[i], bodies[i] = resp.StatusCode, resp.Body
		}()
	}
	wg.Wait()
	processed := 0
	for i := range 20 {
		if codes[i] != 200 {
			t.Fatalf("delivery %d answered %d %s", i, codes[i], bodies[i])
		}
		if bodies[i] == `{"status":"processed"}` {
			processed++
		} else if bodies[i] != `{"status":"duplicate"}` {
			t.Fatalf("delivery %d answered %s", i, bodies[i])
		}
	}
	if processed != 1 {
		t.Fatalf("%d deliveries processed, want exactly 1", processed)
	}
	if s := f.mirror("org_1").Subscription; s == nil || s.Version != 1 {
		t.Fatalf("the mirror is %+v, want written exactly once", s)
	}
}

func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

func TestWebhook_EveryPermutationOfALifecycleEndsInTheRightState(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	perms := permutations(4)
	if len(perms) != 24 {
		t.Fatalf("%d permutations", len(perms))
	}
	for n, perm := range perms {
		org := fmt.Sprintf("org_p%02d", n)
		lifecycle := [][]byte{
			eventJSON(org+"_1", "customer.subscription.created", 100, stripe.APIVersion, subscriptionObject("sub_"+org, org, "incomplete", false, "starter")),
			eventJSON(org+"_2", "customer.subscription.updated", 101, stripe.APIVersion, subscriptionObject("sub_"+org, org, "active", false, "starter", "gpu-t4")),
			eventJSON(org+"_3", "customer.subscription.updated", 102, stripe.APIVersion, subscriptionObject("sub_"+org, org, "active", true, "business", "gpu-t4")),
			eventJSON(org+"_4", "customer.subscription.deleted", 103, stripe.APIVersion, subscriptionObject("sub_"+org, org, "canceled", true, "business", "gpu-t4")),
		}
		for _, i := range perm {
			if resp := f.send(lifecycle[i]); resp.StatusCode != 200 {
				t.Fatalf("perm %v event %d: %d %s", perm, i, resp.StatusCode, resp.Body)
			}
		}
		s := f.mirror(org).Subscription
		if s.Status != "canceled" || !s.CancelAtPeriodEnd || s.Tier != "business" || len(s.Items) != 2 || s.SourceTime != 103 {
			t.Fatalf("order %v ended in %+v", perm, s)
		}
	}
}

func TestWebhook_SameSecondTieRefetchesFromStripe(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	sub := f.liveSubscription("org_1")
	first := eventJSON("evt_a", "customer.subscription.updated", 100, stripe.APIVersion, subscriptionObject(sub.ID, "org_1", "past_due", false, "business"))
	wantStatus(t, f.send(first), 200, `{"status":"processed"}`)
	f.db.Reset()
	// Same second, a different snapshot: which is newer is unknown, so
	// Stripe's current state (active) is stored.
	second := eventJSON("evt_b", "customer.subscription.updated", 100, stripe.APIVersion, subscriptionObject(sub.ID, "org_1", "unpaid", false, "business"))
	wantStatus(t, f.send(second), 200, `{"status":"processed"}`)
	reads, writes := f.db.Reset()
	counts := f.stripe.Counts()
	t.Logf("same-second tie: %d DynamoDB requests, Stripe %v", reads+writes, counts)
	if counts["GET /v1/subscriptions/{id}"] != 1 {
		t.Fatalf("Stripe requests %v, want one subscription retrieve", counts)
	}
	if s := f.mirror("org_1").Subscription; s.Status != "active" || s.Tier != "business" {
		t.Fatalf("after the tie the mirror says %s/%s, want Stripe's active/business", s.Status, s.Tier)
	}
}

func TestWebhook_APIVersionMismatchTakesTheRefetchPath(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	sub := f.liveSubscription("org_1")
	// The payload is at another version and says something else entirely;
	// it must not be trusted.
	payload := eventJSON("evt_v", "customer.subscription.updated", 100, "2025-03-31.basil", subscriptionObject(sub.ID, "org_1", "unpaid", true, "starter"))
	wantStatus(t, f.send(payload), 200, `{"status":"processed"}`)
	if c := f.stripe.Counts(); c["GET /v1/subscriptions/{id}"] != 1 {
		t.Fatalf("Stripe requests %v, want one re-fetch", c)
	}
	s := f.mirror("org_1").Subscription
	if s.Status != "active" || s.Tier != "business" || s.CancelAtPeriodEnd {
		t.Fatalf("mirror %+v: want Stripe's state, not the payload's", s)
	}
}

func TestWebhook_RotationAcceptsThePreviousSecretAndRefreshesOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	secretID := createSecret(t, `{"api_key":"sk_test_rot","publishable_key":"pk_test_rot","webhook_secret":"whsec_new","webhook_secret_previous":"whsec_old"}`)
	counting := &countingSecrets{SecretsClient: testenv.SecretsManager(t)}
	cfg := f.svc.Config()
	cfg.StripeSecretID, cfg.Overrides = secretID, billing.Keys{}
	svc := billing.NewService(cfg, billing.NewKeySource(cfg, counting), f.store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	svc.SetMetricsOutput(io.Discard)
	deliver := func(payload []byte, secret string) events.APIGatewayV2HTTPResponse {
		resp, _ := svc.HandleWebhook(context.Background(), events.APIGatewayV2HTTPRequest{Body: string(payload),
			Headers: map[string]string{"Stripe-Signature": signed(payload, secret, time.Now())}})
		return resp
	}
	for i, secret := range []string{"whsec_new", "whsec_old"} {
		p := eventJSON(fmt.Sprintf("evt_r%d", i), "customer.subscription.updated", int64(100+i), stripe.APIVersion, subscriptionObject("sub_1", "org_1", "active", false, "starter"))
		wantStatus(t, deliver(p, secret), 200, `{"status":"processed"}`)
	}
	// Stripe starts signing with a secret the cache does not know yet.
	putSecret(t, secretID, `{"api_key":"sk_test_rot","publishable_key":"pk_test_rot","webhook_secret":"whsec_newer","webhook_secret_previous":"whsec_new"}`)
	p := eventJSON("evt_r9", "customer.subscription.updated", 200, stripe.APIVersion, subscriptionObject("sub_1", "org_1", "past_due", false, "starter"))
	wantStatus(t, deliver(p, "whsec_newer"), 200, `{"status":"processed"}`)
	if got := counting.calls.Load(); got != 2 {
		t.Fatalf("GetSecretValue calls = %d, want 2 (the first read and one refresh)", got)
	}
	// A forged signature right after does not cause another read.
	wantStatus(t, deliver(p, "whsec_forged"), 400, "")
	if got := counting.calls.Load(); got != 2 {
		t.Fatalf("a bad signature re-read the secret again: %d calls", got)
	}
}

func TestWebhook_TamperedExpiredAndUnsignedDeliveriesAreRejected(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	payload := eventJSON("evt_x", "customer.subscription.created", 100, stripe.APIVersion, subscriptionObject("sub_1", "org_1", "active", false, "starter"))
	sig := signed(payload, fixtureSecret, time.Now())
	tampered := bytes.Replace(payload, []byte(`"active"`), []byte(`"canceled"`), 1)
	cases := map[string]events.APIGatewayV2HTTPResponse{
		"tampered":     f.deliver(tampered, sig),
		"expired":      f.deliver(payload, signed(payload, fixtureSecret, time.Now().Add(-301*time.Second))),
		"unsigned":     f.deliver(payload, ""),
		"wrong secret": f.deliver(payload, signed(payload, "whsec_other", time.Now())),
		"garbage":      f.deliver(payload, "t=abc,v1=zz"),
	}
	for name, resp := range cases {
		if resp.StatusCode != 400 || strings.Contains(resp.Body, "signature") || strings.Contains(resp.Body, "whsec") {
			t.Errorf("%s: %d %s, want a bare 400", name, resp.StatusCode, resp.Body)
		}
	}
	if m := f.mirror("org_1"); m.Subscription != nil {
		t.Fatal("a rejected delivery was written")
	}
}

func TestWebhook_Base64BodyIsAccepted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	payload := eventJSON("evt_b64", "customer.subscription.created", 100, stripe.APIVersion, subscriptionObject("sub_1", "org_1", "active", false, "starter"))
	resp, _ := f.svc.HandleWebhook(context.Background(), events.APIGatewayV2HTTPRequest{
		Body: base64.StdEncoding.EncodeToString(payload), IsBase64Encoded: true,
		Headers: map[string]string{"STRIPE-SIGNATURE": signed(payload, fixtureSecret, time.Now())},
	})
	wantStatus(t, resp, 200, `{"status":"processed"}`)
}

func TestWebhook_OversizedBodyGets413(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	big := bytes.Repeat([]byte("x"), billing.MaxWebhookBody+1)
	wantStatus(t, f.deliver(big, signed(big, fixtureSecret, time.Now())), 413, "")
	resp, _ := f.svc.HandleWebhook(context.Background(), events.APIGatewayV2HTTPRequest{Body: base64.StdEncoding.EncodeToString(big), IsBase64Encoded: true})
	wantStatus(t, resp, 413, "")
}

func TestWebhook_ForeignNamespaceIsIgnoredWithoutAWrite(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.db.Reset()
	obj := subscriptionObject("sub_f", "org_f", "active", false, "starter")
	obj["metadata"] = map[string]any{"org_id": "org_f", "billing_namespace": "someone-else"}
	wantStatus(t, f.send(eventJSON("evt_f", "customer.subscription.created", 100, stripe.APIVersion, obj)), 200, `{"status":"ignored"}`)
	reads, writes := f.db.Reset()
	t.Logf("foreign (by metadata): %d DynamoDB requests", reads+writes)
	if reads+writes != 0 {
		t.Fatalf("a foreign event made %d DynamoDB requests", reads+writes)
	}
	// No metadata and an unknown customer: one lookup, then ignored.
	obj["metadata"] = map[string]any{}
	wantStatus(t, f.send(eventJSON("evt_g", "customer.subscription.created", 100, stripe.APIVersion, obj)), 200, `{"status":"ignored"}`)
	if _, writes := f.db.Reset(); writes != 0 {
		t.Fatal("an unknown customer's event was written")
	}
	wantStatus(t, f.send(eventJSON("evt_h", "charge.succeeded", 100, stripe.APIVersion, map[string]any{"id": "ch_1"})), 200, `{"status":"ignored"}`)
}

func TestWebhook_KnownCustomerWithoutMetadataIsOurs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	if err := f.store.CreateCustomer(context.Background(), table.Customer{OrgID: "org_k", CustomerID: "cus_org_k"}); err != nil {
		t.Fatal(err)
	}
	obj := subscriptionObject("sub_k", "org_k", "active", false, "starter")
	obj["metadata"] = map[string]any{}
	wantStatus(t, f.send(eventJSON("evt_k", "customer.subscription.created", 100, stripe.APIVersion, obj)), 200, `{"status":"processed"}`)
	if s := f.mirror("org_k").Subscription; s == nil || s.SubscriptionID != "sub_k" {
		t.Fatalf("mirror %+v", s)
	}
}

func TestWebhook_LivemodeMismatchIsRejected(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	var ev map[string]any
	_ = json.Unmarshal(eventJSON("evt_l", "customer.subscription.created", 100, stripe.APIVersion, subscriptionObject("sub_1", "org_1", "active", false, "starter")), &ev)
	ev["livemode"] = true
	payload, _ := json.Marshal(ev)
	wantStatus(t, f.send(payload), 400, "")
	if f.mirror("org_1").Subscription != nil {
		t.Fatal("a live-mode event was written with a test key")
	}
}

func TestWebhook_NoWebhookSecretFailsClosedWith503(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	cfg := f.svc.Config()
	cfg.Overrides.WebhookSecret = ""
	svc := billing.NewService(cfg, billing.NewKeySource(cfg, nil), f.store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	svc.SetMetricsOutput(io.Discard)
	payload := eventJSON("evt_n", "customer.subscription.created", 100, stripe.APIVersion, subscriptionObject("sub_1", "org_1", "active", false, "starter"))
	resp, _ := svc.HandleWebhook(context.Background(), events.APIGatewayV2HTTPRequest{Body: string(payload), Headers: map[string]string{"stripe-signature": "t=1,v1=00"}})
	wantStatus(t, resp, 503, "")
	if f.mirror("org_1").Subscription != nil {
		t.Fatal("processed without a secret")
	}
}

func TestWebhook_DynamoDBFailureAnswers500AndTheRetryConverges(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	// The next transaction fails as a throttled DynamoDB's would, after the
	// SDK's retries.
	var failed atomic.Bool
	fdb := &testenv.DB{Next: testenv.DynamoDB(t), Intercept: func(op string) (bool, error) {
		if op == "TransactWriteItems" && !failed.Swap(true) {
			return false, &ddbtypes.ProvisionedThroughputExceededException{}
		}
		return false, nil
	}}
	svc := billing.NewService(f.svc.Config(), billing.NewKeySource(f.svc.Config(), nil), table.New(fdb, f.store.Name()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	svc.SetMetricsOutput(io.Discard)
	payload := eventJSON("evt_d", "customer.subscription.created", 100, stripe.APIVersion, subscriptionObject("sub_1", "org_1", "active", false, "starter"))
	sig := signed(payload, fixtureSecret, time.Now())
	req := events.APIGatewayV2HTTPRequest{Body: string(payload), Headers: map[string]string{"stripe-signature": sig}}
	resp, _ := svc.HandleWebhook(context.Background(), req)
	wantStatus(t, resp, 500, "")
	if strings.Contains(resp.Body, "Throttl") || strings.Contains(resp.Body, "DynamoDB") {
		t.Fatalf("the 500 leaks internals: %s", resp.Body)
	}
	if f.mirror("org_1").Subscription != nil {
		t.Fatal("a failed delivery left a write")
	}
	resp, _ = svc.HandleWebhook(context.Background(), req) // Stripe's retry
	wantStatus(t, resp, 200, `{"status":"processed"}`)
}

func TestWebhook_StripeFailureDuringRefetchAnswers500AndTheRetryConverges(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	sub := f.liveSubscription("org_1")
	f.stripe.InjectFault(stripelocal.Fault{Kind: "500", Path: "/v1/subscriptions/", Count: 3}) // stripe-go retries reads twice
	payload := eventJSON("evt_s", "customer.subscription.updated", 100, "2024-06-20", subscriptionObject(sub.ID, "org_1", "active", false, "business"))
	wantStatus(t, f.send(payload), 500, "")
	if f.mirror("org_1").Subscription != nil {
		t.Fatal("a failed re-fetch left a write")
	}
	wantStatus(t, f.send(payload), 200, `{"status":"processed"}`)
}

func TestWebhook_LogsOneSafeLineAndMetricsPerDelivery(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	var logs, metrics bytes.Buffer
	svc := billing.NewService(f.svc.Config(), billing.NewKeySource(f.svc.Config(), nil), f.store, slog.New(slog.NewJSONHandler(&logs, nil)))
	svc.SetMetricsOutput(&metrics)
	obj := subscriptionObject("sub_1", "org_1", "active", false, "starter")
	obj["customer_email"] = "jane@example.com"
	payload := eventJSON("evt_log", "customer.subscription.created", 100, stripe.APIVersion, obj)
	req := events.APIGatewayV2HTTPRequest{Body: string(payload), Headers: map[string]string{"stripe-signature": signed(payload, fixtureSecret, time.Now())}}
	_, _ = svc.HandleWebhook(context.Background(), req)
	_, _ = svc.HandleWebhook(context.Background(), req)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 2 deliveries:\n%s", len(lines), logs.String())
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"event_id", "type", "outcome", "duration_ms", "stripe_requests", "dynamodb_requests"} {
		if _, ok := first[k]; !ok {
			t.Errorf("the log line lacks %s: %s", k, lines[0])
		}
	}
	for _, secret := range []string{fixtureSecret, "sk_test_fixture", "jane@example.com", `"items"`, "v1="} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the logs contain %q", secret)
		}
	}
	m := metrics.String()
	if !strings.Contains(m, `"WebhookProcessed":1`) || !strings.Contains(m, `"WebhookDuplicate":1`) || !strings.Contains(m, `"CloudWatchMetrics"`) {
		t.Fatalf("metrics:\n%s", m)
	}
}

func TestWebhook_CatalogChangesOutsideUpsertAreFlaggedAsDrift(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	product := map[string]any{"id": "bf_test-ns_gpu-t4", "object": "product", "name": "Renamed in the dashboard",
		"metadata": map[string]any{"billing_namespace": ns, "billing_key": "gpu-t4"}}
	var ours map[string]any
	_ = json.Unmarshal(eventJSON("evt_up", "product.updated", 100, stripe.APIVersion, product), &ours)
	ours["request"] = map[string]any{"id": "req_1", "idempotency_key": "bf-0123456789"} // made by upsert-products
	raw, _ := json.Marshal(ours)
	wantStatus(t, f.send(raw), 200, `{"status":"processed"}`)
	wantStatus(t, f.send(eventJSON("evt_dash", "product.updated", 101, stripe.APIVersion, product)), 200, `{"status":"processed"}`)
	foreign := map[string]any{"id": "bf_other_gpu-t4", "metadata": map[string]any{"billing_namespace": "other", "billing_key": "gpu-t4"}}
	wantStatus(t, f.send(eventJSON("evt_other", "price.updated", 102, stripe.APIVersion, foreign)), 200, `{"status":"ignored"}`)

	out, err := testenv.DynamoDB(t).Query(context.Background(), &dynamodb.QueryInput{TableName: aws.String(f.store.Name()),
		KeyConditionExpression:    aws.String("pk = :pk AND begins_with(sk, :d)"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":pk": &ddbtypes.AttributeValueMemberS{Value: "CATALOG"}, ":d": &ddbtypes.AttributeValueMemberS{Value: "DRIFT#"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 1 {
		t.Fatalf("%d drift records, want 1 (the dashboard change only)", len(out.Items))
	}
	if got := out.Items[0]["object_id"].(*ddbtypes.AttributeValueMemberS).Value; got != "bf_test-ns_gpu-t4" {
		t.Fatalf("drift on %s", got)
	}
}

func TestWebhook_CustomerDeletedIsMirrored(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	c := map[string]any{"id": "cus_del", "object": "customer", "metadata": map[string]any{"org_id": "org_del", "billing_namespace": ns}}
	wantStatus(t, f.send(eventJSON("evt_c1", "customer.created", 100, stripe.APIVersion, c)), 200, `{"status":"processed"}`)
	if m := f.mirror("org_del"); m.Customer == nil || m.Customer.CustomerID != "cus_del" || m.Customer.Deleted {
		t.Fatalf("after customer.created: %+v", m.Customer)
	}
	c["deleted"] = true
	wantStatus(t, f.send(eventJSON("evt_c2", "customer.deleted", 101, stripe.APIVersion, c)), 200, `{"status":"processed"}`)
	if m := f.mirror("org_del"); m.Customer == nil || !m.Customer.Deleted {
		t.Fatalf("after customer.deleted: %+v", m.Customer)
	}
	// A late customer.updated from before the deletion changes nothing.
	delete(c, "deleted")
	wantStatus(t, f.send(eventJSON("evt_c0", "customer.updated", 100, stripe.APIVersion, c)), 200, `{"status":"ignored"}`)
	if m := f.mirror("org_del"); !m.Customer.Deleted {
		t.Fatal("a stale event undeleted the customer")
	}
	st := f.ok(map[string]any{"action": "get_status", "org_id": "org_del"})
	if st["customer_id"] != nil {
		t.Fatalf("get_status shows a deleted customer: %v", st)
	}
}

func TestWebhook_CheckoutCompletedMirrorsItsSubscription(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	sub := f.liveSubscription("org_co")
	session := map[string]any{"id": "cs_1", "object": "checkout.session", "mode": "subscription", "subscription": sub.ID,
		"customer": sub.Customer.ID, "metadata": map[string]any{"org_id": "org_co", "billing_namespace": ns}}
	wantStatus(t, f.send(eventJSON("evt_co", "checkout.session.completed", 100, stripe.APIVersion, session)), 200, `{"status":"processed"}`)
	if c := f.stripe.Counts(); c["GET /v1/subscriptions/{id}"] != 1 {
		t.Fatalf("Stripe requests %v, want the subscription fetched once", c)
	}
	if s := f.mirror("org_co").Subscription; s == nil || s.SubscriptionID != sub.ID || s.Tier != "business" || s.Status != "active" {
		t.Fatalf("mirror %+v", s)
	}
}
