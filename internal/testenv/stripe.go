package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/baseten/billing-functions/internal/stripelocal"
)

// The stripe-mock releases that referee the local Stripe. stripe-go v76
// sends API version 2023-10-16; stripe-mock v0.183.0 embeds that version's
// OpenAPI spec, which has no billing meters. stripe-go v76 uses meters all
// the same, so they are checked against v0.185.0's spec, 2024-04-10, the
// first with them. The Makefile installs the same versions; a test keeps
// the two in step.
const (
	StripeMockCore   = "v0.183.0"
	StripeMockMeters = "v0.185.0"
)

// MeterPaths is the path prefix of the billing meter endpoints, which the
// 2023-10-16 spec does not have.
const MeterPaths = "/v1/billing/meter"

// Referee is the pair of stripe-mock servers that check the requests sent
// to the local Stripe against Stripe's published spec.
type Referee struct {
	Core   string // everything but billing meters, against 2023-10-16
	Meters string // billing meters, against 2024-04-10
}

var referee lazy[Referee]

// StripeMock returns the referee, starting both stripe-mock servers at the
// first call of the process. Under -short the test is skipped.
func StripeMock(t testing.TB) Referee {
	t.Helper()
	Need(t, "stripe-mock "+StripeMockCore+" and "+StripeMockMeters)
	ref, err := referee.get(func() (Referee, error) {
		core, err := startStripeMock(StripeMockCore)
		if err != nil {
			return Referee{}, err
		}
		meters, err := startStripeMock(StripeMockMeters)
		if err != nil {
			core.Stop()
			return Referee{}, err
		}
		cleanups.add(func() { core.Stop(); meters.Stop() })
		return Referee{Core: core.URL, Meters: meters.URL}, nil
	})
	if err != nil {
		t.Fatalf("stripe-mock: %v", err)
	}
	return ref
}

// StripeMockPath is where `make tools` installs a stripe-mock release.
func StripeMockPath(version string) string {
	return filepath.Join(RepoRoot(), "bin", "stripe-mock-"+version, "stripe-mock")
}

func startStripeMock(version string) (*Server, error) {
	bin := StripeMockPath(version)
	if !fileExists(bin) {
		return nil, fmt.Errorf("%s is missing: run `make test` or `make tools`, which install it", bin)
	}
	// Its HTTPS listener would default to [::]:12112; keep it on loopback.
	return startOnFreePort(bin, "/", func(port int) []string {
		return []string{"-http-addr", fmt.Sprintf("127.0.0.1:%d", port), "-https-addr", "127.0.0.1:0"}
	})
}

// SpecCheck validates the local Stripe's answers against the response
// schemas of Stripe's OpenAPI spec: meters against 2024-04-10, everything
// else against 2023-10-16. It is safe for concurrent use.
type SpecCheck struct {
	core, meters routers.Router
}

var specCheck lazy[*SpecCheck]

// StripeSpec returns the process's SpecCheck, loading both specs (from the
// stripe-mock modules in Go's module cache) at the first call. Under -short
// the test is skipped: the specs are several megabytes each.
func StripeSpec(t testing.TB) *SpecCheck {
	t.Helper()
	Need(t, "Stripe's OpenAPI specs (from the stripe-mock modules)")
	c, err := specCheck.get(func() (*SpecCheck, error) {
		var coreRoutes, meterRoutes []string
		for _, r := range stripelocal.Routes() {
			if _, path, _ := strings.Cut(r, " "); strings.HasPrefix(path, MeterPaths) {
				meterRoutes = append(meterRoutes, r)
			} else {
				coreRoutes = append(coreRoutes, r)
			}
		}
		core, err := loadSpec(StripeMockCore, coreRoutes)
		if err != nil {
			return nil, err
		}
		meters, err := loadSpec(StripeMockMeters, meterRoutes)
		if err != nil {
			return nil, err
		}
		return &SpecCheck{core: core, meters: meters}, nil
	})
	if err != nil {
		t.Fatalf("Stripe's OpenAPI spec: %v", err)
	}
	return c
}

// specHost is the server the loaded specs are routed under.
const specHost = "http://stripe.spec"

// loadSpec loads the spec of a stripe-mock release, cut down to routes (of
// those the local Stripe serves) and the schemas they reach: the whole spec
// takes many seconds to load under the race detector, and most of it is
// never used.
func loadSpec(version string, routes []string) (routers.Router, error) {
	path, err := specPath(version)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if raw, err = pruneSpec(raw, routes); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	doc.Servers = openapi3.Servers{{URL: specHost}}
	return gorillamux.NewRouter(doc)
}

var pathParam = regexp.MustCompile(`\{[^}]*\}`)

