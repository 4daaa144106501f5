package billing

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/stripe/stripe-go/v76"
)

// ReplayReport counts the failed-delivery events a run re-processed, by
// outcome.
type ReplayReport struct {
	Events    int `json:"events"`
	Processed int `json:"processed"`
	Duplicate int `json:"duplicate"`
	Ignored   int `json:"ignored"`
	Failed    int `json:"failed"`
}

// replayFailedEvents re-processes, oldest first, the events Stripe lists
// as not delivered (delivery_success=false; the Events API keeps 30 days).
// Each goes through the webhook's own path, so one already mirrored is a
// duplicate and another deployment's is ignored.
func (s *Service) replayFailedEvents(ctx context.Context, keys Keys) (ReplayReport, error) {
	var rep ReplayReport
	var evs []*stripe.Event
	err := s.withStripe(ctx, "list undelivered events", func(api *stripeAPI) error {
		evs = evs[:0]
		p := &stripe.EventListParams{ListParams: stripe.ListParams{Context: ctx, Limit: stripe.Int64(100)}, DeliverySuccess: stripe.Bool(false)}
		it := api.Events.List(p)
		for it.Next() {
			evs = append(evs, it.Event())
		}
		return it.Err()
	})
	if err != nil {
		return rep, err
	}
	slices.Reverse(evs)
	for _, e := range evs {
		if e.Data == nil || len(e.Data.Raw) == 0 {
			continue
		}
		ev := &wireEvent{ID: e.ID, Type: string(e.Type), Created: e.Created, APIVersion: e.APIVersion, Livemode: e.Livemode}
		if e.Request != nil {
			ev.Request = &struct {
				IdempotencyKey string `json:"idempotency_key"`
			}{IdempotencyKey: e.Request.IdempotencyKey}
		}
		ev.Data = &struct {
			Object json.RawMessage `json:"object"`
		}{Object: e.Data.Raw}
		rep.Events++
		res, err := s.handleEvent(ctx, ev, keys)
		switch {
		case err != nil:
			rep.Failed++
			s.log.WarnContext(ctx, "replay: event failed; Stripe's retries or the next run take it", "event_id", e.ID, "type", ev.Type, "error", AsError(err).Message)
		case res.Status == StatusProcessed:
			rep.Processed++
		case res.Status == StatusDuplicate:
			rep.Duplicate++
		default:
			rep.Ignored++
		}
	}
	return rep, nil
}
