package billing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
)

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func itemsByKey(sub *stripe.Subscription) map[string]string {
	out := map[string]string{}
	for _, it := range sub.Items.Data {
		out[it.Price.Metadata["billing_key"]] = it.ID
	}
	return out
}

func TestSubscribe_EveryActionSucceeds(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})

	cfg := f.ok(map[string]any{"action": "get_config"})
	if cfg["billing_enabled"] != true || cfg["publishable_key"] != "pk_test_fixture" || cfg["stage"] != "dev" || cfg["namespace"] != ns {
		t.Fatalf("get_config %v", cfg)
	}
	cus := f.ok(req("ensure_customer", "org_a", "email", "owner@example.com", "name", "Org A"))
	if !strings.HasPrefix(cus["customer_id"].(string), "cus_") {
		t.Fatalf("ensure_customer %v", cus)
	}
	again := f.ok(req("ensure_customer", "org_a", "email", "owner@example.com"))
	if again["customer_id"] != cus["customer_id"] {
		t.Fatal("ensure_customer made a second customer")
	}
	c, _ := f.sc().Customers.Get(cus["customer_id"].(string), nil)
	if c.Metadata["org_id"] != "org_a" || c.Metadata["billing_namespace"] != ns {
		t.Fatalf("customer metadata %v", c.Metadata)
	}

	st := f.subscribe("org_a", "tier", "business", "email", "owner@example.com", "instance_types", []string{"gpu-t4"})
	sub := subscriptionOf(t, st)
	if sub["status"] != "active" || sub["tier"] != "business" || strings.Join(strs(sub["instance_types"]), ",") != "gpu-t4" || st["customer_id"] != cus["customer_id"] {
		t.Fatalf("subscribe %v", st)
	}
	ssub := f.stripeSub(sub["id"].(string))
	if ssub.Metadata["org_id"] != "org_a" || ssub.Metadata["billing_namespace"] != ns {
		t.Fatalf("subscription metadata %v", ssub.Metadata)
	}

	got := f.ok(req("get_status", "org_a"))
	if subscriptionOf(t, got)["id"] != sub["id"] || got["delinquent"] != false || got["updated_at"] == nil {
		t.Fatalf("get_status %v", got)
	}
	st = f.ok(req("change_tier", "org_a", "tier", "starter", "proration", "none"))
	if subscriptionOf(t, st)["tier"] != "starter" {
		t.Fatalf("change_tier %v", st)
	}
	st = f.ok(req("set_instance_types", "org_a", "instance_types", []string{"gpu-a10g", "cpu-1x2"}))
	if got := strings.Join(strs(subscriptionOf(t, st)["instance_types"]), ","); got != "cpu-1x2,gpu-a10g" {
		t.Fatalf("set_instance_types: %s", got)
	}
	if r := f.ok(req("record_usage", "org_a", "instance_type", "gpu-a10g", "minutes", 30)); r["recorded"] != true {
		t.Fatalf("record_usage %v", r)
	}
	// The deployment's own portal configuration, which upsert-products made:
	// no saved default configuration is needed.
	portal := f.ok(map[string]any{"action": "create_portal_session", "org_id": "org_a", "return_url": "https://app.example.com/billing"})
	if !strings.HasPrefix(portal["url"].(string), "http") {
		t.Fatalf("portal %v", portal)
	}
	st = f.ok(req("cancel", "org_a"))
	if s := subscriptionOf(t, st); s["cancel_at_period_end"] != true || s["status"] != "active" {
		t.Fatalf("cancel at period end: %v", s)
	}
	st = f.ok(req("resume", "org_a"))
	if s := subscriptionOf(t, st); s["cancel_at_period_end"] != false || s["status"] != "active" {
		t.Fatalf("resume: %v", s)
	}
	if s := f.stripeSub(sub["id"].(string)); s.CancelAtPeriodEnd {
		t.Fatal("resume left cancel_at_period_end set in Stripe")
	}
	st = f.ok(req("cancel", "org_a", "at_period_end", false))
	if s := subscriptionOf(t, st); s["status"] != "canceled" {
		t.Fatalf("cancel now: %v", s)
	}
}