// pruneSpec keeps the spec's paths that routes (patterns such as
// "GET /v1/products/{id}") name, and the component schemas those reach.
func pruneSpec(raw []byte, routes []string) ([]byte, error) {
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, err
	}
	served := map[string]bool{}
	for _, r := range routes {
		_, path, _ := strings.Cut(r, " ")
		served[pathParam.ReplaceAllString(path, "{}")] = true
	}
	paths, _ := spec["paths"].(map[string]any)
	kept := map[string]any{}
	for p, v := range paths {
		if !served[pathParam.ReplaceAllString(p, "{}")] {
			continue
		}
		// Only answers are checked here (stripe-mock checks requests), so
		// the request side, most of the spec, is left out.
		item, _ := v.(map[string]any)
		for _, op := range item {
			if o, ok := op.(map[string]any); ok {
				delete(o, "requestBody")
				delete(o, "parameters")
			}
		}
		kept[p] = item
	}
	components, _ := spec["components"].(map[string]any)
	schemas, _ := components["schemas"].(map[string]any)
	reached := map[string]any{}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				name, found := strings.CutPrefix(ref, "#/components/schemas/")
				if _, seen := reached[name]; found && !seen {
					reached[name] = schemas[name]
					walk(schemas[name])
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(kept)
	spec["paths"] = kept
	components["schemas"] = reached
	return json.Marshal(spec)
}

// specPath finds spec3.json in the stripe-mock module of version,
// downloading the module (checked against go.sum's database) if needed.
func specPath(version string) (string, error) {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMODCACHE: %w", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "github.com", "stripe", "stripe-mock@"+version, "embedded", "openapi", "spec3.json")
	if fileExists(path) {
		return path, nil
	}
	cmd := exec.Command("go", "mod", "download", "github.com/stripe/stripe-mock@"+version)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go mod download stripe-mock@%s: %w\n%s", version, err, b)
	}
	if !fileExists(path) {
		return "", fmt.Errorf("%s is not in the stripe-mock module", path)
	}
	return path, nil
}

// Check reports how an answer of the local Stripe differs from the spec's
// schema for its endpoint and status, or nil. A path the spec does not
// have is not checked here: the request referee refuses it.
func (c *SpecCheck) Check(method, requestURI string, status int, body []byte) error {
	router := c.core
	if strings.HasPrefix(requestURI, MeterPaths) {
		router = c.meters
	}
	req, err := http.NewRequest(method, specHost+requestURI, nil)
	if err != nil {
		return err
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		return nil
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}},
		Status: status,
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   io.NopCloser(bytes.NewReader(body)),
	}
	in.Options = in.RequestValidationInput.Options
	err = openapi3filter.ValidateResponse(context.Background(), in)
	if err == nil {
		return nil
	}
	return errors.New(summarize(err))
}

// summarize keeps the first lines of each schema error: kin-openapi appends
// the whole schema and value, which for a Stripe object is pages long.
func summarize(err error) string {
	var parts []string
	var multi openapi3.MultiError
	if errors.As(err, &multi) {
		for _, e := range multi {
			parts = append(parts, firstLine(e.Error()))
		}
	} else {
		parts = append(parts, firstLine(err.Error()))
	}
	return strings.Join(parts, "; ")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// LocalStripe starts the local Stripe for t on a free port: every request
// is first checked by stripe-mock and every answer against the spec of our
// API version, and a violation of either fails t when it ends. Under -short
// the test is skipped.
func LocalStripe(t testing.TB, opts stripelocal.Options) (*stripelocal.Server, string) {
	t.Helper()
	ref, spec := StripeMock(t), StripeSpec(t)
	opts.Validator, opts.MeterValidator, opts.CheckResponse = ref.Core, ref.Meters, spec.Check
	srv := stripelocal.New(opts)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
		FailOnViolations(t, srv)
	})
	return srv, hs.URL
}

// FailOnViolations fails t when the referee refused a request of srv's or
// one of its answers broke the spec.
func FailOnViolations(t testing.TB, srv *stripelocal.Server) {
	t.Helper()
	if v := srv.Violations(); len(v) > 0 {
		t.Errorf("the local Stripe saw %d violations of Stripe's spec:\n%s", len(v), strings.Join(v, "\n"))
	}
}

// makefileVersions reads the stripe-mock versions the Makefile installs,
// for the test that keeps them in step with this package.
func makefileVersions() (core, meters string, err error) {
	raw, err := os.ReadFile(filepath.Join(RepoRoot(), "Makefile"))
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		name, value, ok := strings.Cut(line, ":=")
		if !ok {
			continue
		}
		value, _, _ = strings.Cut(value, "#")
		switch strings.TrimSpace(name) {
		case "STRIPE_MOCK_CORE":
			core = strings.TrimSpace(value)
		case "STRIPE_MOCK_METERS":
			meters = strings.TrimSpace(value)
		}
	}
	return core, meters, nil
}
