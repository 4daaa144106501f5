// Package processtest runs the real bootstrap binaries under
// aws-lambda-rie through faults only a process can meet: killed with
// SIGKILL in the middle of an event, and Secrets Manager unavailable at
// cold start.
package processtest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"

	"github.com/baseten/billing-functions/internal/dynamoproxy"
	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

const (
	namespace     = "proc-test"
	webhookSecret = "whsec_process"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// world is a table in moto, a local Stripe with the catalog, and a fault
// proxy in front of moto for the function under test.
type world struct {
	t      *testing.T
	ddb    *dynamodb.Client
	store  *table.Store
	stripe *stripelocal.Server
	url    string
	proxy  *dynamoproxy.Proxy
	awsURL string // the proxy: what the function talks to
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, ddb: testenv.DynamoDB(t)}
	w.store = table.New(w.ddb, testenv.NewTable(t))
	w.stripe, w.url = testenv.LocalStripe(t, stripelocal.Options{})
	w.proxy, w.awsURL = testenv.FaultProxy(t, testenv.Moto(t))
	return w
}

func (w *world) env(extra map[string]string) map[string]string {
	env := map[string]string{
		"STAGE": "dev", "BILLING_NAMESPACE": namespace, "TABLE_NAME": w.store.Name(), "STRIPE_API_BASE": w.url,
		"AWS_ENDPOINT_URL": w.awsURL, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// liveSubscription makes the catalog (in-process, through the same core)
// and a business-tier subscription for org in the local Stripe.
func (w *world) liveSubscription(org string) *stripe.Subscription {
	w.t.Helper()
	cfg, err := billing.LoadConfig(func(k string) string {
		return map[string]string{"STAGE": "dev", "BILLING_NAMESPACE": namespace, "TABLE_NAME": w.store.Name(),
			"STRIPE_API_KEY": "sk_test_process", "STRIPE_API_BASE": w.url}[k]
	})
	if err != nil {
		w.t.Fatal(err)
	}
	svc := billing.NewService(cfg, billing.NewKeySource(cfg, nil), w.store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := svc.UpsertProducts(context.Background(), billing.UpsertRequest{}); err != nil {
		w.t.Fatal(err)
	}
	tier, _ := w.store.GetProductMapping(context.Background(), "business")
	b := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{URL: stripe.String(w.url), LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull}})
	sc := client.New("sk_test_process", &stripe.Backends{API: b, Connect: b, Uploads: b})
	meta := map[string]string{"org_id": org, "billing_namespace": namespace}
	c, err := sc.Customers.New(&stripe.CustomerParams{Metadata: meta})
	if err != nil {
		w.t.Fatal(err)
	}
	// A card that pays, as the customer would have given.
	pm, err := sc.PaymentMethods.Attach("pm_card_visa", &stripe.PaymentMethodAttachParams{Customer: stripe.String(c.ID)})
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := sc.Customers.Update(c.ID, &stripe.CustomerParams{InvoiceSettings: &stripe.CustomerInvoiceSettingsParams{DefaultPaymentMethod: stripe.String(pm.ID)}}); err != nil {
		w.t.Fatal(err)
	}
	sub, err := sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), Metadata: meta,
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(tier.PriceID)}}})
	if err != nil {
		w.t.Fatal(err)
	}
	return sub
}

// delivery is a signed API Gateway request carrying a Stripe event.
func delivery(id, typ, apiVersion string, object any) []byte {
	obj, _ := json.Marshal(object)
	payload := fmt.Sprintf(`{"id":%q,"object":"event","type":%q,"created":%d,"api_version":%q,"livemode":false,"data":{"object":%s}}`,
		id, typ, time.Now().Unix(), apiVersion, obj)
	ts := time.Now().Unix()
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	fmt.Fprintf(mac, "%d.%s", ts, payload)
	req, _ := json.Marshal(events.APIGatewayV2HTTPRequest{
		RawPath: "/integrations/stripe/webhooks", Body: payload,
		Headers: map[string]string{"stripe-signature": fmt.Sprintf("t=%d,v1=%s", ts, hex.EncodeToString(mac.Sum(nil)))},
	})
	return req
}

