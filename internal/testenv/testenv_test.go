package testenv

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/baseten/billing-functions/internal/stripelocal"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

func TestMakefile_InstallsTheStripeMockVersionsTheTestsUse(t *testing.T) {
	core, meters, err := makefileVersions()
	if err != nil {
		t.Fatal(err)
	}
	if core != StripeMockCore || meters != StripeMockMeters {
		t.Fatalf("Makefile installs stripe-mock %q and %q, testenv runs %q and %q", core, meters, StripeMockCore, StripeMockMeters)
	}
}

func TestSpecCheck_AcceptsStripesShapeAndReportsAnotherShape(t *testing.T) {
	spec := StripeSpec(t)
	good := `{"id":"cus_1","object":"customer","address":null,"balance":0,"created":1700000000,"currency":null,"default_source":null,` +
		`"delinquent":false,"description":null,"discount":null,"email":null,"invoice_prefix":"ABC","invoice_settings":` +
		`{"custom_fields":null,"default_payment_method":null,"footer":null,"rendering_options":null},"livemode":false,` +
		`"metadata":{},"name":null,"phone":null,"preferred_locales":[],"shipping":null,"tax_exempt":"none","test_clock":null}`
	if err := spec.Check("GET", "/v1/customers/cus_1", 200, []byte(good)); err != nil {
		t.Fatalf("a customer as Stripe shows one was refused: %v", err)
	}
	for name, body := range map[string]string{
		"a field of the wrong type": strings.Replace(good, `"delinquent":false`, `"delinquent":"no"`, 1),
		"a required field missing":  strings.Replace(good, `"livemode":false,`, ``, 1),
	} {
		if err := spec.Check("GET", "/v1/customers/cus_1", 200, []byte(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := spec.Check("GET", "/v1/customers/cus_1", 404, []byte(`{"error":{"message":"x"}}`)); err == nil {
		t.Error("an error body without its required type was accepted")
	}
	meter := `{"id":"mtr_1","object":"billing.meter","created":1,"customer_mapping":{"event_payload_key":"stripe_customer_id","type":"by_id"},` +
		`"default_aggregation":{"formula":"sum"},"display_name":"x","event_name":"x","event_time_window":null,"livemode":false,` +
		`"status":"active","status_transitions":{"deactivated_at":null},"updated":1,"value_settings":{"event_payload_key":"value"}}`
	if err := spec.Check("GET", "/v1/billing/meters/mtr_1", 200, []byte(meter)); err != nil {
		t.Fatalf("a meter, checked against the 2024-04-10 spec, was refused: %v", err)
	}
}

// recorder is a testing.TB that keeps what it was told to report.
type recorder struct {
	testing.TB
	errors []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestLocalStripe_AnAnswerThatBreaksTheSpecFailsTheTest(t *testing.T) {
	srv := stripelocal.New(stripelocal.Options{CheckResponse: func(method, uri string, status int, body []byte) error {
		if uri == "/v1/customers" {
			return errors.New("customer: livemode is required")
		}
		return nil
	}})
	hs := httptest.NewServer(srv)
	defer func() { hs.Close(); srv.Close() }()
	req, _ := http.NewRequest(http.MethodPost, hs.URL+"/v1/customers", strings.NewReader("email=a%40b.co"))
	req.Header.Set("Authorization", "Bearer sk_test_x")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	rec := &recorder{TB: t}
	FailOnViolations(rec, srv)
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "POST /v1/customers: answer 200 breaks the spec: customer: livemode is required") {
		t.Fatalf("the test was told %q, want one failure naming the answer", rec.errors)
	}
}
