package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
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

// TestUnsettable_MatchesTheSpec keeps the local Stripe's list of parameters
// that accept an empty string equal to what Stripe's spec types as
// accepting one (2023-10-16; 2024-04-10 for meters), for every POST route
// it serves. On a difference it prints the list to paste into empty.go.
func TestUnsettable_MatchesTheSpec(t *testing.T) {
	Need(t, "Stripe's OpenAPI specs (from the stripe-mock modules)")
	specs := map[string]map[string]any{}
	for _, v := range []string{StripeMockCore, StripeMockMeters} {
		path, err := specPath(v)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var spec map[string]any
		if err := json.Unmarshal(raw, &spec); err != nil {
			t.Fatal(err)
		}
		specs[v] = spec
	}
	var literal strings.Builder
	differ := false
	for _, route := range stripelocal.Routes() {
		method, path, _ := strings.Cut(route, " ")
		if method != "POST" {
			continue
		}
		spec := specs[StripeMockCore]
		if strings.HasPrefix(path, MeterPaths) {
			spec = specs[StripeMockMeters]
		}
		want := specUnsettable(spec, path)
		got := stripelocal.Unsettable(route)
		got = slices.DeleteFunc(got, func(p string) bool { return slices.Contains(stripelocal.UnsetExceptions(route), p) })
		if !slices.Equal(got, want) {
			differ = true
			t.Errorf("%s: the local Stripe lets %q be unset, the spec %q", route, got, want)
		}
		if len(want) > 0 {
			fmt.Fprintf(&literal, "\t%q: {%s},\n", route, quoteAll(want))
		}
	}
	if differ {
		t.Logf("the spec's list, for empty.go:\n%s", literal.String())
	}
}

// specUnsettable lists the form parameters of a POST path (its {…} names
// matched loosely) whose schema accepts "", recursively, with array items
// written as [].
func specUnsettable(spec map[string]any, path string) []string {
	schemas := spec["components"].(map[string]any)["schemas"].(map[string]any)
	var op map[string]any
	for p, item := range spec["paths"].(map[string]any) {
		if pathParam.ReplaceAllString(p, "{}") == pathParam.ReplaceAllString(path, "{}") {
			op, _ = item.(map[string]any)["post"].(map[string]any)
		}
	}
	if op == nil {
		return nil
	}
	body, _ := op["requestBody"].(map[string]any)
	content, _ := body["content"].(map[string]any)
	form, _ := content["application/x-www-form-urlencoded"].(map[string]any)
	schema, _ := form["schema"].(map[string]any)
	resolve := func(s map[string]any) map[string]any {
		if ref, ok := s["$ref"].(string); ok {
			r, _ := schemas[strings.TrimPrefix(ref, "#/components/schemas/")].(map[string]any)
			return r
		}
		return s
	}
	acceptsEmpty := func(s map[string]any) bool {
		alts := []any{s}
		if anyOf, ok := s["anyOf"].([]any); ok {
			alts = append(alts, anyOf...)
		}
		for _, a := range alts {
			enum, _ := a.(map[string]any)["enum"].([]any)
			if slices.Contains(enum, any("")) {
				return true
			}
		}
		return false
	}
	var out []string
	var walk func(s map[string]any, name string, depth int)
	walk = func(s map[string]any, name string, depth int) {
		if s = resolve(s); s == nil || depth > 6 {
			return
		}
		if name != "" && acceptsEmpty(s) {
			out = append(out, name)
		}
		alts := []any{s}
		if anyOf, ok := s["anyOf"].([]any); ok {
			alts = append(alts, anyOf...)
		}
		for _, a := range alts {
			am := resolve(a.(map[string]any))
			props, _ := am["properties"].(map[string]any)
			for k, v := range props {
				child := k
				if name != "" {
					child = name + "[" + k + "]"
				}
				walk(v.(map[string]any), child, depth+1)
			}
			if items, ok := am["items"].(map[string]any); ok && name != "" {
				walk(items, name+"[]", depth+1)
			}
		}
	}
	walk(schema, "", 0)
	slices.Sort(out)
	return slices.Compact(out)
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
