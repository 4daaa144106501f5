package billing

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/table"
)

const fuzzSecret = "whsec_fuzz"

// fuzzService answers every Stripe re-fetch with an immediate 404 and
// every DynamoDB request as throttled (testenv.DB with nothing behind it),
// so a fuzzed event runs its parsing and deciding with no I/O and never
// waits on network retries.
func fuzzService(f *testing.F) *Service {
	stripe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(404)
		_, _ = io.WriteString(w, `{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such object"}}`)
	}))
	f.Cleanup(stripe.Close)
	cfg := Config{Stage: StageDev, Namespace: "fuzz-ns", TableName: "t", StripeAPIBase: stripe.URL,
		Overrides: Keys{APIKey: "sk_test_fuzz", WebhookSecret: fuzzSecret}}
	s := NewService(cfg, NewKeySource(cfg, nil), table.New(&testenv.DB{}, "t"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.SetMetricsOutput(io.Discard)
	return s
}

// FuzzWebhookRequest feeds arbitrary bodies, signature headers and
// encodings to the webhook handler. Half the cases are signed correctly,
// so the decoder and the decision run too. It must never panic, must answer
// one of the documented statuses, and must never echo the body.
func FuzzWebhookRequest(f *testing.F) {
	f.Add([]byte(`{"id":"evt_1","object":"event","type":"customer.subscription.updated","api_version":"2023-10-16","created":1,"livemode":false,"data":{"object":{"id":"sub_1","metadata":{"billing_namespace":"fuzz-ns","org_id":"o"}}}}`), "", true, false)
	f.Add([]byte(`{"id":"evt_2","type":"invoice.paid","data":{"object":{"id":"in_1","subscription":"sub_1","customer":"cus_1"}}}`), "", true, true)
	f.Add([]byte(`{"id":"evt_3","type":"product.updated","data":{"object":{"metadata":{"billing_namespace":"fuzz-ns","billing_key":"k"}}}}`), "", true, false)
	f.Add([]byte(strings.Repeat("[", 10000)), "t=1,v1=00", false, false)
	f.Add([]byte(`{"id":"evt_4","type":"customer.created","livemode":true,"data":{"object":{}}}`), "t=abc,v1=,v0=zz", true, false)
	f.Add([]byte{0xff, 0xfe, 0x00}, "t=99999999999999999999,v1=00", false, true)
	svc := fuzzService(f)
	f.Fuzz(func(t *testing.T, body []byte, header string, sign, b64 bool) {
		if sign {
			header = webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: fuzzSecret, Timestamp: time.Now()}).Header
		}
		req := events.APIGatewayV2HTTPRequest{Body: string(body), Headers: map[string]string{"stripe-signature": header}}
		if b64 {
			req.Body, req.IsBase64Encoded = base64.StdEncoding.EncodeToString(body), true
		}
		resp, err := svc.HandleWebhook(context.Background(), req)
		if err != nil {
			t.Fatalf("a Lambda error: %v", err)
		}
		switch resp.StatusCode {
		case 200, 400, 413, 500, 503:
		default:
			t.Fatalf("undocumented status %d", resp.StatusCode)
		}
		if len(body) > 8 && strings.Contains(resp.Body, string(body)) {
			t.Fatalf("the answer echoes the body")
		}
	})
}

// FuzzDecodeCommand feeds arbitrary requests to the subscribe decoder. It
// must never panic, and what it accepts must hold the contract: the action
// table's required fields and org rule, and the ID rules written out here
// apart from the decoder's own patterns.
func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte(`{"action":"subscribe","org_id":"org_1","request_id":"r1","tier":"business","email":"a@b.co","instance_types":["gpu-t4"]}`))
	f.Add([]byte(`{"action":"record_usage","org_id":"org_1","request_id":"r2","instance_type":"gpu-t4","minutes":9223372036854775807}`))
	f.Add([]byte(`{"action":"record_usage","org_id":"org_1","request_id":"r2","instance_type":"gpu-t4","minutes":-1}`))
	f.Add([]byte(`{"action":"get_status","org_id":"org\u202e1"}`))
	f.Add([]byte(`{"action":"cancel","org_id":"o","request_id":"r","at_period_end":"yes"}`))
	f.Add([]byte(`{"action":` + strings.Repeat(`{"a":`, 5000)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := DecodeCommand(raw)
		if err != nil {
			if ErrorCode(err) != CodeInvalidRequest {
				t.Fatalf("a decoding error of code %s", ErrorCode(err))
			}
			return
		}
		act, ok := actions[c.Action]
		if !ok {
			t.Fatalf("accepted unknown action %q", c.Action)
		}
		if !act.noOrg && !contractID(c.OrgID, 64, "_-") {
			t.Fatalf("accepted org_id %q", c.OrgID)
		}
		if c.Minutes != nil && (*c.Minutes < 1 || *c.Minutes > 1_000_000) {
			t.Fatalf("accepted minutes %d", *c.Minutes)
		}
		if (act.mutating || c.RequestID != "") && !contractID(c.RequestID, 128, "_.:-") {
			t.Fatalf("accepted request_id %q", c.RequestID)
		}
		var fields map[string]json.RawMessage
		_ = json.Unmarshal(raw, &fields)
		for _, f := range act.required {
			if _, ok := fields[f]; !ok {
				t.Fatalf("accepted %s without its required %s", c.Action, f)
			}
		}
	})
}

// contractID is the contract's rule for org_id and request_id, written out
// apart from the decoder's patterns: 1 to max bytes of ASCII letters,
// digits and the given punctuation.
func contractID(s string, max int, punct string) bool {
	if len(s) < 1 || len(s) > max {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune(punct, r)) {
			return false
		}
	}
	return true
}

// FuzzCatalogValidate feeds arbitrary catalogs to parsing and validation:
// no panic, and an accepted catalog obeys every rule.
func FuzzCatalogValidate(f *testing.F) {
	f.Add(defaultCatalogJSON)
	f.Add([]byte(`{"entries":[{"key":"a","kind":"tier","name":"A","currency":"usd","interval":"month","unit_amount_decimal":"-0"}]}`))
	f.Add([]byte(`{"entries":[{"key":"a","kind":"tier","name":"A","currency":"usd","interval":"month","unit_amount_decimal":"1e309"}]}`))
	f.Add([]byte(`{"entries":[{"key":"` + strings.Repeat("k", 100000) + `"}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := ParseCatalog(raw)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			if ErrorCode(err) != CodeInvalidRequest {
				t.Fatalf("a validation error of code %s", ErrorCode(err))
			}
			return
		}
		seen := map[string]bool{}
		if len(c.Entries) == 0 || len(c.Entries) > MaxCatalogEntries {
			t.Fatalf("accepted %d entries", len(c.Entries))
		}
		for _, e := range c.Entries {
			if seen[e.Key] || !keyPattern.MatchString(e.Key) || strings.TrimSpace(e.Name) == "" || mustFloat(e.UnitAmountDecimal) < 0 {
				t.Fatalf("accepted entry %+v", e)
			}
			seen[e.Key] = true
		}
	})
}
