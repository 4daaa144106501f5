// Package e2e starts the stack exactly as `make dev` does (the billing-dev
// binary, on free ports) and acts as the core app through the
// aws-sdk-go-v2 Lambda client, Python's boto3 and billingctl: the real
// bootstrap binaries under aws-lambda-rie, moto, and the local Stripe
// delivering signed webhooks through the local API Gateway.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/baseten/billing-functions/internal/devstack"
	"github.com/baseten/billing-functions/internal/testenv"
)

type stack struct {
	t                                *testing.T
	gatewayURL, invokeURL, stripeURL string
	stateDir                         string
	cmd                              *exec.Cmd
	out                              *syncBuffer
	ports                            []int
	lambda                           *lambda.Client
	exited                           chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// startStack runs billing-dev as `make dev` does and waits for READY; env
// adds to its environment.
func startStack(t *testing.T, env ...string) *stack {
	t.Helper()
	testenv.Need(t, "the whole stack: moto, aws-lambda-rie and the Python tools")
	bin := testenv.Build(t, "cmd/billing-dev")
	for attempt := 1; ; attempt++ {
		s, err := launchStack(t, bin, env)
		if err == nil {
			return s
		}
		// A free port is found by binding and letting go of it: until
		// billing-dev binds it again, another process of the suite may
		// take it. Other ports, then.
		if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			t.Logf("billing-dev lost a port to another process (attempt %d); trying other ports", attempt)
			continue
		}
		t.Fatal(err)
	}
}

// launchStack starts billing-dev on free ports and waits until it is ready.
func launchStack(t *testing.T, bin string, env []string) (*stack, error) {
	t.Helper()
	s := &stack{t: t, stateDir: t.TempDir(), out: &syncBuffer{}, exited: make(chan struct{})}
	for range 4 {
		p, _ := testenv.FreePort()
		s.ports = append(s.ports, p)
	}
	s.cmd = exec.Command(bin)
	s.cmd.Dir = testenv.RepoRoot()
	s.cmd.Env = append(os.Environ(), "BILLING_NAMESPACE=local-e2e", "DEV_STATE_DIR="+s.stateDir, "STRIPE_API_KEY=",
		"DEV_BUILD_FLAGS="+strings.Join(testenv.TestBuildFlags, " "),
		fmt.Sprintf("DEV_GATEWAY_PORT=%d", s.ports[0]), fmt.Sprintf("DEV_INVOKE_PORT=%d", s.ports[1]),
		fmt.Sprintf("DEV_STRIPE_PORT=%d", s.ports[2]), fmt.Sprintf("DEV_MOTO_PORT=%d", s.ports[3]))
	s.cmd.Env = append(s.cmd.Env, env...)
	pr, pw := io.Pipe()
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = s.cmd.Wait(); pw.Close(); close(s.exited) }()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			fmt.Fprintln(s.out, sc.Text())
			if sc.Text() == "READY" && !signalled {
				signalled = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-s.exited:
		return nil, fmt.Errorf("billing-dev exited:\n%s", s.out.String())
	case <-time.After(3 * time.Minute):
		_ = s.cmd.Process.Kill()
		return nil, fmt.Errorf("billing-dev not ready:\n%s", s.out.String())
	}
	t.Logf("stack ready in %v", time.Since(start).Round(time.Millisecond))
	s.gatewayURL = fmt.Sprintf("http://127.0.0.1:%d", s.ports[0])
	s.invokeURL = fmt.Sprintf("http://127.0.0.1:%d", s.ports[1])
	s.stripeURL = fmt.Sprintf("http://127.0.0.1:%d", s.ports[2])
	cfg, _ := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")))
	s.lambda = lambda.NewFromConfig(cfg, func(o *lambda.Options) { o.BaseEndpoint = aws.String(s.invokeURL) })
	t.Cleanup(s.stop)
	return s, nil
}

