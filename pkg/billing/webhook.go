package billing

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/baseten/billing-functions/pkg/table"
)

const (
	// WebhookTolerance is how old a signature's timestamp may be.
	WebhookTolerance = 300 * time.Second
	// MaxWebhookBody is the largest delivery accepted; Stripe's are far
	// smaller.
	MaxWebhookBody = 1 << 20
	// eventRecordTTL keeps processed event IDs longer than Stripe retries
	// (3 days) and than the Events API reaches back (30 days).
	eventRecordTTL = 35 * 24 * time.Hour
	// secretRefreshInterval bounds the secret re-reads that bad signatures
	// can cause, so that forged deliveries cannot flood Secrets Manager.
	secretRefreshInterval = 30 * time.Second
)

// Webhook statuses, as answered to Stripe.
const (
	StatusProcessed = "processed"
	StatusDuplicate = "duplicate"
	StatusIgnored   = "ignored"
)

// WebhookResult says what a delivery did. Outcome is finer than Status, for
// logs and metrics: processed, duplicate, foreign, unhandled, stale.
type WebhookResult struct {
	Status, Outcome string
	EventID, Type   string
	Refetched       bool
	StripeRequests  int
	DynamoRequests  int
}

var (
	errNoWebhookSecret = &Error{Code: CodeBillingDisabled, Message: "no webhook secret is configured: refusing every delivery"}
	errBadSignature    = &Error{Code: CodeInvalidRequest, Message: "invalid signature"}
	errMalformedEvent  = &Error{Code: CodeInvalidRequest, Message: "malformed event"}
	errLivemode        = &Error{Code: CodeInvalidRequest, Message: "livemode does not match the key's mode"}
)

// wireEvent is a delivery's envelope, decoded into the little the webhook
// reads; the object stays raw for its handler.
type wireEvent struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Created    int64  `json:"created"`
	APIVersion string `json:"api_version"`
	Livemode   bool   `json:"livemode"`
	Request    *struct {
		IdempotencyKey string `json:"idempotency_key"`
	} `json:"request"`
	Data *struct {
		Object json.RawMessage `json:"object"`
	} `json:"data"`
}

// webhookState is what deliveries share: when the secret was last re-read
// because of a bad signature.
type webhookState struct {
	mu          sync.Mutex
	lastRefresh time.Time
}

// ProcessWebhook verifies one delivery against the raw payload and mirrors
// the event into DynamoDB, exactly once and in order. It returns an *Error:
// billing_disabled (no key or no webhook secret: answer 503),
// invalid_request (bad signature, malformed, livemode mismatch: 400), or
// unavailable/internal (500: nothing was written, Stripe retries).
func (s *Service) ProcessWebhook(ctx context.Context, payload []byte, signature string) (WebhookResult, error) {
	keys, err := s.enabledKeys(ctx)
	if err != nil {
		return WebhookResult{}, err
	}
	if len(keys.WebhookSecrets()) == 0 {
		return WebhookResult{}, errNoWebhookSecret
	}
	if keys, err = s.verify(ctx, payload, signature, keys); err != nil {
		return WebhookResult{}, err
	}
	var ev wireEvent
	if err := json.Unmarshal(payload, &ev); err != nil || ev.ID == "" || ev.Type == "" || ev.Data == nil || len(ev.Data.Object) == 0 {
		return WebhookResult{}, errMalformedEvent
	}
	return s.handleEvent(ctx, &ev, keys)
}

// handleEvent mirrors one authentic event: a verified delivery, or an event
// read from Stripe's Events API (replay).
func (s *Service) handleEvent(ctx context.Context, ev *wireEvent, keys Keys) (WebhookResult, error) {
	res := WebhookResult{EventID: ev.ID, Type: ev.Type}
	if ev.Livemode != keys.Live() {
		return res, errLivemode
	}
	d := &delivery{svc: s, ev: ev, res: &res, mismatch: ev.APIVersion != stripe.APIVersion}
	handle, ok := webhookHandlers[ev.Type]
	if !ok {
		res.Status, res.Outcome = StatusIgnored, "unhandled"
		return res, nil
	}
	return res, handle(ctx, d)
}

// verify checks the signature with each webhook secret (the previous one
// counts during a rotation). When none matches, it re-reads the secret at
// most once per secretRefreshInterval and tries again.
func (s *Service) verify(ctx context.Context, payload []byte, signature string, keys Keys) (Keys, error) {
	if validSignature(payload, signature, keys) {
		return keys, nil
	}
	s.hooks.mu.Lock()
	mayRefresh := time.Since(s.hooks.lastRefresh) >= secretRefreshInterval
	if mayRefresh {
		s.hooks.lastRefresh = time.Now()
	}
	s.hooks.mu.Unlock()
	if !mayRefresh {
		return keys, errBadSignature
	}
	fresh, err := s.keys.Refresh(ctx)
	if err != nil || !validSignature(payload, signature, fresh) {
		return keys, errBadSignature
	}
	return fresh, nil
}

func validSignature(payload []byte, signature string, keys Keys) bool {
	for _, secret := range keys.WebhookSecrets() {
		if webhook.ValidatePayloadWithTolerance(payload, signature, secret, WebhookTolerance) == nil {
			return true
		}
	}
	return false
}

