package billing

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"
)

// HandleUpsertProducts is the upsert-products function's handler. It always
// answers with a Response envelope.
func (s *Service) HandleUpsertProducts(ctx context.Context, raw json.RawMessage) (Response, error) {
	start := time.Now()
	var req UpsertRequest
	var result UpsertResult
	_, err := s.enabledKeys(ctx) // disabled billing is reported before anything else
	if err == nil {
		req, err = DecodeUpsertRequest(raw)
	}
	if err == nil {
		result, err = s.UpsertProducts(ctx, req)
	}
	if err != nil {
		e := AsError(err)
		level := slog.LevelError
		if e.Code == CodeBillingDisabled || e.Code == CodeInvalidRequest {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "upsert-products", "outcome", e.Code, "dry_run", req.DryRun, "error", e.Error(),
			"stripe_request_id", e.StripeRequestID, "duration_ms", time.Since(start).Milliseconds())
		return Failure(err), nil
	}
	s.log.InfoContext(ctx, "upsert-products", "outcome", "ok", "dry_run", req.DryRun, "created", result.Created,
		"updated", result.Updated, "archived", result.Archived, "unchanged", result.Unchanged, "duration_ms", time.Since(start).Milliseconds())
	return Success(result), nil
}