func TestSubscribe_ErrorCodes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	cases := []struct {
		name  string
		req   map[string]any
		code  billing.Code
		field string
	}{
		{"unknown action", map[string]any{"action": "upgrade", "org_id": "o"}, "invalid_request", "action"},
		{"missing org", map[string]any{"action": "get_status"}, "invalid_request", "org_id"},
		{"missing request_id", map[string]any{"action": "cancel", "org_id": "o"}, "invalid_request", "request_id"},
		{"missing tier", req("subscribe", "o", "email", "a@b.co"), "invalid_request", "tier"},
		{"unknown tier", req("subscribe", "o", "tier", "platinum", "email", "a@b.co"), "invalid_request", "tier"},
		{"instance type as tier", req("subscribe", "o", "tier", "gpu-t4", "email", "a@b.co"), "invalid_request", "tier"},
		{"unknown instance type", req("subscribe", "o", "tier", "starter", "email", "a@b.co", "instance_types", []string{"tpu-v9"}), "invalid_request", "instance_types"},
		{"wrong type", req("record_usage", "o", "instance_type", "gpu-t4", "minutes", "ten"), "invalid_request", "minutes"},
		{"too many minutes", req("record_usage", "o", "instance_type", "gpu-t4", "minutes", 1_000_001), "invalid_request", "minutes"},
		{"unknown field", req("cancel", "o", "refund", true), "invalid_request", "refund"},
		{"bad email", req("ensure_customer", "o", "email", "nope"), "invalid_request", "email"},
		{"plain http return url", map[string]any{"action": "create_portal_session", "org_id": "o", "return_url": "http://evil.example.com"}, "invalid_request", "return_url"},
		{"no subscription", req("change_tier", "o", "tier", "business"), "not_found", ""},
		{"no customer", map[string]any{"action": "create_portal_session", "org_id": "o", "return_url": "https://x.example.com"}, "not_found", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := f.call(c.req)
			wantError(t, resp, c.code)
			if !strings.Contains(resp.Error.Message, c.field) || resp.Error.Retryable {
				t.Fatalf("message %q does not name %s (or is retryable)", resp.Error.Message, c.field)
			}
		})
	}

	f.subscribe("org_c", "tier", "starter", "email", "c@example.com")
	wantError(t, f.call(req("subscribe", "org_c", "tier", "business", "email", "c@example.com")), "conflict")

	f.stripe.InjectFault(stripelocal.Fault{Kind: "card_declined", Path: "POST /v1/subscriptions"})
	resp := f.call(req("subscribe", "org_d", "tier", "business", "email", "d@example.com"))
	wantError(t, resp, "payment_required")
	if resp.Error.StripeRequestID == "" {
		t.Fatal("a Stripe failure carries no stripe_request_id")
	}
	f.stripe.InjectFault(stripelocal.Fault{Kind: "500", Path: "POST /v1/subscriptions"})
	resp = f.call(req("subscribe", "org_d", "tier", "business", "email", "d@example.com"))
	if wantError(t, resp, "unavailable"); !resp.Error.Retryable {
		t.Fatal("unavailable is not retryable")
	}
	f.stripe.InjectFault(stripelocal.Fault{Kind: "400", Path: "POST /v1/subscriptions"})
	resp = f.call(req("subscribe", "org_d", "tier", "business", "email", "d@example.com"))
	wantError(t, resp, "internal")
	if strings.Contains(resp.Error.Message, "injected") {
		t.Fatalf("an internal error leaks Stripe's text: %s", resp.Error.Message)
	}
	wantError(t, disabledCall(t, req("get_status", "org_x")), "billing_disabled")
}

func disabledCall(t *testing.T, r map[string]any) billing.Response {
	raw, _ := json.Marshal(r)
	resp, _ := disabledService(t).HandleSubscribe(context.Background(), raw)
	return resp
}

func TestSubscribe_BillingDisabledIsClearAndGetConfigSaysSo(t *testing.T) {
	t.Parallel()
	for _, action := range []string{"subscribe", "get_status", "record_usage"} {
		r := req(action, "org_1", "tier", "starter", "email", "a@b.co")
		if action != "subscribe" {
			r = req(action, "org_1")
		}
		if action == "record_usage" {
			r = req(action, "org_1", "instance_type", "gpu-t4", "minutes", 1)
		}
		wantError(t, disabledCall(t, r), "billing_disabled")
	}
	resp := disabledCall(t, map[string]any{"action": "get_config"})
	raw, _ := json.Marshal(resp)
	if !resp.OK || !strings.Contains(string(raw), `"billing_enabled":false`) || !strings.Contains(string(raw), `"publishable_key":""`) {
		t.Fatalf("get_config with billing disabled: %s", raw)
	}
}

func TestSubscribe_ReplayWithTheSameRequestIDReturnsTheFirstResult(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	r := req("subscribe", "org_r", "tier", "business", "email", "r@example.com", "instance_types", []string{"gpu-t4"})
	first, _ := json.Marshal(f.call(r))
	f.stripe.ResetCounts()
	second, _ := json.Marshal(f.call(r))
	if string(first) != string(second) {
		t.Fatalf("replay differs:\n%s\n%s", first, second)
	}
	if c := f.stripe.Counts(); len(c) != 0 {
		t.Fatalf("a replay reached Stripe: %v", c)
	}
}

