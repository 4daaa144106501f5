package stripelocal_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/baseten/billing-functions/internal/stripelocal"
)

func TestWebhooks_DeliveriesVerifyWithStripeGo(t *testing.T) {
	e := newEnv(t)
	rcv := newReceiver(t, "whsec_local_test")
	e.srv.AddWebhookEndpoint(rcv.srv.URL, []string{"whsec_local_test"}, nil, "")
	c := plainCustomer(t, e)
	if _, err := e.sc.Customers.Update(c.ID, &stripe.CustomerParams{Name: stripe.String("n")}); err != nil {
		t.Fatal(err)
	}
	e.srv.WaitDeliveries()
	if got := strings.Join(rcv.types(), ","); got != "customer.created,customer.updated" {
		t.Fatalf("received %s", got)
	}
	ev := rcv.received()[1]
	if ev.APIVersion != stripe.APIVersion || ev.Data.PreviousAttributes["name"] != nil || ev.Data.Object["name"] != "n" {
		t.Fatalf("event %+v", ev)
	}
}

func TestWebhooks_RotationSignsWithBothSecrets(t *testing.T) {
	e := newEnv(t)
	oldRcv, newRcv := newReceiver(t, "whsec_old"), newReceiver(t, "whsec_new")
	var mu sync.Mutex
	var bodies [][]byte
	var headers []string
	tee := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies, headers = append(bodies, b), append(headers, r.Header.Get("Stripe-Signature"))
		mu.Unlock()
	}))
	defer tee.Close()
	e.srv.AddWebhookEndpoint(tee.URL, []string{"whsec_new", "whsec_old"}, nil, "")
	plainCustomer(t, e)
	e.srv.WaitDeliveries()
	if len(bodies) != 1 || strings.Count(headers[0], "v1=") != 2 {
		t.Fatalf("signature header %q, want two v1 signatures", headers)
	}
	for _, r := range []*receiver{oldRcv, newRcv} {
		if _, err := webhook.ConstructEvent(bodies[0], headers[0], r.secret); err != nil {
			t.Errorf("secret %s does not verify: %v", r.secret, err)
		}
	}
	if _, err := webhook.ConstructEvent(bodies[0], headers[0], "whsec_other"); err == nil {
		t.Error("a third secret verified")
	}
}

func TestWebhooks_EndpointAPIVersionIsStamped(t *testing.T) {
	e := newEnv(t)
	var got []byte
	done := make(chan struct{})
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		close(done)
	}))
	defer rcv.Close()
	e.srv.AddWebhookEndpoint(rcv.URL, []string{"whsec_v"}, nil, "2024-06-20")
	plainCustomer(t, e)
	<-done
	if !strings.Contains(string(got), `"api_version": "2024-06-20"`) {
		t.Fatalf("payload does not carry the endpoint's version: %s", got[:120])
	}
}

func TestWebhooks_FailedDeliveriesAreRetriedWithBackoff(t *testing.T) {
	e := newEnv(t)
	rcv := newReceiver(t, "whsec_r")
	rcv.fail = 2
	e.srv.AddWebhookEndpoint(rcv.srv.URL, []string{"whsec_r"}, nil, "")
	start := time.Now()
	plainCustomer(t, e)
	e.srv.WaitDeliveries()
	if rcv.hits != 3 || len(rcv.received()) != 1 {
		t.Fatalf("hits %d, events %d: want 2 failures then 1 success", rcv.hits, len(rcv.received()))
	}
	if took := time.Since(start); took < 60*time.Millisecond { // 20ms + 40ms of backoff
		t.Fatalf("retries came after %v, want at least 60ms of backoff", took)
	}
	if failed := listFailed(t, e); len(failed) != 0 {
		t.Fatalf("delivery_success=false lists %v after a successful retry", failed)
	}
}

func TestWebhooks_GivenUpEventsAreListedAsUndelivered(t *testing.T) {
	e := newEnv(t)
	rcv := newReceiver(t, "whsec_r")
	rcv.fail = 1000
	e.srv.AddWebhookEndpoint(rcv.srv.URL, []string{"whsec_r"}, nil, "")
	c := plainCustomer(t, e)
	e.srv.WaitDeliveries()
	if rcv.hits != 4 {
		t.Fatalf("attempts = %d, want MaxAttempts 4", rcv.hits)
	}
	failed := listFailed(t, e)
	if len(failed) != 1 || failed[0].Data.Object["id"] != c.ID {
		t.Fatalf("delivery_success=false = %v, want the customer.created event", failed)
	}
}

func listFailed(t *testing.T, e *env) []*stripe.Event {
	t.Helper()
	var out []*stripe.Event
	params := &stripe.EventListParams{DeliverySuccess: stripe.Bool(false)}
	for it := e.sc.Events.List(params); it.Next(); {
		out = append(out, it.Event())
	}
	return out
}

func TestWebhooks_HoldThenReleaseInReverse(t *testing.T) {
	e := newEnv(t)
	rcv := newReceiver(t, "whsec_h")
	e.srv.AddWebhookEndpoint(rcv.srv.URL, []string{"whsec_h"}, nil, "")
	e.srv.SetDelivery(stripelocal.DeliveryMode{Mode: "hold"})
	c := plainCustomer(t, e)
	for _, name := range []string{"a", "b"} {
		if _, err := e.sc.Customers.Update(c.ID, &stripe.CustomerParams{Name: stripe.String(name)}); err != nil {
			t.Fatal(err)
		}
	}
	e.srv.WaitDeliveries()
	if len(rcv.received()) != 0 {
		t.Fatal("held deliveries went out")
	}
	if n := e.srv.Release("reverse"); n != 3 {
		t.Fatalf("released %d, want 3", n)
	}
	e.srv.WaitDeliveries()
	if got := strings.Join(rcv.types(), ","); got != "customer.updated,customer.updated,customer.created" {
		t.Fatalf("order %s", got)
	}
}

