package billing

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
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
func fuzzService(f testing.TB) *Service {
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

// The fuzz targets. `make fuzz` runs each coverage-guided (FUZZTIME, 30 s
// by default); `make test` replays their seeds and the corpus in testdata/,
// and runs each property over thousands of random mutations of the seeds in
// the race build (TestFuzzProperties_…), which costs no instrumented build.

var webhookSeeds = []struct {
	body      []byte
	header    string
	sign, b64 bool
}{
	{[]byte(`{"id":"evt_1","object":"event","type":"customer.subscription.updated","api_version":"2023-10-16","created":1,"livemode":false,"data":{"object":{"id":"sub_1","metadata":{"billing_namespace":"fuzz-ns","org_id":"o"}}}}`), "", true, false},
	{[]byte(`{"id":"evt_2","type":"invoice.paid","data":{"object":{"id":"in_1","subscription":"sub_1","customer":"cus_1"}}}`), "", true, true},
	{[]byte(`{"id":"evt_3","type":"product.updated","data":{"object":{"metadata":{"billing_namespace":"fuzz-ns","billing_key":"k"}}}}`), "", true, false},
	{[]byte(strings.Repeat("[", 10000)), "t=1,v1=00", false, false},
	{[]byte(`{"id":"evt_4","type":"customer.created","livemode":true,"data":{"object":{}}}`), "t=abc,v1=,v0=zz", true, false},
	{[]byte{0xff, 0xfe, 0x00}, "t=99999999999999999999,v1=00", false, true},
}

// checkWebhookRequest is the webhook's property: for any body, signature
// header and encoding (half the cases signed correctly, so that decoding
// and deciding run too) it never panics, answers one of the documented
// statuses, and never echoes the body.
func checkWebhookRequest(t *testing.T, svc *Service, body []byte, header string, sign, b64 bool) {
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
}

func FuzzWebhookRequest(f *testing.F) {
	for _, s := range webhookSeeds {
		f.Add(s.body, s.header, s.sign, s.b64)
	}
	svc := fuzzService(f)
	f.Fuzz(func(t *testing.T, body []byte, header string, sign, b64 bool) {
		checkWebhookRequest(t, svc, body, header, sign, b64)
	})
}

var commandSeeds = [][]byte{
	[]byte(`{"action":"subscribe","org_id":"org_1","request_id":"r1","tier":"business","email":"a@b.co","instance_types":["gpu-t4"]}`),
	[]byte(`{"action":"record_usage","org_id":"org_1","request_id":"r2","instance_type":"gpu-t4","minutes":9223372036854775807}`),
	[]byte(`{"action":"record_usage","org_id":"org_1","request_id":"r2","instance_type":"gpu-t4","minutes":-1}`),
	[]byte(`{"action":"get_status","org_id":"org\u202e1"}`),
	[]byte(`{"action":"cancel","org_id":"o","request_id":"r","at_period_end":"yes"}`),
	[]byte(`{"action":"reconcile","repair":true}`),
	[]byte(`{"action":` + strings.Repeat(`{"a":`, 5000)),
}

// checkDecodeCommand is the decoder's property: it never panics, refuses
// only with invalid_request, and what it accepts holds the contract: the
// action table's required fields and org rule, and the ID rules written
// out here apart from the decoder's own patterns.
func checkDecodeCommand(t *testing.T, raw []byte) {
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
}

func FuzzDecodeCommand(f *testing.F) {
	for _, s := range commandSeeds {
		f.Add(s)
	}
	f.Fuzz(checkDecodeCommand)
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

var catalogSeeds = [][]byte{
	defaultCatalogJSON,
	[]byte(`{"entries":[{"key":"a","kind":"tier","name":"A","currency":"usd","interval":"month","unit_amount_decimal":"-0"}]}`),
	[]byte(`{"entries":[{"key":"a","kind":"tier","name":"A","currency":"usd","interval":"month","unit_amount_decimal":"1e309"}]}`),
	[]byte(`{"entries":[{"key":"` + strings.Repeat("k", 100000) + `"}]}`),
}

// checkCatalog is the catalog's property: parsing and validation never
// panic, and a catalog they accept obeys every rule.
func checkCatalog(t *testing.T, raw []byte) {
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
		if seen[e.Key] || !keyPattern.MatchString(e.Key) || strings.TrimSpace(e.Name) == "" || strings.HasPrefix(e.UnitAmountDecimal, "-") {
			t.Fatalf("accepted entry %+v", e)
		}
		seen[e.Key] = true
	}
}

func FuzzCatalogValidate(f *testing.F) {
	for _, s := range catalogSeeds {
		f.Add(s)
	}
	f.Fuzz(checkCatalog)
}

// mutations returns n inputs made from seeds by a few random edits each:
// bytes flipped, inserted from the seeds' own alphabet, deleted, or a run
// copied from another seed. The generator is seeded, so a failure repeats.
func mutations(seeds [][]byte, n int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([][]byte, 0, n)
	for len(out) < n {
		b := slices.Clone(seeds[rng.IntN(len(seeds))])
		for edits := 1 + rng.IntN(4); edits > 0; edits-- {
			pos := 0
			if len(b) > 0 {
				pos = rng.IntN(len(b))
			}
			switch rng.IntN(4) {
			case 0:
				if len(b) > 0 {
					b[pos] ^= byte(1 << rng.IntN(8))
				}
			case 1:
				other := seeds[rng.IntN(len(seeds))]
				if len(other) > 0 {
					b = slices.Insert(b, pos, other[rng.IntN(len(other))])
				}
			case 2:
				if len(b) > 0 {
					b = slices.Delete(b, pos, min(len(b), pos+1+rng.IntN(8)))
				}
			default:
				other := seeds[rng.IntN(len(seeds))]
				if len(other) > 1 {
					from := rng.IntN(len(other) - 1)
					b = slices.Insert(b, min(pos, len(b)), other[from:min(len(other), from+1+rng.IntN(32))]...)
				}
			}
		}
		out = append(out, b)
	}
	return out
}

func TestFuzzProperties_WebhookRequestsHoldUnderRandomMutations(t *testing.T) {
	svc := fuzzService(t)
	var bodies [][]byte
	for _, s := range webhookSeeds {
		bodies = append(bodies, s.body)
	}
	for i, body := range mutations(bodies, 3000) {
		checkWebhookRequest(t, svc, body, webhookSeeds[i%len(webhookSeeds)].header, i%2 == 0, i%3 == 0)
	}
}

func TestFuzzProperties_CommandsHoldUnderRandomMutations(t *testing.T) {
	for _, raw := range mutations(commandSeeds, 20000) {
		checkDecodeCommand(t, raw)
	}
}

func TestFuzzProperties_CatalogsHoldUnderRandomMutations(t *testing.T) {
	for _, raw := range mutations(catalogSeeds[:3], 3000) {
		checkCatalog(t, raw)
	}
}
