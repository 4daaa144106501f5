package stripelocal_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/testenv"
)

func TestValidator_RefusesAndRecordsWhatStripeMockRejects(t *testing.T) {
	ref := testenv.StripeMock(t)
	o := testOpts()
	o.Validator = ref.Core
	e := newBareEnv(t, o)
	resp := rawPost(t, e, "/v1/products", url.Values{"name": {"x"}, "not_a_stripe_param": {"1"}}, "")
	if resp.StatusCode != 400 {
		t.Fatalf("an unknown parameter answered %d, want 400", resp.StatusCode)
	}
	if v := e.srv.Violations(); len(v) != 1 || !strings.Contains(v[0], "POST /v1/products") {
		t.Fatalf("violations = %v, want the one rejected request", v)
	}
	if ps := e.srv.Counts(); ps["POST /v1/products"] != 1 {
		t.Fatalf("counts = %v", ps)
	}
	it := e.sc.Products.List(nil)
	if it.Next() {
		t.Fatal("a request stripe-mock rejected created a product")
	}
}

func TestErrors_HaveStripesShapeAndARequestID(t *testing.T) {
	e := newEnv(t)
	_, err := e.sc.Customers.Get("cus_missing", nil)
	se := stripeErr(t, err)
	if se.HTTPStatusCode != 404 || se.Code != "resource_missing" || se.Type != "invalid_request_error" || se.Param != "id" || se.RequestID == "" {
		t.Fatalf("got %+v, want a 404 resource_missing with a request ID", se)
	}
	p, err := e.sc.Products.New(&stripe.ProductParams{Name: stripe.String("x")})
	if err != nil || p.LastResponse.RequestID == "" {
		t.Fatalf("a success carries no Request-Id: %v", err)
	}
}

func TestAuth_OnlySecretTestKeysAreAccepted(t *testing.T) {
	e := newEnv(t)
	for _, key := range []string{"sk_live_x", "pk_test_x", "nonsense"} {
		_, err := stripeClient(e.url, key).Customers.New(&stripe.CustomerParams{})
		if se := stripeErr(t, err); se.HTTPStatusCode != 401 {
			t.Errorf("key %s answered %d, want 401", key, se.HTTPStatusCode)
		}
	}
	if _, err := stripeClient(e.url, "sk_test_anything").Customers.New(&stripe.CustomerParams{}); err != nil {
		t.Fatalf("any sk_test_ key must work: %v", err)
	}
}

func TestIdempotency_SameKeyReplaysTheFirstResponse(t *testing.T) {
	e := newEnv(t)
	create := func(name string) (*stripe.Customer, error) {
		params := &stripe.CustomerParams{Name: stripe.String(name)}
		params.SetIdempotencyKey("org_1:ensure_customer")
		return e.sc.Customers.New(params)
	}
	first, err := create("Acme")
	if err != nil {
		t.Fatal(err)
	}
	again, err := create("Acme")
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID || again.LastResponse.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay created %s (first %s), replayed header %q", again.ID, first.ID, again.LastResponse.Header.Get("Idempotent-Replayed"))
	}
	_, err = create("Other name")
	if se := stripeErr(t, err); se.HTTPStatusCode != 400 || se.Type != "idempotency_error" || !strings.Contains(se.Msg, "same parameters") {
		t.Fatalf("different parameters: %+v, want 400 idempotency_error", se)
	}
	n := 0
	for it := e.sc.Customers.List(nil); it.Next(); {
		n++
	}
	if n != 1 {
		t.Fatalf("customers = %d, want 1", n)
	}
}

func TestCustomers_CreateUpdateDelete(t *testing.T) {
	e := newEnv(t)
	c, err := e.sc.Customers.New(&stripe.CustomerParams{Email: stripe.String("a@example.com"), Name: stripe.String("A"),
		Metadata: map[string]string{"org_id": "org_1", "billing_namespace": "ns"}})
	if err != nil || c.Metadata["org_id"] != "org_1" {
		t.Fatalf("create %+v %v", c, err)
	}
	u, err := e.sc.Customers.Update(c.ID, &stripe.CustomerParams{Metadata: map[string]string{"org_id": ""}, Name: stripe.String("B")})
	if err != nil || u.Name != "B" || u.Metadata["org_id"] != "" || u.Metadata["billing_namespace"] != "ns" {
		t.Fatalf("update %+v %v", u, err)
	}
	if _, err := e.sc.Customers.Del(c.ID, nil); err != nil {
		t.Fatal(err)
	}
	got, err := e.sc.Customers.Get(c.ID, nil)
	if err != nil || !got.Deleted {
		t.Fatalf("after delete: %+v %v", got, err)
	}
	var types []string
	for it := e.sc.Events.List(&stripe.EventListParams{}); it.Next(); {
		types = append(types, string(it.Event().Type))
	}
	if strings.Join(types, ",") != "customer.deleted,customer.updated,customer.created" {
		t.Fatalf("events = %v", types)
	}
}

func TestEvents_UpdatesCarryPreviousAttributes(t *testing.T) {
	e := newEnv(t)
	mustProduct(t, e, "p")
	if _, err := e.sc.Products.Update("p", &stripe.ProductParams{Name: stripe.String("renamed")}); err != nil {
		t.Fatal(err)
	}
	it := e.sc.Events.List(&stripe.EventListParams{Type: stripe.String("product.updated")})
	if !it.Next() {
		t.Fatal("no product.updated event")
	}
	ev := it.Event()
	got, err := e.sc.Events.Get(ev.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Data.PreviousAttributes["name"] != "p" || got.Data.Object["name"] != "renamed" || got.APIVersion != "2023-10-16" {
		t.Fatalf("event %+v", got.Data)
	}
}

func TestPortal_SessionHasAURL(t *testing.T) {
	e := newEnv(t)
	e.srv.SetPortalDefault(true)
	c, _ := e.sc.Customers.New(&stripe.CustomerParams{})
	s, err := e.sc.BillingPortalSessions.New(&stripe.BillingPortalSessionParams{Customer: stripe.String(c.ID), ReturnURL: stripe.String("https://app.example.com/billing")})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(s.URL)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("portal URL %s: %v %v", s.URL, resp, err)
	}
	resp.Body.Close()
}

func TestControl_HTTPAPIResetsAndCounts(t *testing.T) {
	e := newEnv(t)
	mustProduct(t, e, "p")
	var counts map[string]int
	getJSON(t, e.url+"/_local/counts", &counts)
	if counts["POST /v1/products"] != 1 {
		t.Fatalf("counts = %v", counts)
	}
	resp, err := http.Post(e.url+"/_local/reset", "application/json", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := e.sc.Products.Get("p", nil); err == nil {
		t.Fatal("reset kept the product")
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v: %s", url, err, raw)
	}
}

func TestControl_TheClockIsSetBackOnlyBeforeTheFirstCustomer(t *testing.T) {
	e := newEnv(t)
	before := time.Now()
	if err := e.srv.Rewind(50 * 24 * time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := before.Sub(e.srv.Now()); got < 50*24*time.Hour-time.Minute || got > 50*24*time.Hour+time.Minute {
		t.Fatalf("the clock is %v behind, want 50 days", got)
	}
	c, err := e.sc.Customers.New(&stripe.CustomerParams{Email: stripe.String("a@example.com")})
	if err != nil {
		t.Fatal(err)
	}
	if want := e.srv.Now().Unix(); c.Created < want-60 || c.Created > want {
		t.Fatalf("created %d by the server's clock %d", c.Created, want)
	}
	if err := e.srv.Rewind(time.Hour); err == nil {
		t.Fatal("the clock was set back under an existing customer")
	}
}