func TestSubscribe_SameRequestIDWithOtherFieldsIsConflict(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	r := req("ensure_customer", "org_m", "email", "m@example.com")
	f.ok(r)
	r["email"] = "other@example.com"
	resp := f.call(r)
	wantError(t, resp, "conflict")
	if !strings.Contains(resp.Error.Message, "request_id") {
		t.Fatalf("message %q", resp.Error.Message)
	}
}

func TestSubscribe_TenConcurrentCallsMakeOneCustomerAndOneSubscription(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	var wg sync.WaitGroup
	resps := make([]billing.Response, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw, _ := json.Marshal(req("subscribe", "org_conc", "tier", "business", "email", "c@example.com"))
			resps[i], _ = f.svc.HandleSubscribe(context.Background(), raw)
		}()
	}
	wg.Wait()
	oks := 0
	for _, r := range resps {
		switch {
		case r.OK:
			oks++
		case r.Error.Code != "conflict":
			t.Fatalf("a concurrent subscribe failed with %+v", r.Error)
		}
	}
	if oks != 1 {
		t.Fatalf("%d subscribes succeeded, want 1", oks)
	}
	sc := f.sc()
	customers, subs := 0, 0
	for it := sc.Customers.List(&stripe.CustomerListParams{}); it.Next(); {
		if it.Customer().Metadata["org_id"] == "org_conc" {
			customers++
		}
	}
	for it := sc.Subscriptions.List(&stripe.SubscriptionListParams{}); it.Next(); {
		subs++
	}
	if customers != 1 || subs != 1 {
		t.Fatalf("Stripe holds %d customers and %d subscriptions for the org, want 1 and 1", customers, subs)
	}
}

func TestRecordUsage_RetriedThreeTimesCountsOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	st := f.subscribe("org_u", "tier", "starter", "email", "u@example.com", "instance_types", []string{"gpu-a100"})
	r := req("record_usage", "org_u", "instance_type", "gpu-a100", "minutes", 42)
	// The first answer is lost after Stripe counted the event.
	f.stripe.InjectFault(stripelocal.Fault{Kind: "500", After: true, Path: "POST /v1/billing/meter_events"})
	wantError(t, f.call(r), "unavailable")
	f.ok(r)
	f.ok(r)
	if got := f.meteredMinutes("gpu-a100", *strPtr(st["customer_id"])); got != 42 {
		t.Fatalf("metered usage %v, want 42 once", got)
	}
	wantError(t, f.call(req("record_usage", "org_u", "instance_type", "gpu-t4", "minutes", 1)), "not_found")
}

func TestGetStatus_MakesNoStripeRequest(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	f.subscribe("org_s", "tier", "starter", "email", "s@example.com")
	f.stripe.ResetCounts()
	f.db.Reset()
	f.ok(map[string]any{"action": "get_status", "org_id": "org_s"})
	reads, writes := f.db.Reset()
	t.Logf("get_status: %d DynamoDB requests, %d Stripe requests", reads+writes, len(f.stripe.Counts()))
	if c := f.stripe.Counts(); len(c) != 0 || reads != 1 || writes != 0 {
		t.Fatalf("get_status made Stripe requests %v and %d DynamoDB reads, %d writes", c, reads, writes)
	}
}

func TestSubscribe_WebhooksForTheSameChangeAreDuplicatesOrOlder(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	var logs safeBuffer
	f.svc = billing.NewService(f.svc.Config(), billing.NewKeySource(f.svc.Config(), nil), f.store, slog.New(slog.NewJSONHandler(&logs, nil)))
	f.svc.SetMetricsOutput(io.Discard)
	f.gatewayFor()
	f.upsert(billing.UpsertRequest{})
	f.stripe.SetDelivery(stripelocal.DeliveryMode{Mode: "hold"}) // the webhooks come after the answer
	st := f.ok(req("subscribe", "org_w", "tier", "business", "email", "w@example.com", "instance_types", []string{"gpu-t4"}))
	f.stripe.Release("shuffled")
	f.stripe.WaitDeliveries()
	after := f.ok(map[string]any{"action": "get_status", "org_id": "org_w"})
	delete(st, "updated_at")
	delete(after, "updated_at")
	if a, b := fmt.Sprint(st), fmt.Sprint(after); a != b {
		t.Fatalf("the webhooks changed the mirror:\n%s\n%s", a, b)
	}
	outcomes := map[string]int{}
	for _, line := range strings.Split(logs.String(), "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == "webhook" && strings.HasPrefix(fmt.Sprint(l["type"]), "customer.subscription.") {
			outcomes[fmt.Sprint(l["outcome"], "/refetched=", l["refetched"])]++
			if l["status"] != float64(200) {
				t.Errorf("a webhook for the same change answered %v", l["status"])
			}
		}
	}
	t.Logf("webhooks for subscribe's own change: %v", outcomes)
	for k := range outcomes {
		if !strings.HasPrefix(k, "stale/") && !strings.HasPrefix(k, "unchanged/") && !strings.HasPrefix(k, "duplicate/") {
			t.Fatalf("a webhook for subscribe's own change was not a duplicate or older: %v", outcomes)
		}
	}
}