// invoke sends one invocation to the function under aws-lambda-rie and
// returns what API Gateway would answer Stripe: the function's status, or
// 502 when the function failed to answer.
func invoke(t *testing.T, rie *testenv.RIE, payload []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(rie.InvokeURL, "application/json", bytes.NewReader(payload))
	if err != nil {
		return http.StatusBadGateway, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out struct {
		StatusCode int    `json:"statusCode"`
		Body       string `json:"body"`
		ErrorType  string `json:"errorType"`
	}
	if json.Unmarshal(raw, &out) != nil || out.ErrorType != "" || out.StatusCode == 0 {
		return http.StatusBadGateway, string(raw)
	}
	return out.StatusCode, out.Body
}

func (w *world) subscriptionMirror(org string) *table.Subscription {
	w.t.Helper()
	m, err := w.store.GetMirror(context.Background(), org)
	if err != nil {
		w.t.Fatal(err)
	}
	return m.Subscription
}

// TestWebhookProcess_KilledBetweenStripeAndTheWriteThenRedeliveryConverges
// kills the webhook bootstrap with SIGKILL after it re-fetched the
// subscription from Stripe and as its DynamoDB transaction leaves, before
// DynamoDB sees it. Stripe's redelivery, to a fresh process, converges.
func TestWebhookProcess_KilledBetweenStripeAndTheWriteThenRedeliveryConverges(t *testing.T) {
	w := newWorld(t)
	sub := w.liveSubscription("org_kill")
	rie := testenv.StartRIE(t, testenv.BuildBootstrap(t, "webhook"), w.env(map[string]string{
		"STRIPE_API_KEY": "sk_test_process", "STRIPE_ENDPOINT_SECRET": webhookSecret,
	}))
	// Another API version, so the function re-fetches from Stripe first.
	obj := map[string]any{"id": sub.ID, "object": "subscription", "customer": sub.Customer.ID, "status": "active",
		"metadata": map[string]string{"org_id": "org_kill", "billing_namespace": namespace}, "items": map[string]any{"data": []any{}}}
	event := delivery("evt_kill", "customer.subscription.updated", "2024-06-20", obj)

	// The hook runs on the proxy's goroutine; the answer that invoke reads
	// travels through another process, which the race detector cannot see.
	var killedPID atomic.Int64
	w.proxy.Inject(dynamoproxy.Fault{Op: "TransactWriteItems", Kind: "drop", Count: 1, OnMatch: func() {
		if pid := rie.FunctionPID(); pid != 0 && syscall.Kill(pid, syscall.SIGKILL) == nil {
			killedPID.Store(int64(pid))
		}
	}})
	w.stripe.ResetCounts()
	status, body := invoke(t, rie, event)
	killed := int(killedPID.Load())
	if killed == 0 {
		t.Fatalf("the function was not killed mid-event (answer %d %s)\n%s", status, body, rie.Log())
	}
	if status == http.StatusOK {
		t.Fatalf("a killed invocation answered 200: %s", body)
	}
	if n := w.stripe.Counts()["GET /v1/subscriptions/{id}"]; n != 1 {
		t.Fatalf("Stripe re-fetches before the kill: %d, want 1 (%v)", n, w.stripe.Counts())
	}
	if s := w.subscriptionMirror("org_kill"); s != nil {
		t.Fatalf("the killed invocation wrote the mirror: %+v", s)
	}
	t.Logf("killed pid %d after the Stripe call; the invocation answered %d", killed, status)

	// Stripe redelivers; aws-lambda-rie starts a new process.
	status, body = invoke(t, rie, event)
	if status != http.StatusOK || body != `{"status":"processed"}` {
		t.Fatalf("redelivery: %d %s\n%s", status, body, rie.Log())
	}
	if pid := rie.FunctionPID(); pid == killed || pid == 0 {
		t.Fatalf("the redelivery ran in pid %d, the killed one was %d", pid, killed)
	}
	if s := w.subscriptionMirror("org_kill"); s == nil || s.SubscriptionID != sub.ID || s.Status != "active" || s.Tier != "business" || s.Version != 1 {
		t.Fatalf("mirror after redelivery: %+v", s)
	}
	if status, body = invoke(t, rie, event); status != http.StatusOK || body != `{"status":"duplicate"}` {
		t.Fatalf("a further redelivery: %d %s", status, body)
	}
}

// TestColdStart_SecretsManagerDownAnswersUnavailableAndProcessesNothing
// starts the webhook and subscribe bootstraps with their keys in a secret
// that Secrets Manager cannot serve: the webhook answers 503 and subscribe
// a retryable unavailable, with no Stripe request and no write; once
// Secrets Manager is back, the same warm processes work.
func TestColdStart_SecretsManagerDownAnswersUnavailableAndProcessesNothing(t *testing.T) {
	w := newWorld(t)
	sub := w.liveSubscription("org_sm")
	sm := testenv.SecretsManager(t)
	secret, err := sm.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{Name: aws.String(testenv.UniqueName(t, "stripe")),
		SecretString: aws.String(`{"api_key":"sk_test_process","publishable_key":"pk_test_process","webhook_secret":"` + webhookSecret + `"}`)})
	if err != nil {
		t.Fatal(err)
	}
	env := w.env(map[string]string{"STRIPE_SECRET_ID": aws.ToString(secret.ARN)})
	w.proxy.Inject(dynamoproxy.Fault{Op: "GetSecretValue", Kind: "500", Count: 1000})
	webhook := testenv.StartRIE(t, testenv.BuildBootstrap(t, "webhook"), env)
	subscribe := testenv.StartRIE(t, testenv.BuildBootstrap(t, "subscribe"), env)
	w.stripe.ResetCounts()

	obj := map[string]any{"id": sub.ID, "object": "subscription", "customer": sub.Customer.ID, "status": "active", "created": sub.Created,
		"metadata": map[string]string{"org_id": "org_sm", "billing_namespace": namespace}, "items": map[string]any{"data": []any{}}}
	event := delivery("evt_sm", "customer.subscription.created", stripe.APIVersion, obj)
	if status, body := invoke(t, webhook, event); status != http.StatusServiceUnavailable {
		t.Fatalf("webhook with Secrets Manager down: %d %s, want 503", status, body)
	}
	command, _ := json.Marshal(map[string]any{"action": "subscribe", "org_id": "org_sm2", "request_id": "r-sm-1", "tier": "starter", "email": "sm@example.com"})
	_, body := invokeRaw(t, subscribe, command)
	var env1 billing.Response
	if err := json.Unmarshal([]byte(body), &env1); err != nil || env1.OK || env1.Error.Code != billing.CodeUnavailable || !env1.Error.Retryable {
		t.Fatalf("subscribe with Secrets Manager down: %s, want a retryable unavailable", body)
	}
	if strings.Contains(body, "500") || strings.Contains(body, "injected") {
		t.Fatalf("the answer leaks internals: %s", body)
	}
	if c := w.stripe.Counts(); len(c) != 0 {
		t.Fatalf("Stripe requests with no keys: %v", c)
	}
	if s := w.subscriptionMirror("org_sm"); s != nil {
		t.Fatalf("a write with no keys: %+v", s)
	}
	if w.proxy.Hits("GetSecretValue") == 0 {
		t.Fatal("the functions never asked Secrets Manager")
	}

	// Secrets Manager recovers: the same processes serve, and Stripe's
	// redelivery of the refused event is mirrored.
	w.proxy.Clear()
	if status, body := invoke(t, webhook, event); status != http.StatusOK || body != `{"status":"processed"}` {
		t.Fatalf("webhook after Secrets Manager recovered: %d %s", status, body)
	}
	if _, body := invokeRaw(t, subscribe, command); !strings.Contains(body, `"ok":true`) {
		t.Fatalf("subscribe after Secrets Manager recovered: %s", body)
	}
}

func invokeRaw(t *testing.T, rie *testenv.RIE, payload []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(rie.InvokeURL, "application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}
