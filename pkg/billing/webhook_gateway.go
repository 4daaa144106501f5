package billing

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

// HandleWebhook is the webhook function's handler behind an API Gateway
// HTTP API (payload 2.0). It verifies the raw body (base64-decoded when API
// Gateway encoded it) and answers as decideDelivery says. It never returns
// a Lambda error, and its answers carry no internal detail.
func (s *Service) HandleWebhook(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	start, before := time.Now(), s.stripeCounts()
	var res WebhookResult
	payload, err := webhookBody(req)
	if err == nil {
		// Stripe slower than the invocation gives up first, leaving time
		// to answer 500 (Stripe retries) rather than time out.
		work, cancel := withAnswerTime(ctx)
		res, err = s.ProcessWebhook(work, payload, header(req.Headers, "Stripe-Signature"))
		cancel()
	}
	answer := decideDelivery(res, err)
	s.logDelivery(ctx, res, answer, err, time.Since(start), before)
	return events.APIGatewayV2HTTPResponse{StatusCode: answer.Status, Headers: map[string]string{"Content-Type": "application/json"}, Body: answer.Body}, nil
}

// deliveryAnswer is everything a delivery's result decides: what Stripe is
// answered, what the delivery's log line says, and which metric counts it.
type deliveryAnswer struct {
	Status  int
	Body    string
	Outcome string // the log line's outcome
	Level   slog.Level
	Metric  string // the Embedded Metric Format count it adds one to
}

// The webhook's metrics, in namespace BillingFunctions. WebhookRefetched
// counts the deliveries that asked Stripe, whatever their answer.
var webhookMetrics = []string{"WebhookProcessed", "WebhookDuplicate", "WebhookIgnored", "WebhookRejected",
	"WebhookUnavailable", "WebhookFailed", "WebhookRefetched", "StripeRequests", "StripeRateLimited"}

// decideDelivery is the one place that decides a delivery's answer:
//
//	result or error                         status  body                       log outcome       metric
//	processed                               200     {"status":"processed"}     processed         WebhookProcessed
//	duplicate                               200     {"status":"duplicate"}     duplicate         WebhookDuplicate
//	ignored (foreign, unhandled, stale, …)  200     {"status":"ignored"}       the reason        WebhookIgnored
//	a body over 1 MiB (not read)            413     {"error":…}                too_large         WebhookRejected
//	bad signature, malformed, livemode      400     {"error":"Bad Request"}    rejected          WebhookRejected
//	billing disabled, no webhook secret     503     {"status":"billing_disabled"} unavailable    WebhookUnavailable
//	Secrets Manager unreachable             503     {"error":…}                unavailable       WebhookUnavailable
//	anything else (nothing was written)     500     {"error":…}                failed            WebhookFailed
//
// Stripe retries every answer but a 2xx, for up to three days.
func decideDelivery(res WebhookResult, err error) deliveryAnswer {
	failure := func(status int, outcome string, level slog.Level, metric string) deliveryAnswer {
		return deliveryAnswer{Status: status, Body: jsonBody("error", http.StatusText(status)), Outcome: outcome, Level: level, Metric: metric}
	}
	switch {
	case err == nil:
		metric := map[string]string{StatusProcessed: "WebhookProcessed", StatusDuplicate: "WebhookDuplicate", StatusIgnored: "WebhookIgnored"}[res.Status]
		return deliveryAnswer{Status: http.StatusOK, Body: jsonBody("status", res.Status), Outcome: res.Outcome, Level: slog.LevelInfo, Metric: metric}
	case errors.Is(err, errTooLarge):
		return failure(http.StatusRequestEntityTooLarge, "too_large", slog.LevelWarn, "WebhookRejected")
	case errors.Is(err, ErrBillingDisabled), errors.Is(err, errNoWebhookSecret):
		a := failure(http.StatusServiceUnavailable, "unavailable", slog.LevelWarn, "WebhookUnavailable")
		a.Body = jsonBody("status", string(CodeBillingDisabled))
		return a
	case errors.Is(err, errSecretsDown):
		return failure(http.StatusServiceUnavailable, "unavailable", slog.LevelWarn, "WebhookUnavailable") // no keys at all: fail closed
	case ErrorCode(err) == CodeInvalidRequest:
		return failure(http.StatusBadRequest, "rejected", slog.LevelWarn, "WebhookRejected")
	}
	return failure(http.StatusInternalServerError, "failed", slog.LevelError, "WebhookFailed")
}

