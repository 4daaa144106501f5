// Package stripelocal is a stateful Stripe test server: the part of Stripe
// this project uses (products, prices, billing meters, customers,
// subscriptions, invoices, portal sessions, events and signed webhooks),
// shaped like API version 2023-10-16. Tests and `make dev` run against it;
// production code never imports it. MODEL.md lists what it models and where
// its behaviour is a guess.
//
// When Options.Validator names a stripe-mock server, every /v1 request is
// first sent there, and one that stripe-mock rejects as invalid is refused
// and recorded as a violation; Options.CheckResponse does the same for the
// answers. The tests run it so (internal/testenv), pinned to the spec of our
// API version: a green test means the requests and answers are Stripe's.
package stripelocal

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// APIVersion is the version this server's objects are shaped like, and the
// api_version of its events unless an endpoint asks for another.
const APIVersion = "2023-10-16"

// Options configure a Server. The zero value is usable.
type Options struct {
	// Validator is a stripe-mock base URL (http://127.0.0.1:12111) that
	// checks every request but the billing meters' (MeterValidator's).
	// Empty disables validation.
	Validator string
	// MeterValidator checks the requests to /v1/billing/meter*; empty
	// means Validator.
	MeterValidator string
	// CheckResponse, when set, checks each answer (method, request URI,
	// status, body) against Stripe's spec; an error is recorded as a
	// violation, and the answer is still sent.
	CheckResponse func(method, requestURI string, status int, body []byte) error
	// RetryBase is the first webhook retry delay; each retry doubles it.
	// Default 1s.
	RetryBase time.Duration
	// MaxAttempts bounds the deliveries of one event to one endpoint.
	// Default 5.
	MaxAttempts int
	// Logf receives one line per webhook delivery attempt; nil discards.
	Logf func(format string, args ...any)
}

// Server is the local Stripe. It is an http.Handler; Close stops its
// webhook deliveries.
type Server struct {
	opts     Options
	mux      *http.ServeMux
	client   *http.Client
	patterns []string // the Stripe API routes served, as "GET /v1/products/{id}"

	mu            sync.Mutex
	state         *state
	idem          map[string]idemEntry
	faults        []*fault
	searchLag     time.Duration
	counts        map[string]int
	violations    []string
	revoked       map[string]bool
	clockOffset   time.Duration
	payMode       string // PayWithPaymentMethods, PayEverything or PayNothing
	portalDefault bool   // the default portal configuration was saved
	delivery      deliveryMode
	held          []*delivery
	seq           int64
	pendingOut    []*delivery
	current       obj    // event.request of the API request being handled
	base          string // the server's own URL, as the last request reached it: hosted pages' links

	deliveries sync.WaitGroup
	closed     chan struct{}
	closeOnce  sync.Once
}

// New returns a Server with empty state.
func New(opts Options) *Server {
	if opts.RetryBase <= 0 {
		opts.RetryBase = time.Second
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 5
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	s := &Server{
		opts:    opts,
		client:  &http.Client{Timeout: 30 * time.Second},
		idem:    map[string]idemEntry{},
		counts:  map[string]int{},
		revoked: map[string]bool{},
		state:   newState(),
		closed:  make(chan struct{}),
	}
	s.mux = http.NewServeMux()
	s.routes()
	return s
}

// Routes returns the Stripe API routes the server models, as
// "GET /v1/products/{id}".
func Routes() []string { return New(Options{}).patterns }

// Close stops retrying webhooks and waits for deliveries in flight.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
	s.deliveries.Wait()
}

// now is the server's clock: real time plus whatever tests advanced it by.
// Callers hold s.mu.
func (s *Server) now() time.Time { return time.Now().Add(s.clockOffset) }

// newID returns a Stripe-like ID with the given prefix. Callers hold s.mu.
func (s *Server) newID(prefix string) string {
	s.seq++
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s_%s%06d", prefix, strings.ToUpper(hex.EncodeToString(b[:])), s.seq)
}

// apiError is Stripe's error shape.
type apiError struct {
	Status      int    `json:"-"`
	Type        string `json:"type"`
	Code        string `json:"code,omitempty"`
	DeclineCode string `json:"decline_code,omitempty"`
	Param       string `json:"param,omitempty"`
	Message     string `json:"message"`
}

func (e *apiError) Error() string { return e.Message }