// stop sends Ctrl-C and checks that every process and port is gone.
func (s *stack) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		s.t.Errorf("billing-dev did not stop on Ctrl-C")
	}
	time.Sleep(200 * time.Millisecond)
	if out, _ := exec.Command("pgrep", "-f", s.stateDir).Output(); len(out) > 0 {
		s.t.Errorf("processes left after Ctrl-C: %s", out)
	}
	for _, p := range s.ports {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			c.Close()
			s.t.Errorf("port %d still open after Ctrl-C", p)
		}
	}
	// What each function's DynamoDB requests needed, for
	// TestEndToEnd_EachFunctionHasExactlyTheDynamoDBActionsItCalls.
	raw, err := os.ReadFile(filepath.Join(s.stateDir, devstack.DynamoDBActionsFile))
	var record struct{ Actions, Partitions map[string][]string }
	if err != nil || json.Unmarshal(raw, &record) != nil {
		s.t.Errorf("billing-dev wrote no %s: %v", devstack.DynamoDBActionsFile, err)
	}
	called.mu.Lock()
	defer called.mu.Unlock()
	for into, from := range map[*map[string]map[string]bool]map[string][]string{&called.actions: record.Actions, &called.partitions: record.Partitions} {
		for fn, list := range from {
			if (*into)[fn] == nil {
				(*into)[fn] = map[string]bool{}
			}
			for _, a := range list {
				(*into)[fn][a] = true
			}
		}
	}
	called.stacks++
}

// call invokes the subscribe function through the Lambda client.
func (s *stack) call(req map[string]any) map[string]any {
	s.t.Helper()
	raw, _ := json.Marshal(req)
	out, err := s.lambda.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("SubscribeFunction"), Payload: raw})
	if err != nil {
		s.t.Fatalf("invoke: %v", err)
	}
	var env map[string]any
	if err := json.Unmarshal(out.Payload, &env); err != nil || env["ok"] != true {
		s.t.Fatalf("%v answered %s", req["action"], out.Payload)
	}
	res, _ := env["result"].(map[string]any)
	return res
}

var seq int

func req(action, org string, kv ...any) map[string]any {
	seq++
	r := map[string]any{"action": action, "org_id": org, "request_id": fmt.Sprintf("e2e-%d-%d", time.Now().UnixNano(), seq)}
	for i := 0; i+1 < len(kv); i += 2 {
		r[kv[i].(string)] = kv[i+1]
	}
	return r
}

func (s *stack) control(path string, body any) {
	s.t.Helper()
	raw, _ := json.Marshal(body)
	resp, err := http.Post(s.stripeURL+path, "application/json", strings.NewReader(string(raw)))
	if err != nil || resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		s.t.Fatalf("control %s: %v %s", path, err, b)
	}
	resp.Body.Close()
}

func (s *stack) status(org string) (sub map[string]any, delinquent bool) {
	s.t.Helper()
	st := s.call(map[string]any{"action": "get_status", "org_id": org})
	sub, _ = st["subscription"].(map[string]any)
	return sub, st["delinquent"] == true
}

func (s *stack) webhookLog() string { return s.log("webhook") }

func (s *stack) log(function string) string {
	b, _ := os.ReadFile(filepath.Join(s.stateDir, "logs", function+".log"))
	return string(b)
}

