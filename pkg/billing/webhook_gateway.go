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
// Gateway encoded it) and answers:
//
//	200 processed | duplicate | ignored
//	400 bad or missing signature, too old, malformed, livemode mismatch
//	413 a body over 1 MiB, unread
//	500 a transient failure: nothing was written, so Stripe retries
//	503 billing disabled, or no webhook secret
//
// It never returns a Lambda error, and its answers carry no internal detail.
func (s *Service) HandleWebhook(ctx context.Context, req events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	start := time.Now()
	var res WebhookResult
	status, err := http.StatusOK, error(nil)
	payload, tooBig, decodeErr := webhookBody(req)
	switch {
	case tooBig:
		status = http.StatusRequestEntityTooLarge
	case decodeErr != nil:
		status, err = http.StatusBadRequest, errMalformedEvent
	default:
		res, err = s.ProcessWebhook(ctx, payload, header(req.Headers, "Stripe-Signature"))
		status = webhookStatus(err)
	}

	body := map[string]string{"status": res.Status}
	if err != nil || tooBig {
		body = map[string]string{"error": http.StatusText(status)}
	}
	if status == http.StatusServiceUnavailable {
		body = map[string]string{"status": string(CodeBillingDisabled)}
		if !errors.Is(err, ErrBillingDisabled) && !errors.Is(err, errNoWebhookSecret) {
			body = map[string]string{"error": http.StatusText(status)}
		}
	}
	s.logDelivery(ctx, res, status, err, time.Since(start))
	raw, _ := json.Marshal(body)
	return events.APIGatewayV2HTTPResponse{StatusCode: status, Headers: map[string]string{"Content-Type": "application/json"}, Body: string(raw)}, nil
}

// webhookBody returns the raw bytes Stripe signed.
func webhookBody(req events.APIGatewayV2HTTPRequest) (payload []byte, tooBig bool, err error) {
	if !req.IsBase64Encoded {
		return []byte(req.Body), len(req.Body) > MaxWebhookBody, nil
	}
	if base64.StdEncoding.DecodedLen(len(req.Body)) > MaxWebhookBody+2 {
		return nil, true, nil
	}
	payload, err = base64.StdEncoding.DecodeString(req.Body)
	return payload, len(payload) > MaxWebhookBody, err
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

func webhookStatus(err error) int {
	if err == nil {
		return http.StatusOK
	}
	switch e := AsError(err); {
	case errors.Is(err, ErrBillingDisabled) || errors.Is(err, errNoWebhookSecret):
		return http.StatusServiceUnavailable
	case e.Code == CodeInvalidRequest:
		return http.StatusBadRequest
	case errors.Is(err, errSecretsDown):
		return http.StatusServiceUnavailable // no keys at all: fail closed
	}
	return http.StatusInternalServerError
}

// logDelivery writes the one log line and the metrics of a delivery. It
// never logs the body, the signature or a secret.
func (s *Service) logDelivery(ctx context.Context, res WebhookResult, status int, err error, took time.Duration) {
	outcome := res.Outcome
	level := slog.LevelInfo
	switch {
	case status == http.StatusRequestEntityTooLarge:
		outcome, level = "too_large", slog.LevelWarn
	case status == http.StatusServiceUnavailable:
		outcome, level = "unavailable", slog.LevelWarn
	case status == http.StatusBadRequest:
		outcome, level = "rejected", slog.LevelWarn
	case err != nil:
		outcome, level = "failed", slog.LevelError
	}
	attrs := []any{"event_id", res.EventID, "type", res.Type, "status", status, "outcome", outcome,
		"refetched", res.Refetched, "stripe_requests", res.StripeRequests, "dynamodb_requests", res.DynamoRequests,
		"duration_ms", took.Milliseconds()}
	if err != nil {
		e := AsError(err)
		attrs = append(attrs, "error_code", e.Code, "error", e.Message, "stripe_request_id", e.StripeRequestID)
	}
	s.log.Log(ctx, level, "webhook", attrs...)
	s.emitMetrics(res, outcome, err)
}

// emitMetrics writes one CloudWatch Embedded Metric Format line: Lambda
// turns it into metrics with no agent.
func (s *Service) emitMetrics(res WebhookResult, outcome string, err error) {
	counts := map[string]int{"WebhookProcessed": 0, "WebhookDuplicate": 0, "WebhookIgnored": 0, "WebhookFailed": 0, "WebhookRefetched": 0}
	switch {
	case err != nil && outcome == "failed":
		counts["WebhookFailed"] = 1
	case res.Status == StatusProcessed:
		counts["WebhookProcessed"] = 1
	case res.Status == StatusDuplicate:
		counts["WebhookDuplicate"] = 1
	case res.Status == StatusIgnored:
		counts["WebhookIgnored"] = 1
	}
	if res.Refetched {
		counts["WebhookRefetched"] = 1
	}
	s.emitEMF("webhook", []string{"WebhookProcessed", "WebhookDuplicate", "WebhookIgnored", "WebhookFailed", "WebhookRefetched"}, counts)
}

// emitEMF writes one CloudWatch Embedded Metric Format line of counts, in
// namespace BillingFunctions with dimensions Function and Stage.
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
	fmt.Fprintln(s.emf, string(raw))
}