func TestChangeTier_SwapsTheTierItemAndKeepsInstanceTypes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	st := f.subscribe("org_t", "tier", "starter", "email", "t@example.com", "instance_types", []string{"gpu-t4", "cpu-2x8"})
	id := subscriptionOf(t, st)["id"].(string)
	before := itemsByKey(f.stripeSub(id))
	f.ok(req("change_tier", "org_t", "tier", "business"))
	after := itemsByKey(f.stripeSub(id))
	if _, ok := after["business"]; !ok || len(after) != 3 || after["business"] != before["starter"] {
		t.Fatalf("items %v → %v: want the tier item's price swapped in place", before, after)
	}
	if after["gpu-t4"] != before["gpu-t4"] || after["cpu-2x8"] != before["cpu-2x8"] {
		t.Fatalf("instance-type items changed: %v → %v", before, after)
	}
}

func TestSetInstanceTypes_AddsAndRemovesExactlyTheDifference(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	st := f.subscribe("org_i", "tier", "starter", "email", "i@example.com", "instance_types", []string{"gpu-t4", "cpu-1x2"})
	id := subscriptionOf(t, st)["id"].(string)
	before := itemsByKey(f.stripeSub(id))
	f.stripe.ResetCounts()
	f.ok(req("set_instance_types", "org_i", "instance_types", []string{"cpu-1x2", "gpu-a100"}))
	after := itemsByKey(f.stripeSub(id))
	keys := make([]string, 0, len(after))
	for k := range after {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if strings.Join(keys, ",") != "cpu-1x2,gpu-a100,starter" || after["cpu-1x2"] != before["cpu-1x2"] || after["starter"] != before["starter"] {
		t.Fatalf("items %v → %v", before, after)
	}
	if c := f.stripe.Counts(); c["POST /v1/subscriptions/{id}"] != 1 {
		t.Fatalf("Stripe requests %v: want one subscription update", c)
	}
	f.stripe.ResetCounts()
	f.ok(req("set_instance_types", "org_i", "instance_types", []string{"gpu-a100", "cpu-1x2"}))
	if c := f.stripe.Counts(); len(c) != 0 {
		t.Fatalf("an unchanged set reached Stripe: %v", c)
	}
}

func TestSubscribe_TransientStripeFailureThenRetryMakesNoDuplicate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	r := req("subscribe", "org_f", "tier", "business", "email", "f@example.com")
	f.stripe.InjectFault(stripelocal.Fault{Kind: "500", After: true, Path: "POST /v1/subscriptions"}) // made, answer lost
	resp := f.call(r)
	if wantError(t, resp, "unavailable"); !resp.Error.Retryable {
		t.Fatal("want retryable")
	}
	st := f.ok(r)
	if subscriptionOf(t, st)["status"] != "incomplete" {
		t.Fatalf("retry %v: want the subscription the first attempt made, waiting for its first payment", st)
	}
	n := 0
	for it := f.sc().Subscriptions.List(&stripe.SubscriptionListParams{}); it.Next(); {
		n++
	}
	if n != 1 {
		t.Fatalf("%d subscriptions in Stripe, want 1", n)
	}
}