func TestEndToEnd_TheCoreAppsFlowsThroughTheRealBinaries(t *testing.T) {
	s := startStack(t, "SECRET_CACHE_TTL=1s")

	// check_access answers each reason through the real binary along the
	// way; the access table itself is TestAccessRules_EachReasonAndItsOrder.
	s.wantAccess("org_e2e", "gpu-t4", false, "no_subscription")

	// subscribe: the local Stripe's signed webhooks go through the gateway
	// to the webhook binary.
	st := s.call(req("subscribe", "org_e2e", "tier", "business", "email", "e2e@example.com", "instance_types", []string{"gpu-t4"}))
	sub := st["subscription"].(map[string]any)
	if sub["status"] != "incomplete" || sub["tier"] != "business" {
		t.Fatalf("subscribe: %v, want the business tier waiting for its first payment", st)
	}
	subID := sub["id"].(string)
	s.wantAccess("org_e2e", "gpu-t4", false, "payment_required")
	s.control("/_local/wait", nil)
	if log := s.webhookLog(); !strings.Contains(log, `"type":"customer.subscription.created","status":200`) {
		t.Fatalf("the webhook binary did not receive the subscription's event:\n%s", log)
	}
	// The customer pays the first invoice with a card; the webhooks of the
	// payment make the mirror active.
	s.pay(t, "org_e2e")
	if sub, _ := s.status("org_e2e"); sub["status"] != "active" {
		t.Fatalf("after the first payment: %v", sub)
	}
	s.wantAccess("org_e2e", "gpu-t4", true, "ok")
	s.wantAccess("org_e2e", "gpu-a100", false, "instance_type_not_in_plan")

	st = s.call(req("change_tier", "org_e2e", "tier", "starter"))
	if st["subscription"].(map[string]any)["tier"] != "starter" {
		t.Fatalf("change_tier: %v", st)
	}
	st = s.call(req("set_instance_types", "org_e2e", "instance_types", []string{"gpu-a10g", "cpu-1x4"}))
	if got := fmt.Sprint(st["subscription"].(map[string]any)["instance_types"]); got != "[cpu-1x4 gpu-a10g]" {
		t.Fatalf("set_instance_types: %s\n%s\n%s", got, s.webhookLog(), s.log("subscribe"))
	}

	// record_usage, retried with the same request_id, counts once.
	usage := req("record_usage", "org_e2e", "instance_type", "gpu-a10g", "minutes", 17)
	s.call(usage)
	s.call(usage)
	if got := s.meterUsage(t, "bf_local-e2e_gpu-a10g_minutes", st["customer_id"].(string)); got != 17 {
		t.Fatalf("metered usage %v, want 17", got)
	}

	// The same through boto3 and billingctl, before the clock moves on.
	t.Run("boto3", func(t *testing.T) { s.boto3(t) })
	t.Run("billingctl", func(t *testing.T) { s.billingctl(t) })

	// A failed renewal payment makes the org delinquent; paying clears it.
	// Only the webhook binary writes these changes.
	s.control("/_local/config", map[string]any{"payment_mode": "never"}) // the renewal waits to be settled
	s.control("/_local/clock/advance", map[string]any{"seconds": 32 * 24 * 3600})
	s.control("/_local/subscriptions/"+subID+"/settle", map[string]any{"outcome": "failed"})
	s.control("/_local/wait", nil)
	if sub, delinquent := s.status("org_e2e"); !delinquent || sub["status"] != "past_due" {
		t.Fatalf("after a failed payment: %v delinquent=%v", sub, delinquent)
	}
	s.wantAccess("org_e2e", "gpu-a10g", true, "past_due") // within PAST_DUE_GRACE_DAYS
	s.control("/_local/subscriptions/"+subID+"/settle", map[string]any{"outcome": "paid"})
	s.control("/_local/wait", nil)
	if sub, delinquent := s.status("org_e2e"); delinquent || sub["status"] != "active" {
		t.Fatalf("after paying: %v delinquent=%v", sub, delinquent)
	}
	s.control("/_local/config", map[string]any{"payment_mode": ""})

	// cancel at the period end; the period ends; the webhook cancels it.
	if st := s.call(req("cancel", "org_e2e")); st["subscription"].(map[string]any)["cancel_at_period_end"] != true {
		t.Fatalf("cancel: %v", st)
	}
	s.control("/_local/clock/advance", map[string]any{"seconds": 32 * 24 * 3600})
	s.control("/_local/wait", nil)
	if sub, _ := s.status("org_e2e"); sub["status"] != "canceled" {
		t.Fatalf("after the period end: %v", sub)
	}
	s.wantAccess("org_e2e", "gpu-a10g", false, "canceled")

	// Drift: webhooks held while a period renews; billingctl reconcile
	// finds it through the real subscribe binary, and --repair fixes it.
	t.Run("reconcile", func(t *testing.T) { s.reconcile(t) })

	// A price change, and the subscriptions on the old price moved (before
	// the changes by hand, whose failing endpoint's retries would keep
	// the local Stripe's deliveries busy).
	t.Run("migrate prices", func(t *testing.T) { s.migratePrices(t) })

	// Changes made by hand in Stripe: a customer without our metadata is
	// looked up by its ID and ignored; a product renamed is drift the
	// webhook flags; upsert-products meets a Stripe 500 (its keys move to a
	// new generation), then puts the name back.
	t.Run("by hand", func(t *testing.T) { s.byHand(t) })

	s.checkLogsAreSafe(t)

	// Unknown functions get Lambda's error.
	_, err := s.lambda.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("NoSuchFunction"), Payload: []byte("{}")})
	var notFound *types.ResourceNotFoundException
	if !errors.As(err, &notFound) {
		t.Fatalf("unknown function: %v, want ResourceNotFoundException", err)
	}

	// Last: the stage's secret loses its API key, and once the function's
	// cache of it lapses (SECRET_CACHE_TTL=1s here) billing is disabled:
	// check_access allows everything, as the design note requires.
	sm := secretsmanager.NewFromConfig(testenv.AWSConfig(fmt.Sprintf("http://127.0.0.1:%d", s.ports[3])))
	secret := fmt.Sprintf(`{"api_key":"","publishable_key":"","webhook_secret":%q}`, devstack.LocalWhSecret)
	if _, err := sm.PutSecretValue(context.Background(), &secretsmanager.PutSecretValueInput{SecretId: aws.String(devstack.SecretID), SecretString: &secret}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	s.wantAccess("org_e2e", "gpu-a10g", true, "billing_disabled")
}