// delivery carries one event through its handler.
type delivery struct {
	svc      *Service
	ev       *wireEvent
	res      *WebhookResult
	mismatch bool // the payload is at another API version: trust Stripe, not it
}

type eventHandler func(ctx context.Context, d *delivery) error

var webhookHandlers = map[string]eventHandler{
	"customer.created": customers.handler(), "customer.updated": customers.handler(), "customer.deleted": customers.handler(),
	"customer.subscription.created": subscriptions.handler(), "customer.subscription.updated": subscriptions.handler(),
	"customer.subscription.deleted": subscriptions.handler(), "customer.subscription.paused": subscriptions.handler(),
	"customer.subscription.resumed": subscriptions.handler(), "customer.subscription.trial_will_end": subscriptions.handler(),
	"invoice.paid": invoices.handler(), "invoice.payment_succeeded": invoices.handler(), "invoice.payment_failed": invoices.handler(),
	"invoice.payment_action_required": invoices.handler(), "invoice.finalized": invoices.handler(),
	"invoice.marked_uncollectible": invoices.handler(), "invoice.voided": invoices.handler(),
	"checkout.session.completed": onCheckoutCompleted,
	// The catalog's objects, for drift made by hand (see onCatalogObject).
	"product.created": onCatalogObject, "product.updated": onCatalogObject, "product.deleted": onCatalogObject,
	"price.created": onCatalogObject, "price.updated": onCatalogObject, "price.deleted": onCatalogObject,
}

// owner returns the organization an object belongs to: from its
// billing_namespace and org_id metadata when it has them, else from the
// customer mapping. ok is false for another deployment's object.
func (d *delivery) owner(ctx context.Context, metadata map[string]string, customerID string) (string, bool, error) {
	ns := metadata[metaNamespace]
	switch {
	case ns == d.svc.cfg.Namespace && metadata["org_id"] != "":
		return metadata["org_id"], true, nil
	case ns != "" && ns != d.svc.cfg.Namespace:
		return "", false, nil
	case customerID == "":
		return "", false, nil
	}
	d.res.DynamoRequests++
	org, err := d.svc.store.OrgForStripeID(ctx, customerID)
	if errors.Is(err, table.ErrNotFound) {
		return "", false, nil
	}
	return org, err == nil, fromTable("find the customer's organization", err)
}

// refetch runs fn against Stripe, which answers at the pinned API version.
func (d *delivery) refetch(ctx context.Context, op string, fn func(api *stripeAPI) error) error {
	d.res.Refetched = true
	return d.svc.withStripe(ctx, op, func(api *stripeAPI) error {
		d.res.StripeRequests++
		return fn(api)
	})
}

// apply records the event and applies the change in one transaction. On a
// same-second tie it calls fetch for Stripe's current state and applies
// that. Nil fetch means the change already is Stripe's current state.
func (d *delivery) apply(ctx context.Context, org string, ch table.Change, fetched bool, fetch func(context.Context) (table.Change, error)) error {
	rec := table.Event{EventID: d.ev.ID, Type: d.ev.Type, OrgID: org, ProcessedAt: time.Now().UTC(),
		ExpiresAt: time.Now().Add(eventRecordTTL).Unix()}
	for attempt := 0; ; attempt++ {
		d.res.DynamoRequests++
		err := d.svc.store.ApplyEvent(ctx, rec, ch, fetched)
		var tie *table.TieError
		switch {
		case err == nil:
			d.res.Status, d.res.Outcome = StatusProcessed, StatusProcessed
			return nil
		case errors.Is(err, table.ErrDuplicateEvent):
			d.res.Status, d.res.Outcome = StatusDuplicate, StatusDuplicate
			return nil
		case errors.Is(err, table.ErrUnchanged):
			// The store already says this, from the same second. The event
			// is recorded, so that a redelivery after a newer change of the
			// same second is a duplicate, not a tie that asks Stripe.
			d.res.DynamoRequests++
			err := d.svc.store.RecordEvent(ctx, rec)
			if errors.Is(err, table.ErrDuplicateEvent) {
				d.res.Status, d.res.Outcome = StatusDuplicate, StatusDuplicate
				return nil
			}
			if err != nil {
				return fromTable("record the event", err)
			}
			d.res.Status, d.res.Outcome = StatusIgnored, "unchanged"
			return nil
		case errors.Is(err, table.ErrStale):
			d.res.Status, d.res.Outcome = StatusIgnored, "stale"
			return nil
		case errors.As(err, &tie) && !fetched && fetch != nil:
			if ch, err = fetch(ctx); err != nil {
				return err
			}
			fetched = true
		case errors.Is(err, table.ErrTransactionConflict) && attempt < 3:
			time.Sleep(time.Duration(20*(attempt+1)) * time.Millisecond) // a concurrent delivery of the same object
		default:
			return fromTable("apply event", err)
		}
	}
}

func (d *delivery) ignore(outcome string) error {
	d.res.Status, d.res.Outcome = StatusIgnored, outcome
	return nil
}

func decodeObject(d *delivery, v any) error {
	if err := json.Unmarshal(d.ev.Data.Object, v); err != nil {
		return errMalformedEvent
	}
	return nil
}
