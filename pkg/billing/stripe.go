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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/billing/meter"
	"github.com/stripe/stripe-go/v76/billing/meterevent"
	"github.com/stripe/stripe-go/v76/billing/metereventsummary"
	"github.com/stripe/stripe-go/v76/billingportal/configuration"
	"github.com/stripe/stripe-go/v76/billingportal/session"
	checkoutsession "github.com/stripe/stripe-go/v76/checkout/session"
	"github.com/stripe/stripe-go/v76/customer"
	"github.com/stripe/stripe-go/v76/event"
	"github.com/stripe/stripe-go/v76/form"
	"github.com/stripe/stripe-go/v76/invoice"
	"github.com/stripe/stripe-go/v76/paymentintent"
	"github.com/stripe/stripe-go/v76/price"
	"github.com/stripe/stripe-go/v76/product"
	"github.com/stripe/stripe-go/v76/setupintent"
	"github.com/stripe/stripe-go/v76/subscription"
	"github.com/stripe/stripe-go/v76/subscriptionschedule"
	"github.com/stripe/stripe-go/v76/webhookendpoint"
)

// stripeClients builds one stripe-go client per API key, reused while the
// key stays the same. The key is never kept in the global stripe.Key.
type stripeClients struct {
	base  string // STRIPE_API_BASE; empty is Stripe itself
	http  *http.Client
	tally *stripeTally

	mu  sync.Mutex
	key string
	api *stripeAPI
}

// StripeRequestTimeout bounds one request to Stripe. stripe-go tries a
// request up to three times, so a function's timeout must exceed three of
// these with the backoff between (a template test checks each function's).
const StripeRequestTimeout = 5 * time.Second

func newStripeClients(base string) *stripeClients {
	tally := &stripeTally{next: http.DefaultTransport}
	return &stripeClients{base: base, http: &http.Client{Timeout: StripeRequestTimeout, Transport: tally}, tally: tally}
}

// stripeTally counts every request sent to Stripe (each of stripe-go's
// tries) and Stripe's 429 answers: the functions' share of the account's
// request budget, which every deployment on the account shares.
type stripeTally struct {
	next            http.RoundTripper
	requests, ratel atomic.Int64
}

func (t *stripeTally) RoundTrip(r *http.Request) (*http.Response, error) {
	t.requests.Add(1)
	resp, err := t.next.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		t.ratel.Add(1)
	}
	return resp, err
}

// stripeCounts are the tally at one moment; since gives what was sent after.
type stripeCounts struct{ requests, rateLimited int64 }

func (s *Service) stripeCounts() stripeCounts {
	return stripeCounts{s.stripe.tally.requests.Load(), s.stripe.tally.ratel.Load()}
}

// stripeMetrics are the metrics of the Stripe budget every function emits.
var stripeMetrics = []string{"StripeRequests", "StripeRateLimited"}

// addStripeCounts adds to counts what was sent to Stripe since before (one
// invocation: Lambda runs one at a time per environment).
func (s *Service) addStripeCounts(counts map[string]int, before stripeCounts) map[string]int {
	now := s.stripeCounts()
	counts["StripeRequests"] = int(now.requests - before.requests)
	counts["StripeRateLimited"] = int(now.rateLimited - before.rateLimited)
	return counts
}

// replayed reports whether Stripe answered from its idempotency layer: the
// body is the first answer's, from when that request ran, while the Date
// header is today's.
func replayed(resp *stripe.APIResponse) bool {
	return resp != nil && resp.Header.Get("Idempotent-Replayed") == "true"
}

func (c *stripeClients) get(key string) *stripeAPI {
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
	c.key, c.api = key, newStripeAPI(key, b)
	return c.api
}

// withStripe runs fn with a Stripe client for the current key and returns
// what fn returned, translated (fromStripe, naming op). When Stripe refuses
// the key (401), the secret is re-read once and fn runs once more, so a
// rotated key is picked up without a cold start. fn must be safe to run
// twice.
func (s *Service) withStripe(ctx context.Context, op string, fn func(api *stripeAPI) error) error {
	keys, err := s.enabledKeys(ctx)
	if err != nil {
		return err
	}
	err = fromStripe(op, fn(s.stripe.get(keys.APIKey)))
	if !errors.Is(err, errKeyRejected) {
		return err
	}
	s.log.WarnContext(ctx, "stripe rejected the API key; re-reading the secret once", "stripe_request_id", AsError(err).StripeRequestID)
	keys, rerr := s.keys.Refresh(ctx)
	if rerr != nil {
		return rerr
	}
	if !keys.Enabled() {
		return ErrBillingDisabled
	}
	return fromStripe(op, fn(s.stripe.get(keys.APIKey)))
}

// Markers fromStripe wraps into an *Error's cause, for the callers that
// must tell these apart from their code.
var (
	// errKeyRejected marks Stripe's refusal of the API key (401).
	errKeyRejected = errors.New("stripe rejected the API key")
	// errKeyBurned marks an answer Stripe stores under the idempotency key
	// and replays for 24 hours whatever a retry does (a 5xx), or a key met
	// with other parameters: a retry needs new keys.
	errKeyBurned = errors.New("the idempotency key cannot be retried")
	// errRateLimited marks Stripe's 429: a pacer backs off.
	errRateLimited = errors.New("stripe rate limited the request")
	// errRefused marks any other 400: Stripe refused the request as sent.
	errRefused = errors.New("stripe refused the request")
)