func (s *stack) meterUsage(t *testing.T, eventName, customer string) float64 {
	t.Helper()
	get := func(path string, v any) {
		r, _ := http.NewRequest(http.MethodGet, s.stripeURL+path, nil)
		r.SetBasicAuth("sk_test_e2e", "")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	var meters struct {
		Data []struct {
			ID        string `json:"id"`
			EventName string `json:"event_name"`
		} `json:"data"`
	}
	get("/v1/billing/meters?limit=100", &meters)
	var clock struct{ Now int64 }
	r, _ := http.Get(s.stripeURL + "/_local/clock")
	_ = json.NewDecoder(r.Body).Decode(&clock)
	r.Body.Close()
	for _, m := range meters.Data {
		if m.EventName == eventName {
			var sum struct {
				Data []struct {
					AggregatedValue float64 `json:"aggregated_value"`
				} `json:"data"`
			}
			get(fmt.Sprintf("/v1/billing/meters/%s/event_summaries?customer=%s&start_time=%d&end_time=%d", m.ID, customer, clock.Now/60*60-3600, clock.Now/60*60+3600), &sum)
			if len(sum.Data) == 1 {
				return sum.Data[0].AggregatedValue
			}
		}
	}
	t.Fatalf("no meter %s", eventName)
	return 0
}

func (s *stack) boto3(t *testing.T) {
	python := testenv.VenvTool(t, "python")
	script := `
import boto3, json, sys
c = boto3.client("lambda", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
def call(payload):
    r = c.invoke(FunctionName="SubscribeFunction", Payload=json.dumps(payload))
    return json.load(r["Payload"])
sub = call({"action": "subscribe", "org_id": "org_boto3", "request_id": "boto3-1", "tier": "starter", "email": "py@example.com"})
again = call({"action": "subscribe", "org_id": "org_boto3", "request_id": "boto3-1", "tier": "starter", "email": "py@example.com"})
status = call({"action": "get_status", "org_id": "org_boto3"})
try:
    c.invoke(FunctionName="Nope", Payload="{}")
    unknown = "no error"
except c.exceptions.ResourceNotFoundException:
    unknown = "ResourceNotFoundException"
print(json.dumps({"sub": sub, "same": sub == again, "status": status, "unknown": unknown}))
`
	out, err := exec.Command(python, "-c", script, s.invokeURL).CombinedOutput()
	if err != nil {
		t.Fatalf("boto3: %v\n%s", err, out)
	}
	var got struct {
		Sub     map[string]any `json:"sub"`
		Same    bool           `json:"same"`
		Status  map[string]any `json:"status"`
		Unknown string         `json:"unknown"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("boto3 printed %s", out)
	}
	sub, _ := got.Status["result"].(map[string]any)["subscription"].(map[string]any)
	// The Elements path: the status says how the browser pays the first invoice.
	pay, _ := got.Status["result"].(map[string]any)["payment"].(map[string]any)
	if secret, _ := pay["client_secret"].(string); !strings.Contains(secret, "_secret_") || pay["intent"] != "payment" {
		t.Fatalf("boto3: the status's payment %v", pay)
	}
	if got.Sub["ok"] != true || !got.Same || sub["status"] != "incomplete" || got.Unknown != "ResourceNotFoundException" {
		t.Fatalf("boto3 flows: %s", out)
	}
}

func (s *stack) reconcile(t *testing.T) {
	bin := testenv.Build(t, "cmd/billingctl")
	ctl := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append([]string{"--endpoint", s.invokeURL, "reconcile"}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := ctl("--replay"); err != nil || !strings.Contains(out, " 0 differences") {
		t.Fatalf("reconcile after the flows: %v\n%s", err, out)
	}
	s.call(req("subscribe", "org_drift", "tier", "starter", "email", "drift@example.com"))
	s.pay(t, "org_drift")
	s.control("/_local/delivery", map[string]any{"mode": "hold"})
	s.control("/_local/clock/advance", map[string]any{"seconds": 32 * 24 * 3600})
	out, err := ctl()
	if err == nil || !strings.Contains(out, "org_drift") || !strings.Contains(out, "current_period_end") || !strings.Contains(out, "--repair") {
		t.Fatalf("reconcile with drift: %v\n%s", err, out)
	}
	if out, err := ctl("--repair"); err != nil || !strings.Contains(out, "0 differences remain") {
		t.Fatalf("reconcile --repair: %v\n%s", err, out)
	}
	s.control("/_local/delivery", map[string]any{"mode": "ordered"})
	s.control("/_local/webhooks/release", map[string]any{"order": "shuffled"})
	s.control("/_local/wait", nil)
	if out, err := ctl(); err != nil || !strings.Contains(out, " 0 differences") {
		t.Fatalf("reconcile after the held webhooks arrived: %v\n%s", err, out)
	}
}

// pay pays an organization's first invoice as its customer would: the
// invoice's PaymentIntent confirmed with a test card through the local
// Stripe's API (Stripe.js does the same with the client secret); then the
// webhooks of the payment are waited for.
func (s *stack) pay(t *testing.T, org string) {
	t.Helper()
	sub, _ := s.status(org)
	var got struct {
		LatestInvoice struct {
			PaymentIntent struct {
				ID string `json:"id"`
			} `json:"payment_intent"`
		} `json:"latest_invoice"`
	}
	s.stripeAPI(t, http.MethodGet, "/v1/subscriptions/"+sub["id"].(string)+"?expand[]=latest_invoice.payment_intent", nil, &got)
	var pi struct{ Status string }
	s.stripeAPI(t, http.MethodPost, "/v1/payment_intents/"+got.LatestInvoice.PaymentIntent.ID+"/confirm", url.Values{"payment_method": {"pm_card_visa"}}, &pi)
	if pi.Status != "succeeded" {
		t.Fatalf("paying %s: the PaymentIntent is %s", org, pi.Status)
	}
	s.control("/_local/wait", nil)
}

// checkLogsAreSafe reads every log line every process wrote during the
// flows: no secret (the stage's known keys), no email address and no raw
// webhook body may appear.
func (s *stack) checkLogsAreSafe(t *testing.T) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(s.stateDir, "logs", "*.log"))
	if len(files) < 5 {
		t.Fatalf("only %d log files", len(files))
	}
	forbidden := []string{"whsec_local_dev", "sk_test_local", "pk_test_local", "e2e@example.com", "py@example.com", "ctl@example.com",
		`"livemode": false`, `"object": "event"`, "Stripe-Signature", "v1="}
	lines := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines += strings.Count(string(b), "\n")
		for _, bad := range forbidden {
			if strings.Contains(string(b), bad) {
				t.Errorf("%s contains %q", filepath.Base(f), bad)
			}
		}
	}
	if out := s.out.String(); strings.Contains(out, "e2e@example.com") || strings.Contains(out, "sk_test_local\"") {
		t.Errorf("the console output contains personal data or a key")
	}
	t.Logf("checked %d log lines in %d files", lines, len(files))
}

// stripeAPI calls the stack's local Stripe as Stripe.js or a person would.
func (s *stack) stripeAPI(t *testing.T, method, path string, form url.Values, v any) {
	t.Helper()
	r, _ := http.NewRequest(method, s.stripeURL+path, strings.NewReader(form.Encode()))
	r.SetBasicAuth("sk_test_e2e", "")
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: %s", method, path, b)
	}
	_ = json.NewDecoder(resp.Body).Decode(v)
}