func invalid(param, format string, args ...any) *apiError {
	return &apiError{Status: 400, Type: "invalid_request_error", Code: "parameter_invalid", Param: param, Message: fmt.Sprintf(format, args...)}
}

func missingParam(param string) *apiError {
	return &apiError{Status: 400, Type: "invalid_request_error", Code: "parameter_missing", Param: param, Message: "Missing required param: " + param + "."}
}

func noSuch(kind, id, param string) *apiError {
	return &apiError{Status: 404, Type: "invalid_request_error", Code: "resource_missing", Param: param, Message: fmt.Sprintf("No such %s: '%s'", kind, id)}
}

// request is what a Stripe API handler sees.
type request struct {
	*http.Request
	p params
}

type handlerFunc func(r *request) (any, *apiError)

// api registers a Stripe API route. The handler runs under s.mu.
func (s *Server) api(pattern string, h handlerFunc) {
	s.patterns = append(s.patterns, pattern)
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { s.serveAPI(w, r, pattern, h) })
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Request-Id", "req_"+randomHex(7))
	s.mux.ServeHTTP(w, r)
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, pattern string, h handlerFunc) {
	s.mu.Lock()
	revoked := s.revoked[apiKey(r)]
	s.mu.Unlock()
	if !authorized(r) || revoked {
		s.respond(w, r, 401, mustJSON(map[string]any{"error": &apiError{Type: "invalid_request_error",
			Message: "Invalid API Key provided. This server accepts any secret test key (sk_test_…)."}}))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		s.respond(w, r, 400, mustJSON(map[string]any{"error": invalid("", "unreadable body")}))
		return
	}
	s.mu.Lock()
	s.counts[pattern]++
	f := s.takeFault(r.Method, r.URL.Path, pattern)
	s.mu.Unlock()

	if f != nil && !f.After && !f.Stored {
		if status, raw, done := f.apply(w); done {
			s.respond(w, r, status, raw)
			return
		}
	}
	if s.opts.Validator != "" {
		if verr := s.validate(r, body); verr != nil {
			writeJSON(w, verr.Status, map[string]any{"error": verr})
			return
		}
	}
	// Parameters come in the body, or the query string (GET, and DELETE
	// from some clients; stripe-go sends a DELETE's in the body).
	values, _ := url.ParseQuery(string(body))
	for k, v := range r.URL.Query() {
		values[k] = append(values[k], v...)
	}
	if r.Method == http.MethodPost {
		// Parameters that fail validation begin no execution: nothing is
		// stored under the idempotency key.
		if aerr := checkEmptyStrings(pattern, values); aerr != nil {
			s.respond(w, r, aerr.Status, mustJSON(map[string]any{"error": aerr}))
			return
		}
	}
	req := &request{Request: r, p: parseForm(values)}

	idemKey := r.Header.Get("Idempotency-Key")
	fingerprint := requestFingerprint(r.Method, r.URL.Path, values)
	s.mu.Lock()
	// Date is the server's clock, as Stripe's Date header is Stripe's; a
	// replayed answer carries today's Date with its old body.
	w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
	if r.Method == http.MethodPost && idemKey != "" {
		prev, ok := s.idem[idemKey]
		if ok && s.now().Sub(prev.at) >= IdempotencyWindow {
			delete(s.idem, idemKey) // pruned: the key is new again
			ok = false
		}
		if ok {
			s.mu.Unlock()
			if prev.fingerprint != fingerprint {
				s.respond(w, r, 400, mustJSON(map[string]any{"error": &apiError{Type: "idempotency_error",
					Message: fmt.Sprintf("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '%s' if you meant to execute a different request.", idemKey)}}))
				return
			}
			w.Header().Set("Idempotent-Replayed", "true")
			if f != nil && f.After {
				if fstatus, fraw, done := f.apply(w); done { // a replay's answer can be lost too
					s.respond(w, r, fstatus, fraw)
					return
				}
			}
			s.respond(w, r, prev.status, prev.body)
			return
		}
	}
	var status int
	var raw []byte
	if f != nil && f.Stored {
		// A failure inside Stripe, after the idempotency layer: the answer
		// is stored under the key like any other.
		status, raw, _ = f.apply(w)
		f = nil
	} else {
		s.current = obj{"id": w.Header().Get("Request-Id"), "idempotency_key": nullable(idemKey)}
		s.base = "http://" + r.Host
		out, aerr := h(req)
		s.current = nil
		status = 200
		payload := any(out)
		if aerr != nil {
			status, payload = aerr.Status, map[string]any{"error": aerr}
		}
		raw, _ = json.Marshal(payload)
	}
	// Stripe saves the outcome of every request that began executing,
	// errors included, and replays it for the same key.
	if r.Method == http.MethodPost && idemKey != "" && status != 429 {
		s.idem[idemKey] = idemEntry{fingerprint: fingerprint, status: status, body: raw, at: s.now()}
	}
	// An answer's Date is when it was made (RFC 9110: when the message
	// originated), so the events the request emitted are never newer.
	w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
	pending := s.takePendingDeliveries()
	s.mu.Unlock()
	s.dispatch(pending)

	if f != nil && f.After {
		if fstatus, fraw, done := f.apply(w); done {
			s.respond(w, r, fstatus, fraw)
			return
		}
	}
	s.respond(w, r, status, raw)
}