func TestWebhooks_DuplicateModeSendsEachTwice(t *testing.T) {
	e := newEnv(t)
	rcv := newReceiver(t, "whsec_d")
	e.srv.AddWebhookEndpoint(rcv.srv.URL, []string{"whsec_d"}, nil, "")
	e.srv.SetDelivery(stripelocal.DeliveryMode{Mode: "concurrent", Duplicate: true})
	plainCustomer(t, e)
	plainCustomer(t, e)
	e.srv.WaitDeliveries()
	ids := map[string]int{}
	for _, ev := range rcv.received() {
		ids[ev.ID]++
	}
	if len(ids) != 2 || ids[rcv.received()[0].ID] != 2 {
		t.Fatalf("deliveries per event = %v, want 2 events twice each", ids)
	}
}

func TestWebhooks_ShuffledModeDeliversEverything(t *testing.T) {
	e := newEnv(t)
	rcv := newReceiver(t, "whsec_s")
	e.srv.AddWebhookEndpoint(rcv.srv.URL, []string{"whsec_s"}, []string{"customer.created"}, "")
	e.srv.SetDelivery(stripelocal.DeliveryMode{Mode: "shuffled", JitterMS: 30})
	var want []string
	for range 20 {
		want = append(want, plainCustomer(t, e).ID)
	}
	e.srv.WaitDeliveries()
	var got []string
	for _, ev := range rcv.received() {
		got = append(got, ev.Data.Object["id"].(string))
	}
	if len(got) != 20 {
		t.Fatalf("received %d of 20", len(got))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatal("a shuffled delivery was lost or changed")
	}
}

func TestFaults_InjectedFailuresThenRecovery(t *testing.T) {
	e := newEnv(t)
	e.srv.InjectFault(stripelocal.Fault{Count: 2, Path: "/v1/customers", Kind: "429"})
	for range 2 {
		_, err := e.sc.Customers.New(&stripe.CustomerParams{})
		if se := stripeErr(t, err); se.HTTPStatusCode != 429 || se.Code != "rate_limit" {
			t.Fatalf("got %+v, want 429 rate_limit", se)
		}
	}
	if _, err := e.sc.Products.New(&stripe.ProductParams{Name: stripe.String("x")}); err != nil {
		t.Fatalf("a fault on another path hit products: %v", err)
	}
	if _, err := e.sc.Customers.New(&stripe.CustomerParams{}); err != nil {
		t.Fatalf("after the faults: %v", err)
	}

	e.srv.InjectFault(stripelocal.Fault{Kind: "500", Path: "POST /v1/customers"})
	_, err := e.sc.Customers.New(&stripe.CustomerParams{})
	if se := stripeErr(t, err); se.HTTPStatusCode != 500 || se.Type != "api_error" {
		t.Fatalf("got %+v, want 500 api_error", se)
	}

	e.srv.InjectFault(stripelocal.Fault{Kind: "delay", DelayMS: 150})
	start := time.Now()
	if _, err := e.sc.Customers.New(&stripe.CustomerParams{}); err != nil || time.Since(start) < 150*time.Millisecond {
		t.Fatalf("delay: %v after %v", err, time.Since(start))
	}

	// Go's transport retries a request that carries an Idempotency-Key
	// once when a reused connection drops, so it takes two drops to reach
	// the caller.
	e.srv.InjectFault(stripelocal.Fault{Kind: "drop", Count: 2})
	_, err = e.sc.Customers.New(&stripe.CustomerParams{})
	var se *stripe.Error
	if err == nil || errors.As(err, &se) {
		t.Fatalf("a dropped connection gave %v, want a transport error", err)
	}
}

func TestFaults_LostResponseThenRetryWithTheSameKeyMakesNoDuplicate(t *testing.T) {
	e := newEnv(t)
	e.srv.InjectFault(stripelocal.Fault{Kind: "drop", After: true, Path: "POST /v1/customers"})
	params := func() *stripe.CustomerParams {
		p := &stripe.CustomerParams{Name: stripe.String("Acme")}
		p.SetIdempotencyKey("req-42")
		return p
	}
	if _, err := e.sc.Customers.New(params()); err == nil {
		t.Fatal("the response was supposed to be lost")
	}
	c, err := e.sc.Customers.New(params())
	if err != nil || c.LastResponse.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: %v, replayed %q", err, c.LastResponse.Header.Get("Idempotent-Replayed"))
	}
	n := 0
	for it := e.sc.Customers.List(nil); it.Next(); {
		n++
	}
	if n != 1 {
		t.Fatalf("customers = %d, want 1", n)
	}
}

// plainCustomer makes a customer with no payment method: one event.
func plainCustomer(t *testing.T, e *env) *stripe.Customer {
	t.Helper()
	c, err := e.sc.Customers.New(&stripe.CustomerParams{Metadata: map[string]string{"org_id": "org_1"}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