// fromStripe translates a stripe-go error into the error vocabulary: it is
// the one place that reads Stripe's errors. The message names the
// operation and Stripe's code, never Stripe's text, which can echo input.
// An *Error passes through unchanged.
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
	case se.HTTPStatusCode >= 500:
		out.Code, out.Retryable, out.Message = CodeUnavailable, true, fmt.Sprintf("%s: Stripe is unavailable (%d)", op, se.HTTPStatusCode)
		out.Err = fmt.Errorf("%w: %w", errKeyBurned, err)
	case se.Type == stripe.ErrorTypeIdempotency:
		// Our key met other parameters: a retry plans again, with new keys.
		out.Code, out.Retryable, out.Message = CodeUnavailable, true, op+": Stripe's state changed during the request; retry it"
		out.Err = fmt.Errorf("%w: %w", errKeyBurned, err)
	case se.HTTPStatusCode == http.StatusTooManyRequests:
		out.Code, out.Retryable, out.Message = CodeUnavailable, true, fmt.Sprintf("%s: Stripe is unavailable (%d)", op, se.HTTPStatusCode)
		out.Err = fmt.Errorf("%w: %w", errRateLimited, err)
	case se.HTTPStatusCode == http.StatusConflict:
		out.Code, out.Retryable, out.Message = CodeUnavailable, true, fmt.Sprintf("%s: Stripe is unavailable (%d)", op, se.HTTPStatusCode)
	case se.HTTPStatusCode == http.StatusPaymentRequired || se.Type == stripe.ErrorTypeCard:
		out.Code, out.Message = CodePaymentRequired, fmt.Sprintf("%s: Stripe refused the payment (%s)", op, code)
	case se.HTTPStatusCode == http.StatusNotFound:
		out.Code, out.Message = CodeNotFound, fmt.Sprintf("%s: not found in Stripe", op)
	case se.HTTPStatusCode == http.StatusUnauthorized:
		out.Code, out.Message, out.Err = CodeInternal, op+": Stripe rejected the API key", fmt.Errorf("%w: %w", errKeyRejected, err)
	case se.Param == "configuration":
		// The deployment's portal configuration, deactivated or gone.
		out.Code, out.Message = CodeInvalidRequest, op+": Stripe refused the customer portal configuration: run upsert-products, which restores it"
	case se.Code == stripe.ErrorCodeResourceAlreadyExists:
		out.Code, out.Message = CodeConflict, op+": the object exists already in Stripe"
	case se.HTTPStatusCode == http.StatusBadRequest && strings.HasPrefix(se.Msg, "An event already exists with identifier"):
		// Stripe's refusal of a meter event identifier it holds carries no
		// code; its text is all there is.
		out.Code, out.Message = CodeConflict, op+": Stripe counted this identifier already"
	default:
		out.Code, out.Message = CodeInternal, fmt.Sprintf("%s: Stripe refused the request (%s)", op, code)
		if se.HTTPStatusCode == http.StatusBadRequest {
			out.Err = fmt.Errorf("%w: %w", errRefused, err)
		}
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

func stripeInt(n int64) string { return strconv.FormatInt(n, 10) }

// keyHash derives a deterministic Stripe idempotency key or meter event
// identifier (43 characters) from its parts.
func keyHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(fmt.Appendf(nil, "%d:%s|", len(p), p))
	}
	return "bf-" + hex.EncodeToString(h.Sum(nil)[:20])
}

// stripeAPI holds the stripe-go resource clients the core uses, and no
// others: stripe-go's client.API would link every Stripe resource into each
// binary and run their init at every cold start.
type stripeAPI struct {
	Products                    *product.Client
	Prices                      *price.Client
	BillingMeters               *meter.Client
	BillingMeterEvents          *meterevent.Client
	BillingMeterEventSummaries  *metereventsummary.Client
	Customers                   *customer.Client
	Subscriptions               *subscription.Client
	SubscriptionSchedules       *subscriptionschedule.Client
	Invoices                    *invoice.Client
	BillingPortalSessions       *session.Client
	BillingPortalConfigurations *configuration.Client
	CheckoutSessions            *checkoutsession.Client
	PaymentIntents              *paymentintent.Client
	SetupIntents                *setupintent.Client
	Events                      *event.Client
	WebhookEndpoints            *webhookendpoint.Client
}

func newStripeAPI(key string, b stripe.Backend) *stripeAPI {
	return &stripeAPI{
		Products: &product.Client{B: b, Key: key}, Prices: &price.Client{B: b, Key: key},
		BillingMeters: &meter.Client{B: b, Key: key}, BillingMeterEvents: &meterevent.Client{B: b, Key: key},
		BillingMeterEventSummaries: &metereventsummary.Client{B: b, Key: key},
		Customers:                  &customer.Client{B: b, Key: key}, Subscriptions: &subscription.Client{B: b, Key: key},
		SubscriptionSchedules: &subscriptionschedule.Client{B: b, Key: key},
		Invoices:              &invoice.Client{B: b, Key: key}, BillingPortalSessions: &session.Client{B: b, Key: key},
		BillingPortalConfigurations: &configuration.Client{B: b, Key: key},
		CheckoutSessions:            &checkoutsession.Client{B: b, Key: key}, PaymentIntents: &paymentintent.Client{B: b, Key: key},
		SetupIntents: &setupintent.Client{B: b, Key: key},
		Events:       &event.Client{B: b, Key: key}, WebhookEndpoints: &webhookendpoint.Client{B: b, Key: key},
	}
}
