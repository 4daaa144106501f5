package billing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"github.com/stripe/stripe-go/v76/form"
)

// stripeClients builds one stripe-go client per API key, reused while the
// key stays the same. The key is never kept in the global stripe.Key.
type stripeClients struct {
	base string // STRIPE_API_BASE; empty is Stripe itself
	http *http.Client

	mu  sync.Mutex
	key string
	api *client.API
}

func newStripeClients(base string) *stripeClients {
	return &stripeClients{base: base, http: &http.Client{Timeout: 20 * time.Second}}
}

func (c *stripeClients) get(key string) *client.API {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.api != nil && c.key == key {
		return c.api
	}
	cfg := &stripe.BackendConfig{
		HTTPClient:        c.http,
		MaxNetworkRetries: stripe.Int64(2),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull}, // we log our own lines
	}
	if c.base != "" {
		cfg.URL = stripe.String(c.base)
	}
	b := stripe.GetBackendWithConfig(stripe.APIBackend, cfg)
	c.key, c.api = key, client.New(key, &stripe.Backends{API: b, Connect: b, Uploads: b})
	return c.api
}

// withStripe runs fn with a Stripe client for the current key. When Stripe
// answers 401, the secret is re-read once and fn runs once more, so a
// rotated key is picked up without a cold start. fn must be safe to run
// twice.
func (s *Service) withStripe(ctx context.Context, fn func(api *client.API) error) error {
	keys, err := s.enabledKeys(ctx)
	if err != nil {
		return err
	}
	err = fn(s.stripe.get(keys.APIKey))
	var se *stripe.Error
	if !errors.As(err, &se) || se.HTTPStatusCode != http.StatusUnauthorized {
		return err
	}
	s.log.WarnContext(ctx, "stripe rejected the API key; re-reading the secret once", "stripe_request_id", se.RequestID)
	keys, rerr := s.keys.Refresh(ctx)
	if rerr != nil {
		return rerr
	}
	if !keys.Enabled() {
		return ErrBillingDisabled
	}
	return fn(s.stripe.get(keys.APIKey))
}

// fromStripe translates a stripe-go error into the error vocabulary. The
// message names the operation and Stripe's code, never Stripe's text, which
// can echo input.
func fromStripe(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	var se *stripe.Error
	if !errors.As(err, &se) {
		// No answer from Stripe at all: a timeout or a dropped connection.
		return &Error{Code: CodeUnavailable, Message: op + ": Stripe did not answer", Retryable: true, Err: err}
	}
	out := &Error{StripeRequestID: se.RequestID, Err: err}
	code := string(se.Code)
	if code == "" {
		code = string(se.Type)
	}
	switch {
	case se.HTTPStatusCode == http.StatusTooManyRequests || se.HTTPStatusCode >= 500 || se.HTTPStatusCode == http.StatusConflict:
		out.Code, out.Retryable, out.Message = CodeUnavailable, true, fmt.Sprintf("%s: Stripe is unavailable (%d)", op, se.HTTPStatusCode)
	case se.HTTPStatusCode == http.StatusPaymentRequired || se.Type == stripe.ErrorTypeCard:
		out.Code, out.Message = CodePaymentRequired, fmt.Sprintf("%s: Stripe refused the payment (%s)", op, code)
	case se.HTTPStatusCode == http.StatusNotFound:
		out.Code, out.Message = CodeNotFound, fmt.Sprintf("%s: not found in Stripe", op)
	case se.HTTPStatusCode == http.StatusUnauthorized:
		out.Code, out.Message = CodeInternal, op+": Stripe rejected the API key"
	default:
		out.Code, out.Message = CodeInternal, fmt.Sprintf("%s: Stripe refused the request (%s)", op, code)
	}
	return out
}

// idempotencyKey derives a Stripe Idempotency-Key from what the call does:
// the operation, the exact form parameters, and the state it starts from.
// A retry of the same call reuses the key; the same parameters sent later
// from another state get a new one, so Stripe never replays a stale answer.
func idempotencyKey(scope string, params stripe.ParamsContainer, from any) string {
	values := &form.Values{}
	form.AppendTo(values, params)
	prior, _ := json.Marshal(from)
	sum := sha256.Sum256([]byte(scope + "\n" + values.Encode() + "\n" + string(prior)))
	return "bf-" + hex.EncodeToString(sum[:20])
}

// isAlreadyExists reports whether Stripe refused a create because the ID is
// taken.
func isAlreadyExists(err error) bool {
	var se *stripe.Error
	return errors.As(err, &se) && se.Code == stripe.ErrorCodeResourceAlreadyExists
}

func stripeInt(n int64) string { return strconv.FormatInt(n, 10) }

// keyHash derives a deterministic Stripe idempotency key or meter event
// identifier (43 characters) from its parts.
func keyHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s|", len(p), p)
	}
	return "bf-" + hex.EncodeToString(h.Sum(nil)[:20])
}
