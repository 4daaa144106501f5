package stripelocal

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// The test controls live under /_local/, apart from Stripe's paths. Each
// has a Go method of the same meaning for in-process tests.

// Reset forgets every object, event, endpoint, fault, count and idempotency
// key, and sets the clock back.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ep := range s.state.endpoints {
		close(ep.done)
	}
	s.state = newState()
	s.idem = map[string]idemEntry{}
	s.faults, s.held, s.violations = nil, nil, nil
	s.counts, s.revoked = map[string]int{}, map[string]bool{}
	s.clockOffset, s.payMode, s.delivery, s.portalDefault = 0, PayWithPaymentMethods, deliveryMode{}, false
}

// InjectFault makes the next f.Count matching requests fail.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Count <= 0 {
		f.Count = 1
	}
	s.faults = append(s.faults, &f)
}

// ClearFaults removes the faults not yet consumed and returns how many
// there were.
func (s *Server) ClearFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.faults)
	s.faults = nil
	return n
}

// Fault is a request failure to inject; see InjectFault.
type Fault = fault

// DeliveryMode is how webhooks leave the server; see SetDelivery.
type DeliveryMode = deliveryMode

// SetDelivery changes how webhooks are delivered from now on.
func (s *Server) SetDelivery(m DeliveryMode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delivery = m
}

// Release sends the held deliveries ("in_order", "reverse" or "shuffled").
func (s *Server) Release(order string) int { return s.release(order) }

// AddWebhookEndpoint registers url with known signing secrets (the first
// is current; more are signed with too, as during a rotation) and returns
// its ID. events nil means every event.
func (s *Server) AddWebhookEndpoint(url string, secrets []string, events []string, apiVersion string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(events) == 0 {
		events = []string{"*"}
	}
	ep := s.addEndpoint(url, secrets[0], events, apiVersion)
	ep.secrets = append([]string(nil), secrets...)
	return ep.obj["id"].(string)
}

// Advance moves the clock forward and runs what falls due.
func (s *Server) Advance(d time.Duration) {
	s.change(func() { s.advanceClock(d) })
}

// Rewind sets the clock back, only while no customer exists: like a
// Stripe test clock's frozen_time, a past start is chosen before anything
// is billed on it. Tests of what a function decides by its own clock (a
// grace period that has passed) start the local Stripe in the past, since
// its clock only moves forward after that.
func (s *Server) Rewind(d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.state.objects["customer"]) > 0 {
		return fmt.Errorf("the clock is set back only before the first customer")
	}
	s.clockOffset -= d
	return nil
}

// Now returns the server's clock.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

// Settle pays ("paid") or fails ("failed") a subscription's latest invoice.
func (s *Server) Settle(subscriptionID, outcome string) error {
	var aerr *apiError
	s.change(func() { aerr = s.settle(subscriptionID, outcome) })
	if aerr != nil {
		return aerr // not a nil *apiError in a non-nil error
	}
	return nil
}

// SetPaymentMode says how invoices get paid from now on: with payment
// methods, as Stripe does (PayWithPaymentMethods, the default), all at once
// without one (PayEverything), or not until settled (PayNothing).
func (s *Server) SetPaymentMode(mode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.payMode = mode
}

// Authenticate completes (pass) or fails the 3-D Secure challenge of a
// PaymentIntent that requires action, as the customer would.
func (s *Server) Authenticate(paymentIntentID string, pass bool) error {
	var aerr *apiError
	s.change(func() { aerr = s.authenticate(paymentIntentID, pass) })
	if aerr != nil {
		return aerr // not a nil *apiError in a non-nil error
	}
	return nil
}

// SetPortalDefault says whether the account's default customer portal
// configuration was saved (in the Dashboard): without it, a portal session
// that names no configuration is refused, as Stripe does in test mode.
func (s *Server) SetPortalDefault(saved bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.portalDefault = saved
}

// ResetCounts zeroes the request counters.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts = map[string]int{}
}