func TestSubscribe_StripeAuthErrorRefreshesTheSecretOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	secretID := createSecret(t, `{"api_key":"sk_test_old","publishable_key":"pk_test_x","webhook_secret":"whsec_x"}`)
	cfg := f.svc.Config()
	cfg.StripeSecretID, cfg.Overrides = secretID, billing.Keys{}
	counting := &countingSecrets{SecretsClient: testenv.SecretsManager(t)}
	svc := billing.NewService(cfg, billing.NewKeySource(cfg, counting), f.store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	raw, _ := json.Marshal(req("ensure_customer", "org_k", "email", "k@example.com"))
	if resp, _ := svc.HandleSubscribe(context.Background(), raw); !resp.OK {
		t.Fatalf("with the old key: %+v", resp.Error)
	}
	f.stripe.RevokeKey("sk_test_old") // the key is rolled in Stripe and the secret
	putSecret(t, secretID, `{"api_key":"sk_test_new","publishable_key":"pk_test_x","webhook_secret":"whsec_x"}`)
	raw, _ = json.Marshal(req("subscribe", "org_k", "tier", "starter", "email", "k@example.com"))
	if resp, _ := svc.HandleSubscribe(context.Background(), raw); !resp.OK {
		t.Fatalf("after the roll: %+v", resp.Error)
	}
	if got := counting.calls.Load(); got != 2 {
		t.Fatalf("GetSecretValue calls = %d, want 2 (first read, one refresh on 401)", got)
	}
}

func TestSubscribe_LogsCarryNoPersonalData(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	var logs safeBuffer
	svc := billing.NewService(f.svc.Config(), billing.NewKeySource(f.svc.Config(), nil), f.store, slog.New(slog.NewJSONHandler(&logs, nil)))
	raw, _ := json.Marshal(req("subscribe", "org_p", "tier", "starter", "email", "private.person@example.com", "name", "Private Person"))
	if resp, _ := svc.HandleSubscribe(context.Background(), raw); !resp.OK {
		t.Fatal(resp.Error)
	}
	out := logs.String()
	for _, secret := range []string{"private.person@example.com", "Private Person", "sk_test_fixture"} {
		if strings.Contains(out, secret) {
			t.Fatalf("the logs contain %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, `"action":"subscribe"`) || !strings.Contains(out, `"org_id":"org_p"`) || !strings.Contains(out, "duration_ms") {
		t.Fatalf("the log line lacks action, org or duration:\n%s", out)
	}
}

func TestSubscribe_HostileInputGetsAClearErrorAndNoWrite(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	f.stripe.ResetCounts()
	f.db.Reset()
	huge := strings.Repeat("A", 20000)
	cases := map[string]string{
		"json bomb":           `{"action":"subscribe","org_id":"o","request_id":"r","tier":` + strings.Repeat(`[`, 100000) + `}`,
		"deep nesting":        `{"action":"cancel","org_id":"o","request_id":"r","at_period_end":` + strings.Repeat(`{"a":`, 2000) + `1` + strings.Repeat(`}`, 2000) + `}`,
		"huge string":         `{"action":"ensure_customer","org_id":"o","request_id":"r","email":"` + huge + `@x.co"}`,
		"huge org_id":         `{"action":"get_status","org_id":"` + huge[:300] + `"}`,
		"unicode org_id":      `{"action":"get_status","org_id":"org\u202e1"}`,
		"homoglyph org_id":    `{"action":"get_status","org_id":"оrg_1"}`,
		"null byte org_id":    `{"action":"get_status","org_id":"org\u00001"}`,
		"negative minutes":    `{"action":"record_usage","org_id":"o","request_id":"r","instance_type":"gpu-t4","minutes":-5}`,
		"overflowing minutes": `{"action":"record_usage","org_id":"o","request_id":"r","instance_type":"gpu-t4","minutes":99999999999999999999999}`,
		"fractional minutes":  `{"action":"record_usage","org_id":"o","request_id":"r","instance_type":"gpu-t4","minutes":1.5}`,
		"not an object":       `[1,2,3]`,
		"empty":               ``,
	}
	// Every field of the request, read from Command itself, so that a new
	// field is covered too; the later key wins in JSON.
	commandType := reflect.TypeFor[billing.Command]()
	for i := range commandType.NumField() {
		field, _, _ := strings.Cut(commandType.Field(i).Tag.Get("json"), ",")
		if field == "" || field == "-" {
			continue
		}
		cases["wrong type in "+field] = fmt.Sprintf(`{"action":"subscribe","org_id":"o","request_id":"r","tier":"starter","email":"a@b.co","%s":{"x":[1]}}`, field)
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			resp, err := f.svc.HandleSubscribe(context.Background(), json.RawMessage(raw))
			if err != nil {
				t.Fatalf("a Lambda error: %v", err)
			}
			wantError(t, resp, "invalid_request")
			if len(resp.Error.Message) > 200 || strings.Contains(resp.Error.Message, huge[:50]) {
				t.Fatalf("the message is not short and clean: %q", resp.Error.Message)
			}
		})
	}
	if _, writes := f.db.Reset(); writes != 0 {
		t.Fatalf("hostile input caused %d DynamoDB writes", writes)
	}
	if c := f.stripe.Counts(); len(c) != 0 {
		t.Fatalf("hostile input reached Stripe: %v", c)
	}
}