func jsonBody(key, value string) string {
	raw, _ := json.Marshal(map[string]string{key: value})
	return string(raw)
}

var errTooLarge = &Error{Code: CodeInvalidRequest, Message: "the body is over 1 MiB"}

// webhookBody returns the raw bytes Stripe signed: errTooLarge for a body
// over MaxWebhookBody (not decoded), errMalformedEvent for bad base64.
func webhookBody(req events.APIGatewayV2HTTPRequest) ([]byte, error) {
	if !req.IsBase64Encoded {
		if len(req.Body) > MaxWebhookBody {
			return nil, errTooLarge
		}
		return []byte(req.Body), nil
	}
	if base64.StdEncoding.DecodedLen(len(req.Body)) > MaxWebhookBody+2 {
		return nil, errTooLarge
	}
	payload, err := base64.StdEncoding.DecodeString(req.Body)
	switch {
	case err != nil:
		return nil, errMalformedEvent
	case len(payload) > MaxWebhookBody:
		return nil, errTooLarge
	}
	return payload, nil
}

// header reads a header case-insensitively: API Gateway lowercases names,
// other callers may not.
func header(h map[string]string, name string) string {
	if v, ok := h[strings.ToLower(name)]; ok {
		return v
	}
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// logDelivery writes the one log line and the metrics of a delivery, as
// its answer says. It never logs the body, the signature or a secret.
func (s *Service) logDelivery(ctx context.Context, res WebhookResult, a deliveryAnswer, err error, took time.Duration, before stripeCounts) {
	attrs := []any{"event_id", res.EventID, "type", res.Type, "status", a.Status, "outcome", a.Outcome,
		"refetched", res.Refetched, "stripe_requests", res.StripeRequests, "dynamodb_requests", res.DynamoRequests,
		"duration_ms", took.Milliseconds()}
	if err != nil {
		e := AsError(err)
		attrs = append(attrs, "error_code", e.Code, "error", e.Message, "stripe_request_id", e.StripeRequestID)
	}
	s.log.Log(ctx, a.Level, "webhook", attrs...)
	counts := map[string]int{a.Metric: 1}
	if res.Refetched {
		counts["WebhookRefetched"] = 1
	}
	s.emitEMF("webhook", webhookMetrics, s.addStripeCounts(counts, before))
}

// emitEMF writes one CloudWatch Embedded Metric Format line of counts, in
// namespace BillingFunctions with dimensions Function and Stage: Lambda
// turns it into metrics with no agent.
func (s *Service) emitEMF(function string, names []string, counts map[string]int) {
	var metrics []map[string]string
	line := map[string]any{"Function": function, "Stage": string(s.cfg.Stage)}
	for _, name := range names {
		metrics = append(metrics, map[string]string{"Name": name, "Unit": "Count"})
		line[name] = counts[name]
	}
	line["_aws"] = map[string]any{
		"Timestamp": time.Now().UnixMilli(),
		"CloudWatchMetrics": []any{map[string]any{
			"Namespace": "BillingFunctions", "Dimensions": [][]string{{"Function", "Stage"}}, "Metrics": metrics,
		}},
	}
	raw, _ := json.Marshal(line)
	s.emfMu.Lock()
	defer s.emfMu.Unlock()
	if _, err := fmt.Fprintln(s.emf, string(raw)); err != nil {
		s.log.Error("metrics line not written", "function", function, "error", err)
	}
}