func (s *Server) controlRoutes() {
	ctl := func(pattern string, h func(r *http.Request) (any, error)) {
		s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			out, err := h(r)
			if err != nil {
				writeJSON(w, 400, map[string]any{"error": err.Error()})
				return
			}
			writeJSON(w, 200, out)
		})
	}
	decode := func(r *http.Request, v any) error {
		if r.ContentLength == 0 {
			return nil
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		return dec.Decode(v)
	}
	ok := map[string]bool{"ok": true}

	ctl("POST /_local/reset", func(r *http.Request) (any, error) { s.Reset(); return ok, nil })
	ctl("POST /_local/faults", func(r *http.Request) (any, error) {
		var f Fault
		if err := decode(r, &f); err != nil {
			return nil, err
		}
		switch f.Kind {
		case "429", "500", "400", "card_declined", "delay", "drop":
		default:
			return nil, fmt.Errorf("kind must be 429, 500, 400, card_declined, delay or drop")
		}
		s.InjectFault(f)
		return ok, nil
	})
	ctl("POST /_local/delivery", func(r *http.Request) (any, error) {
		var m DeliveryMode
		if err := decode(r, &m); err != nil {
			return nil, err
		}
		switch m.Mode {
		case "", "ordered", "concurrent", "shuffled", "hold":
		default:
			return nil, fmt.Errorf("mode must be ordered, concurrent, shuffled or hold")
		}
		s.SetDelivery(m)
		return ok, nil
	})
	ctl("POST /_local/webhooks/release", func(r *http.Request) (any, error) {
		var b struct {
			Order string `json:"order"`
		}
		if err := decode(r, &b); err != nil {
			return nil, err
		}
		return map[string]int{"released": s.Release(b.Order)}, nil
	})
	ctl("POST /_local/webhook_endpoints", func(r *http.Request) (any, error) {
		var b struct {
			URL        string   `json:"url"`
			Secrets    []string `json:"secrets"`
			Events     []string `json:"events"`
			APIVersion string   `json:"api_version"`
		}
		if err := decode(r, &b); err != nil {
			return nil, err
		}
		if b.URL == "" || len(b.Secrets) == 0 {
			return nil, fmt.Errorf("url and secrets are required")
		}
		return map[string]string{"id": s.AddWebhookEndpoint(b.URL, b.Secrets, b.Events, b.APIVersion)}, nil
	})
	// clock moves the clock by a request's positive "seconds".
	clock := func(move func(time.Duration) error) func(r *http.Request) (any, error) {
		return func(r *http.Request) (any, error) {
			var b struct {
				Seconds int64 `json:"seconds"`
			}
			if err := decode(r, &b); err != nil {
				return nil, err
			}
			if b.Seconds <= 0 {
				return nil, fmt.Errorf("seconds must be positive")
			}
			if err := move(time.Duration(b.Seconds) * time.Second); err != nil {
				return nil, err
			}
			return map[string]int64{"now": s.Now().Unix()}, nil
		}
	}
	ctl("POST /_local/clock/advance", clock(func(d time.Duration) error { s.Advance(d); return nil }))
	ctl("POST /_local/clock/rewind", clock(s.Rewind))
	ctl("GET /_local/clock", func(r *http.Request) (any, error) { return map[string]int64{"now": s.Now().Unix()}, nil })
	ctl("POST /_local/subscriptions/{id}/settle", func(r *http.Request) (any, error) {
		var b struct {
			Outcome string `json:"outcome"`
		}
		if err := decode(r, &b); err != nil {
			return nil, err
		}
		return ok, s.Settle(r.PathValue("id"), b.Outcome)
	})
	ctl("POST /_local/config", func(r *http.Request) (any, error) {
		var b struct {
			PaymentMode   *string `json:"payment_mode"`
			PortalDefault *bool   `json:"portal_default"`
		}
		if err := decode(r, &b); err != nil {
			return nil, err
		}
		if b.PaymentMode != nil {
			switch *b.PaymentMode {
			case PayWithPaymentMethods, PayEverything, PayNothing:
				s.SetPaymentMode(*b.PaymentMode)
			default:
				return nil, fmt.Errorf(`payment_mode must be "" (payment methods, as Stripe), "always" or "never"`)
			}
		}
		if b.PortalDefault != nil {
			s.SetPortalDefault(*b.PortalDefault)
		}
		return ok, nil
	})
	ctl("POST /_local/payment_intents/{id}/authenticate", func(r *http.Request) (any, error) {
		var b struct {
			Pass bool `json:"pass"`
		}
		if err := decode(r, &b); err != nil {
			return nil, err
		}
		return ok, s.Authenticate(r.PathValue("id"), b.Pass)
	})
	ctl("GET /_local/counts", func(r *http.Request) (any, error) { return s.Counts(), nil })
	ctl("POST /_local/counts/reset", func(r *http.Request) (any, error) { s.ResetCounts(); return ok, nil })
	ctl("GET /_local/violations", func(r *http.Request) (any, error) { return s.Violations(), nil })
	ctl("POST /_local/wait", func(r *http.Request) (any, error) { s.WaitDeliveries(); return ok, nil })
}

// RevokeKey makes requests with key answer 401, as Stripe does for a
// rolled key.
func (s *Server) RevokeKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked[key] = true
}

// EventCount returns how many events the server has made.
func (s *Server) EventCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.state.events)
}

// SeedOrganization makes, in process (no HTTP, no referee), a customer
// with meta and a subscription for it to prices, with the same metadata,
// as the API would: tests and benchmarks make hundreds or tens of
// thousands of organizations with it. A paying customer has a test card
// (pm_card_visa) as its invoices' default, so the subscription is active;
// without one it is incomplete, its first invoice open. It returns the
// subscription as the API shows it, its latest invoice expanded.
func (s *Server) SeedOrganization(meta map[string]string, paying bool, prices ...string) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	form := url.Values{}
	for k, v := range meta {
		form.Set("metadata["+k+"]", v)
	}
	if paying {
		form.Set("payment_method", "pm_card_visa")
		form.Set("invoice_settings[default_payment_method]", "pm_card_visa")
	}
	req, _ := http.NewRequest(http.MethodPost, "/v1/customers", nil)
	c, aerr := s.createCustomer(&request{Request: req, p: parseForm(form)})
	if aerr != nil {
		return nil, fmt.Errorf("seed a customer: %s", aerr.Message)
	}
	form.Del("payment_method")
	form.Del("invoice_settings[default_payment_method]")
	form.Set("customer", c.(obj)["id"].(string))
	for i, p := range prices {
		form.Set(fmt.Sprintf("items[%d][price]", i), p)
	}
	if !paying {
		form.Set("payment_behavior", "default_incomplete") // its first invoice stays open
	}
	form.Set("expand[0]", "latest_invoice")
	sub, aerr := s.createSubscription(&request{Request: req, p: parseForm(form)})
	if aerr != nil {
		return nil, fmt.Errorf("seed a subscription: %s", aerr.Message)
	}
	return clone(sub.(obj)), nil
}
