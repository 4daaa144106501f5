package billing

import (
	"fmt"
	"log/slog"
	"testing"
)

// TestDecideDelivery_EachResultHasOneAnswer checks the webhook's one
// decision table: every result and error a delivery can end in, with its
// status, body, log outcome and level, and metric.
func TestDecideDelivery_EachResultHasOneAnswer(t *testing.T) {
	cases := []struct {
		name string
		res  WebhookResult
		err  error
		want deliveryAnswer
	}{
		{"processed", WebhookResult{Status: StatusProcessed, Outcome: "processed"}, nil,
			deliveryAnswer{200, `{"status":"processed"}`, "processed", slog.LevelInfo, "WebhookProcessed"}},
		{"duplicate", WebhookResult{Status: StatusDuplicate, Outcome: "duplicate"}, nil,
			deliveryAnswer{200, `{"status":"duplicate"}`, "duplicate", slog.LevelInfo, "WebhookDuplicate"}},
		{"ignored: another deployment's", WebhookResult{Status: StatusIgnored, Outcome: "foreign"}, nil,
			deliveryAnswer{200, `{"status":"ignored"}`, "foreign", slog.LevelInfo, "WebhookIgnored"}},
		{"ignored: older than the mirror", WebhookResult{Status: StatusIgnored, Outcome: "stale"}, nil,
			deliveryAnswer{200, `{"status":"ignored"}`, "stale", slog.LevelInfo, "WebhookIgnored"}},
		{"too large", WebhookResult{}, errTooLarge,
			deliveryAnswer{413, `{"error":"Request Entity Too Large"}`, "too_large", slog.LevelWarn, "WebhookRejected"}},
		{"bad signature", WebhookResult{}, errBadSignature,
			deliveryAnswer{400, `{"error":"Bad Request"}`, "rejected", slog.LevelWarn, "WebhookRejected"}},
		{"malformed", WebhookResult{}, errMalformedEvent,
			deliveryAnswer{400, `{"error":"Bad Request"}`, "rejected", slog.LevelWarn, "WebhookRejected"}},
		{"livemode mismatch", WebhookResult{EventID: "evt_1"}, errLivemode,
			deliveryAnswer{400, `{"error":"Bad Request"}`, "rejected", slog.LevelWarn, "WebhookRejected"}},
		{"billing disabled", WebhookResult{}, ErrBillingDisabled,
			deliveryAnswer{503, `{"status":"billing_disabled"}`, "unavailable", slog.LevelWarn, "WebhookUnavailable"}},
		{"no webhook secret", WebhookResult{}, errNoWebhookSecret,
			deliveryAnswer{503, `{"status":"billing_disabled"}`, "unavailable", slog.LevelWarn, "WebhookUnavailable"}},
		{"Secrets Manager down", WebhookResult{}, classifySecretError(fmt.Errorf("dial tcp: refused")),
			deliveryAnswer{503, `{"error":"Service Unavailable"}`, "unavailable", slog.LevelWarn, "WebhookUnavailable"}},
		{"DynamoDB unavailable", WebhookResult{EventID: "evt_1"}, Errorf(CodeUnavailable, "apply event: DynamoDB is unavailable"),
			deliveryAnswer{500, `{"error":"Internal Server Error"}`, "failed", slog.LevelError, "WebhookFailed"}},
		{"Stripe refused a re-fetch", WebhookResult{EventID: "evt_1", Refetched: true}, Errorf(CodeInternal, "re-fetch subscription"),
			deliveryAnswer{500, `{"error":"Internal Server Error"}`, "failed", slog.LevelError, "WebhookFailed"}},
		{"an unclassified error", WebhookResult{}, fmt.Errorf("boom"),
			deliveryAnswer{500, `{"error":"Internal Server Error"}`, "failed", slog.LevelError, "WebhookFailed"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := decideDelivery(c.res, c.err); got != c.want {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
		})
	}
}
