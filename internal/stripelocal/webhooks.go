package stripelocal

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// endpoint is a registered webhook endpoint.
type endpoint struct {
	url        string
	secrets    []string // signs with each: several during a rotation
	events     []string
	apiVersion string
	obj        obj

	mu   sync.Mutex // serialises in-order deliveries to this endpoint
	qmu  sync.Mutex
	work []*delivery
	wake chan struct{}
	done chan struct{} // closed when the endpoint is removed by Reset
}

// enqueue hands a delivery to the endpoint's in-order worker.
func (ep *endpoint) enqueue(d *delivery) {
	ep.qmu.Lock()
	ep.work = append(ep.work, d)
	ep.qmu.Unlock()
	select {
	case ep.wake <- struct{}{}:
	default:
	}
}

// runEndpoint delivers the endpoint's queue one at a time, in order, until
// the server closes.
func (s *Server) runEndpoint(ep *endpoint) {
	for {
		ep.qmu.Lock()
		var d *delivery
		if len(ep.work) > 0 {
			d, ep.work = ep.work[0], ep.work[1:]
		}
		ep.qmu.Unlock()
		if d != nil {
			s.attempt(d, true)
			continue
		}
		select {
		case <-ep.wake:
		case <-ep.done:
			ep.drain(s)
			return
		case <-s.closed:
			ep.drain(s)
			return
		}
	}
}

// drain drops the deliveries still queued.
func (ep *endpoint) drain(s *Server) {
	ep.qmu.Lock()
	defer ep.qmu.Unlock()
	for range ep.work {
		s.deliveries.Done()
	}
	ep.work = nil
}

func (ep *endpoint) wants(typ string) bool {
	if ep.obj["status"] == "disabled" {
		return false
	}
	for _, e := range ep.events {
		if e == "*" || e == typ {
			return true
		}
	}
	return false
}

// delivery is one event bound for one endpoint.
type delivery struct {
	endpoint *endpoint
	event    obj
	attempt  int
}

// deliveryMode says how deliveries leave the server.
type deliveryMode struct {
	// Mode is "ordered" (the default: one at a time per endpoint, in event
	// order), "concurrent" (all at once), "shuffled" (each after a random
	// delay up to JitterMS) or "hold" (kept until released).
	Mode      string `json:"mode"`
	Duplicate bool   `json:"duplicate,omitempty"` // send each delivery twice, at the same time
	JitterMS  int    `json:"jitter_ms,omitempty"`
}

// queue adds a delivery to the batch dispatched when the current request
// ends. Callers hold s.mu.
func (s *Server) queue(d *delivery) {
	if s.delivery.Mode == "hold" {
		s.held = append(s.held, d)
		return
	}
	s.pendingOut = append(s.pendingOut, d)
}

// change runs fn under s.mu, then dispatches the deliveries of the events
// fn made: how every test control and hosted page changes state.
func (s *Server) change(fn func()) {
	s.mu.Lock()
	fn()
	pending := s.takePendingDeliveries()
	s.mu.Unlock()
	s.dispatch(pending)
}

// takePendingDeliveries hands the batch over to dispatch. Callers hold s.mu.
func (s *Server) takePendingDeliveries() []*delivery {
	out := s.pendingOut
	s.pendingOut = nil
	return out
}

// dispatch sends a batch according to the delivery mode. It must be called
// without s.mu.
func (s *Server) dispatch(batch []*delivery) {
	if len(batch) == 0 {
		return
	}
	s.mu.Lock()
	mode := s.delivery
	s.mu.Unlock()
	copies := 1
	if mode.Duplicate {
		copies = 2
	}
	for _, d := range batch {
		for range copies {
			d := &delivery{endpoint: d.endpoint, event: d.event}
			s.deliveries.Add(1)
			switch mode.Mode {
			case "concurrent":
				go s.attempt(d, false)
			case "shuffled":
				jitter := mode.JitterMS
				if jitter <= 0 {
					jitter = 200
				}
				go func() {
					time.Sleep(time.Duration(rand.IntN(jitter)) * time.Millisecond)
					s.attempt(d, false)
				}()
			default:
				if copies > 1 {
					go s.attempt(d, false) // duplicates race each other, as Stripe's can
				} else {
					d.endpoint.enqueue(d)
				}
			}
		}
	}
}

// release sends the held deliveries in the given order ("in_order",
// "reverse" or "shuffled") and returns how many it sent.
func (s *Server) release(order string) int {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	switch order {
	case "reverse":
		for i, j := 0, len(held)-1; i < j; i, j = i+1, j-1 {
			held[i], held[j] = held[j], held[i]
		}
	case "shuffled":
		rand.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
	}
	for _, d := range held {
		s.deliveries.Add(1)
		s.attempt(d, true)
	}
	return len(held)
}

// attempt sends one delivery; on failure it schedules a retry with
// exponential backoff until MaxAttempts. The caller did deliveries.Add(1).
func (s *Server) attempt(d *delivery, serial bool) {
	defer s.deliveries.Done()
	if serial {
		d.endpoint.mu.Lock()
		defer d.endpoint.mu.Unlock()
	}
	d.attempt++
	payload, header, id, typ := s.sign(d)
	s.mu.Lock()
	url := d.endpoint.url // an update may move it
	s.mu.Unlock()
	status, err := s.post(url, payload, header)
	ok := err == nil && status >= 200 && status < 300
	s.opts.Logf("webhook %s %s -> %s attempt %d: status %d err %v", id, typ, url, d.attempt, status, err)

	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		delete(s.state.failedEvent, id)
		if n, _ := d.event["pending_webhooks"].(int); n > 0 {
			d.event["pending_webhooks"] = n - 1
		}
		return
	}
	s.state.failedEvent[id] = true
	if d.attempt >= s.opts.MaxAttempts {
		return
	}
	delay := s.opts.RetryBase << (d.attempt - 1)
	s.deliveries.Add(1)
	go func() {
		select {
		case <-time.After(delay):
			s.attempt(d, false)
		case <-s.closed:
			s.deliveries.Done()
		}
	}()
}

// sign renders the delivery's payload at the endpoint's API version and
// signs it as Stripe does: t=<unix>,v1=HMAC-SHA256(secret, "t.payload"),
// one v1 per secret.
func (s *Server) sign(d *delivery) (payload []byte, header, id, typ string) {
	s.mu.Lock()
	ev := clone(d.event)
	secrets := append([]string(nil), d.endpoint.secrets...)
	s.mu.Unlock()
	ev["api_version"] = d.endpoint.apiVersion
	payload, _ = json.MarshalIndent(ev, "", "  ")
	t := time.Now().Unix() // the receiver checks this against its own clock
	parts := []string{fmt.Sprintf("t=%d", t)}
	for _, secret := range secrets {
		mac := hmac.New(sha256.New, []byte(secret))
		fmt.Fprintf(mac, "%d.", t)
		mac.Write(payload)
		parts = append(parts, "v1="+hex.EncodeToString(mac.Sum(nil)))
	}
	return payload, strings.Join(parts, ","), ev["id"].(string), ev["type"].(string)
}

func (s *Server) post(url string, payload []byte, signature string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Stripe-Signature", signature)
	req.Header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// WaitDeliveries blocks until no delivery is in flight or scheduled.
func (s *Server) WaitDeliveries() { s.deliveries.Wait() }