// IdempotencyWindow is how long an idempotency key replays its first
// answer: Stripe prunes keys once they are at least 24 hours old.
const IdempotencyWindow = 24 * time.Hour

// respond writes an answer of the API, checked against Stripe's spec when
// the server has a CheckResponse. A dropped connection (raw nil) writes
// nothing.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, status int, raw []byte) {
	if raw == nil {
		return
	}
	if s.opts.CheckResponse != nil {
		if err := s.opts.CheckResponse(r.Method, r.URL.RequestURI(), status, raw); err != nil {
			s.recordViolation(fmt.Sprintf("%s %s: answer %d breaks the spec: %v", r.Method, r.URL.Path, status, err))
		}
	}
	writeRaw(w, status, raw)
}

func (s *Server) recordViolation(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, msg)
}

type idemEntry struct {
	fingerprint string
	status      int
	body        []byte
	at          time.Time // by the server's clock
}

func requestFingerprint(method, path string, v url.Values) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	fmt.Fprintf(h, "%s %s\n", method, path)
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%q\n", k, v[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// authorized accepts any secret test key, as a bearer token or basic-auth
// user, as Stripe does.
func authorized(r *http.Request) bool {
	key := apiKey(r)
	return strings.HasPrefix(key, "sk_test_") || strings.HasPrefix(key, "rk_test_")
}

func apiKey(r *http.Request) string {
	if u, _, ok := r.BasicAuth(); ok {
		return u
	}
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// validate sends the request to stripe-mock and returns an error when
// stripe-mock finds it invalid. The violation is kept for Violations.
func (s *Server) validate(r *http.Request, body []byte) *apiError {
	base := s.opts.Validator
	if strings.HasPrefix(r.URL.Path, "/v1/billing/meter") && s.opts.MeterValidator != "" {
		base = s.opts.MeterValidator
	}
	u := strings.TrimRight(base, "/") + r.URL.RequestURI()
	vreq, err := http.NewRequest(r.Method, u, bytes.NewReader(body))
	if err != nil {
		return &apiError{Status: 500, Type: "api_error", Message: "validator: " + err.Error()}
	}
	for _, h := range []string{"Authorization", "Content-Type", "Stripe-Version", "Idempotency-Key"} {
		if v := r.Header.Get(h); v != "" {
			vreq.Header.Set(h, v)
		}
	}
	resp, err := s.client.Do(vreq)
	if err != nil {
		return &apiError{Status: 500, Type: "api_error", Message: "stripe-mock unreachable: " + err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 400 {
		return nil
	}
	var e struct {
		Error apiError `json:"error"`
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &e)
	// stripe-mock answers 404 for unknown URLs and 400 for parameters the
	// spec does not allow; it never knows whether an object exists.
	if resp.StatusCode == 400 || (resp.StatusCode == 404 && strings.Contains(e.Error.Message, "Unrecognized request URL")) {
		msg := fmt.Sprintf("%s %s: stripe-mock: %s", r.Method, r.URL.Path, e.Error.Message)
		s.recordViolation(msg)
		return &apiError{Status: resp.StatusCode, Type: "invalid_request_error", Message: msg}
	}
	return nil
}

// Violations returns every request stripe-mock rejected and every answer
// that broke the spec, so far.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Counts returns the number of requests per route, such as
// "POST /v1/products": 11.
func (s *Server) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.counts))
	for k, v := range s.counts {
		out[k] = v
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	raw, _ := json.Marshal(v)
	writeRaw(w, status, raw)
}

func writeRaw(w http.ResponseWriter, status int, raw []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(raw)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
