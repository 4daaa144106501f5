package billing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/baseten/billing-functions/internal/dynamoproxy"
	"github.com/baseten/billing-functions/internal/gateway"
	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// fixture is a Service wired to moto (a fresh table) and a local Stripe
// whose every request stripe-mock checks and whose every answer is checked
// against Stripe's spec (testenv.LocalStripe).
type fixture struct {
	t      testing.TB
	svc    *billing.Service
	stripe *stripelocal.Server
	url    string
	db     *testenv.DB
	store  *table.Store
}

func newFixture(t testing.TB, namespace string) *fixture {
	t.Helper()
	srv, url := testenv.LocalStripe(t, stripelocal.Options{RetryBase: 20 * time.Millisecond})
	f := &fixture{t: t, stripe: srv, url: url}
	f.svc, f.db, f.store = newService(t, namespace, url, nil)
	f.svc.SetMetricsOutput(io.Discard)
	return f
}

// withNamespace returns a second Service on the same Stripe and table under
// another namespace, as another deployment sharing the account would be.
func (f *fixture) withNamespace(ns string) *billing.Service {
	svc, _, _ := newService(f.t, ns, f.url, f.store)
	return svc
}

func newService(t testing.TB, namespace, stripeURL string, store *table.Store) (*billing.Service, *testenv.DB, *table.Store) {
	t.Helper()
	db := &testenv.DB{Next: testenv.DynamoDB(t)}
	var name string
	if store == nil {
		name = testenv.NewTable(t)
	} else {
		name = store.Name()
	}
	env := map[string]string{
		"STAGE": "dev", "BILLING_NAMESPACE": namespace, "TABLE_NAME": name,
		"STRIPE_API_KEY": "sk_test_fixture", "STRIPE_PUBLISHABLE_KEY": "pk_test_fixture",
		"STRIPE_ENDPOINT_SECRET": "whsec_fixture", "STRIPE_API_BASE": stripeURL,
		// The local Stripe has no account budget to share; the pacing tests
		// set their own rate.
		"RECONCILE_RATE": "100",
	}
	cfg, err := billing.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	s := table.New(db, name)
	return billing.NewService(cfg, billing.NewKeySource(cfg, nil), s, slog.New(slog.NewTextHandler(io.Discard, nil))), db, s
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func (f *fixture) requests() (dynamo, stripeReqs int) {
	r, w := f.db.Reset()
	n := 0
	for _, v := range f.stripe.Counts() {
		n += v
	}
	f.stripe.ResetCounts()
	return r + w, n
}

// viaFaultProxy points the fixture's service at a fault-injecting proxy in
// front of moto, with the SDK's default retries, as deployed.
func (f *fixture) viaFaultProxy() *dynamoproxy.Proxy {
	f.t.Helper()
	proxy, url := testenv.FaultProxy(f.t, testenv.Moto(f.t))
	store := table.New(dynamodb.NewFromConfig(testenv.AWSConfig(url)), f.store.Name())
	f.svc = billing.NewService(f.svc.Config(), billing.NewKeySource(f.svc.Config(), nil), store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.svc.SetMetricsOutput(io.Discard)
	return proxy
}

func (f *fixture) callWith(ctx context.Context, r map[string]any) billing.Response {
	f.t.Helper()
	raw, _ := json.Marshal(r)
	resp, err := f.svc.HandleSubscribe(ctx, raw)
	if err != nil {
		f.t.Fatalf("HandleSubscribe returned a Lambda error: %v", err)
	}
	return resp
}

// disabledService has no Stripe key at all, as most dev setups do.
func disabledService(t *testing.T) *billing.Service {
	t.Helper()
	cfg, err := billing.LoadConfig(func(k string) string {
		return map[string]string{"STAGE": "dev", "BILLING_NAMESPACE": "local-dev", "TABLE_NAME": "billing-local"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	return billing.NewService(cfg, billing.NewKeySource(cfg, nil), table.New(nil, cfg.TableName), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// subscribed puts orgs on the starter tier through subscribe, and waits
// until Stripe's webhooks for it are delivered.
func (f *fixture) subscribed(orgs ...string) {
	f.t.Helper()
	for _, org := range orgs {
		f.subscribe(org, "tier", "starter", "email", org+"@example.com", "instance_types", []string{"gpu-a10g"})
	}
	f.stripe.WaitDeliveries()
}

// subscribe runs the subscribe action for org and pays the first invoice
// as the customer would (pay), and returns the status then.
func (f *fixture) subscribe(org string, fields ...any) map[string]any {
	f.t.Helper()
	if sub := subscriptionOf(f.t, f.ok(req("subscribe", org, fields...))); sub["status"] != "incomplete" {
		f.t.Fatalf("a new subscription is %v, want incomplete until its first payment", sub["status"])
	}
	f.pay(org, "pm_card_visa")
	return f.ok(map[string]any{"action": "get_status", "org_id": org})
}

// pay pays the organization's first invoice as its customer would on the
// billing page: the invoice's PaymentIntent confirmed with a test card
// (Stripe.js does it with the client secret; the secret key does the
// same), then the events Stripe made from then on delivered to the webhook
// in order, so that the mirror shows what followed.
func (f *fixture) pay(org, card string) {
	f.t.Helper()
	before := len(f.allEvents())
	m := f.mirror(org)
	if m.Subscription == nil {
		f.t.Fatalf("%s has no subscription to pay", org)
	}
	p := &stripe.SubscriptionParams{}
	p.AddExpand("latest_invoice.payment_intent")
	sub, err := f.sc().Subscriptions.Get(m.Subscription.SubscriptionID, p)
	if err != nil || sub.LatestInvoice == nil || sub.LatestInvoice.PaymentIntent == nil {
		f.t.Fatalf("%s's first invoice has no PaymentIntent: %v", org, err)
	}
	if _, err := f.sc().PaymentIntents.Confirm(sub.LatestInvoice.PaymentIntent.ID,
		&stripe.PaymentIntentConfirmParams{PaymentMethod: stripe.String(card)}); err != nil {
		f.t.Fatalf("confirm with %s: %v", card, err)
	}
	f.deliverSince(before)
}

// deliverSince delivers to the webhook, in order, the events Stripe made
// after the first n.
func (f *fixture) deliverSince(n int) {
	f.t.Helper()
	for _, raw := range f.allEvents()[n:] {
		if resp := f.send(raw); resp.StatusCode != 200 {
			f.t.Fatalf("delivery: %d %s", resp.StatusCode, resp.Body)
		}
	}
}

func fields(diffs []billing.Difference, org string) map[string]billing.Difference {
	out := map[string]billing.Difference{}
	for _, d := range diffs {
		if d.OrgID == org {
			out[d.Field] = d
		}
	}
	return out
}

// countingSecrets counts GetSecretValue calls on their way to moto.
type countingSecrets struct {
	billing.SecretsClient
	calls atomic.Int64
}

func (c *countingSecrets) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	c.calls.Add(1)
	return c.SecretsClient.GetSecretValue(ctx, in, opts...)
}

func createSecret(t testing.TB, value string) string {
	t.Helper()
	name := testenv.UniqueName(t, "billing/stripe")
	if _, err := testenv.SecretsManager(t).CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{Name: &name, SecretString: &value}); err != nil {
		t.Fatal(err)
	}
	return name
}

func putSecret(t testing.TB, name, value string) {
	t.Helper()
	if _, err := testenv.SecretsManager(t).PutSecretValue(context.Background(), &secretsmanager.PutSecretValueInput{SecretId: &name, SecretString: &value}); err != nil {
		t.Fatal(err)
	}
}

const stagingSecret = `{"api_key":"sk_test_one","publishable_key":"pk_test_one","webhook_secret":"whsec_one"}`

// allEvents returns every event the local Stripe made, oldest first, as
// the JSON Stripe delivers.
func (f *fixture) allEvents() [][]byte {
	f.t.Helper()
	var out [][]byte
	after := ""
	for {
		url := f.url + "/v1/events?limit=100"
		if after != "" {
			url += "&starting_after=" + after
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer sk_test_inspect")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			f.t.Fatal(err)
		}
		var page struct {
			Data    []json.RawMessage `json:"data"`
			HasMore bool              `json:"has_more"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			f.t.Fatal(err)
		}
		for _, raw := range page.Data {
			out = append(out, raw)
			var id struct{ ID string }
			_ = json.Unmarshal(raw, &id)
			after = id.ID
		}
		if !page.HasMore {
			break
		}
	}
	slices.Reverse(out)
	return out
}

// call invokes the subscribe handler with a JSON request.
func (f *fixture) call(req map[string]any) billing.Response {
	f.t.Helper()
	raw, _ := json.Marshal(req)
	resp, err := f.svc.HandleSubscribe(context.Background(), raw)
	if err != nil {
		f.t.Fatalf("HandleSubscribe returned a Lambda error: %v", err)
	}
	return resp
}

func (f *fixture) ok(req map[string]any) map[string]any {
	f.t.Helper()
	resp := f.call(req)
	if !resp.OK {
		f.t.Fatalf("%v: %+v", req["action"], resp.Error)
	}
	raw, _ := json.Marshal(resp.Result)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return out
}

func wantError(t *testing.T, resp billing.Response, code billing.Code) {
	t.Helper()
	if resp.OK || resp.Error.Code != code {
		t.Fatalf("got %+v, want error %s", resp, code)
	}
}

// meteredMinutes is what Stripe's meter of an instance type counted for a
// customer within the hour around now.
func (f *fixture) meteredMinutes(instanceType, customer string) float64 {
	f.t.Helper()
	m, err := f.store.GetProductMapping(context.Background(), instanceType)
	if err != nil {
		f.t.Fatal(err)
	}
	now := time.Now().Unix() / 60 * 60 // Stripe takes minute boundaries
	it := f.sc().BillingMeterEventSummaries.List(&stripe.BillingMeterEventSummaryListParams{ID: stripe.String(m.MeterID),
		Customer: stripe.String(customer), StartTime: stripe.Int64(now - 3600), EndTime: stripe.Int64(now + 3600)})
	if !it.Next() {
		f.t.Fatalf("no meter event summary for %s (err %v)", customer, it.Err())
	}
	return it.BillingMeterEventSummary().AggregatedValue
}

func req(action, org string, fields ...any) map[string]any {
	r := map[string]any{"action": action, "org_id": org, "request_id": fmt.Sprintf("req-%d-%d", time.Now().UnixNano(), reqSeq.Add(1))}
	for i := 0; i+1 < len(fields); i += 2 {
		r[fields[i].(string)] = fields[i+1]
	}
	return r
}

func subscriptionOf(t testing.TB, result map[string]any) map[string]any {
	t.Helper()
	sub, ok := result["subscription"].(map[string]any)
	if !ok {
		t.Fatalf("no subscription in %v", result)
	}
	return sub
}

func (f *fixture) stripeSub(id string) *stripe.Subscription {
	f.t.Helper()
	s, err := f.sc().Subscriptions.Get(id, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func strPtr(v any) *string { s, _ := v.(string); return &s }

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const ns = "test-ns"

func (f *fixture) upsert(req billing.UpsertRequest) billing.UpsertResult {
	f.t.Helper()
	res, err := f.svc.UpsertProducts(context.Background(), req)
	if err != nil {
		f.t.Fatalf("UpsertProducts: %v", err)
	}
	return res
}

func (f *fixture) sc() *client.API {
	b := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{URL: stripe.String(f.url), LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull}})
	return client.New("sk_test_inspect", &stripe.Backends{API: b, Connect: b, Uploads: b})
}

func (f *fixture) read() stripeState {
	f.t.Helper()
	st := stripeState{products: map[string]*stripe.Product{}}
	sc := f.sc()
	for it := sc.Products.List(&stripe.ProductListParams{ListParams: stripe.ListParams{Limit: stripe.Int64(100)}}); it.Next(); {
		st.products[it.Product().ID] = it.Product()
	}
	for it := sc.Prices.List(&stripe.PriceListParams{ListParams: stripe.ListParams{Limit: stripe.Int64(100)}}); it.Next(); {
		st.prices = append(st.prices, it.Price())
	}
	for it := sc.BillingMeters.List(&stripe.BillingMeterListParams{ListParams: stripe.ListParams{Limit: stripe.Int64(100)}}); it.Next(); {
		st.meters = append(st.meters, it.BillingMeter())
	}
	return st
}

func (st stripeState) activePricesOf(product string) []*stripe.Price {
	var out []*stripe.Price
	for _, p := range st.prices {
		if p.Product.ID == product && p.Active {
			out = append(out, p)
		}
	}
	return out
}

// gatewayFor serves the webhook handler behind the local API Gateway
// emulation and registers it with the local Stripe.
func (f *fixture) gatewayFor() {
	f.t.Helper()
	gw := httptest.NewServer(gateway.New(gateway.Route{Method: "POST", Path: "/integrations/stripe/webhooks",
		Invoke: func(ctx context.Context, event []byte) ([]byte, error) {
			var req events.APIGatewayV2HTTPRequest
			if err := json.Unmarshal(event, &req); err != nil {
				return nil, err
			}
			resp, err := f.svc.HandleWebhook(ctx, req)
			if err != nil {
				return nil, err
			}
			return json.Marshal(resp)
		}}))
	f.t.Cleanup(gw.Close)
	f.stripe.AddWebhookEndpoint(gw.URL+"/integrations/stripe/webhooks", []string{fixtureSecret}, nil, "")
}

const fixtureSecret = "whsec_fixture"

// eventJSON renders a Stripe event around object.
func eventJSON(id, typ string, created int64, apiVersion string, object any) []byte {
	raw, _ := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "created": created, "api_version": apiVersion,
		"livemode": false, "data": map[string]any{"object": object}, "request": map[string]any{"id": nil, "idempotency_key": nil},
	})
	return raw
}

func subscriptionObject(id, org, status string, cancelAtEnd bool, items ...string) map[string]any {
	var data []any
	for i, key := range items {
		kind := "instance_type"
		if key == "starter" || key == "business" {
			kind = "tier"
		}
		data = append(data, map[string]any{"id": fmt.Sprintf("si_%s_%d", key, i), "object": "subscription_item",
			"price": map[string]any{"id": "price_" + key, "object": "price", "metadata": map[string]any{"billing_key": key, "billing_kind": kind, "billing_namespace": ns}}})
	}
	return map[string]any{"id": id, "object": "subscription", "customer": "cus_" + org, "status": status, "created": 50,
		"current_period_end": 5000, "cancel_at_period_end": cancelAtEnd,
		"metadata": map[string]any{"org_id": org, "billing_namespace": ns},
		"items":    map[string]any{"object": "list", "data": data}}
}

func signed(payload []byte, secret string, at time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: at}).Header
}

// deliver sends payload to the handler as API Gateway would.
func (f *fixture) deliver(payload []byte, signature string) events.APIGatewayV2HTTPResponse {
	f.t.Helper()
	req := events.APIGatewayV2HTTPRequest{Body: string(payload), Headers: map[string]string{}}
	if signature != "" {
		req.Headers["stripe-signature"] = signature
	}
	resp, err := f.svc.HandleWebhook(context.Background(), req)
	if err != nil {
		f.t.Fatalf("HandleWebhook returned a Lambda error: %v", err)
	}
	return resp
}

func (f *fixture) send(payload []byte) events.APIGatewayV2HTTPResponse {
	return f.deliver(payload, signed(payload, fixtureSecret, time.Now()))
}

func (f *fixture) mirror(org string) table.Mirror {
	f.t.Helper()
	m, err := f.store.GetMirror(context.Background(), org)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

func wantStatus(t *testing.T, resp events.APIGatewayV2HTTPResponse, code int, body string) {
	t.Helper()
	if resp.StatusCode != code || (body != "" && resp.Body != body) {
		t.Fatalf("answered %d %s, want %d %s", resp.StatusCode, resp.Body, code, body)
	}
}

var reqSeq atomic.Int64

type safeBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// stripeState is what the test reads back from Stripe. Reading counts as
// requests too: take the function's counts before calling read.
type stripeState struct {
	products map[string]*stripe.Product
	prices   []*stripe.Price
	meters   []*stripe.BillingMeter
}

// rawStripe returns the local Stripe's JSON answer to a GET, as sent.
func (f *fixture) rawStripe(path string) string {
	f.t.Helper()
	r, _ := http.NewRequest(http.MethodGet, f.url+path, nil)
	r.Header.Set("Authorization", "Bearer sk_test_inspect")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return string(raw)
}

func jsonOf(v any) ([]byte, error) { return json.Marshal(v) }

// toMap turns a result into the JSON object the caller sees.
func toMap(v any) (map[string]any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	return out, json.Unmarshal(raw, &out)
}

// signedRequest is API Gateway's request for a delivery of payload,
// signed with secret as Stripe signs.
func signedRequest(payload []byte, secret string) events.APIGatewayV2HTTPRequest {
	return events.APIGatewayV2HTTPRequest{Body: string(payload), Headers: map[string]string{"stripe-signature": signed(payload, secret, time.Now())}}
}

func (s *safeBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}
