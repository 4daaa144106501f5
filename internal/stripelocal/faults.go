package stripelocal

import (
	"net/http"
	"strings"
	"time"
)

// fault makes matching requests fail. It is consumed Count times.
type fault struct {
	Count int `json:"count"`
	// Skip lets this many matching requests through before failing any.
	Skip   int    `json:"skip,omitempty"`
	Method string `json:"method,omitempty"` // empty matches any
	// Path matches a request path prefix ("/v1/products") or a route
	// pattern ("POST /v1/products/{id}"); empty matches any.
	Path string `json:"path,omitempty"`
	// Kind is "429", "500", "400" (a request Stripe refuses),
	// "card_declined" (402), "delay" or "drop" (close the connection with
	// no answer).
	Kind    string `json:"kind"`
	DelayMS int    `json:"delay_ms,omitempty"`
	// After applies the fault once the request was processed: the change
	// is made but the caller never learns it, as when a response is lost.
	After bool `json:"after,omitempty"`
	// Stored fails the request inside Stripe, after the idempotency layer:
	// nothing is changed, and the answer (a 500, say) is stored under the
	// request's idempotency key and replayed for it, as Stripe does.
	// Without it, a fault happens in front of Stripe and is not stored.
	Stored bool `json:"stored,omitempty"`
}

func (f *fault) matches(method, path, pattern string) bool {
	if f.Method != "" && !strings.EqualFold(f.Method, method) {
		return false
	}
	return f.Path == "" || f.Path == pattern || strings.HasPrefix(path, f.Path)
}

// takeFault consumes one use of the first matching fault. Callers hold s.mu.
func (s *Server) takeFault(method, path, pattern string) *fault {
	for i, f := range s.faults {
		if f.matches(method, path, pattern) {
			if f.Skip > 0 {
				f.Skip--
				return nil
			}
			f.Count--
			if f.Count <= 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			return f
		}
	}
	return nil
}

// apply acts out the fault. done says the request is finished: with the
// answer (status and body) to send, or a nil body when the connection was
// dropped. A delay only slows the request down.
func (f *fault) apply(w http.ResponseWriter) (status int, raw []byte, done bool) {
	fail := func(status int, e *apiError) (int, []byte, bool) {
		return status, mustJSON(map[string]any{"error": e}), true
	}
	switch f.Kind {
	case "429":
		w.Header().Set("Stripe-Should-Retry", "false")
		return fail(429, &apiError{Type: "invalid_request_error", Code: "rate_limit",
			Message: "Too many requests hit the API too quickly (injected by the local Stripe)."})
	case "400":
		return fail(400, &apiError{Type: "invalid_request_error", Code: "parameter_invalid",
			Message: "Refused (injected by the local Stripe)."})
	case "card_declined":
		return fail(402, &apiError{Type: "card_error", Code: "card_declined",
			Message: "Your card was declined (injected by the local Stripe)."})
	case "500":
		return fail(500, &apiError{Type: "api_error", Message: "An unknown error occurred (injected by the local Stripe)."})
	case "drop":
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return 0, nil, true
			}
		}
		panic(http.ErrAbortHandler) // no hijacking: abort the response instead
	case "delay":
		time.Sleep(time.Duration(f.DelayMS) * time.Millisecond)
	}
	return 0, nil, false
}
