package stripelocal_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

type env struct {
	srv *stripelocal.Server
	url string
	sc  *client.API
}

// testOpts are the options of the tests' local Stripes: quick webhook
// retries.
func testOpts() stripelocal.Options {
	return stripelocal.Options{RetryBase: 20 * time.Millisecond, MaxAttempts: 4}
}

// newEnv starts a local Stripe whose requests stripe-mock checks and whose
// answers are checked against Stripe's spec; any violation fails the test.
// Under -short, where stripe-mock does not run, the server runs alone: what
// each test asserts of its behaviour still holds.
func newEnv(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		return newBareEnv(t, testOpts())
	}
	srv, url := testenv.LocalStripe(t, testOpts())
	return &env{srv: srv, url: url, sc: stripeClient(url, "sk_test_local")}
}

// newBareEnv starts a local Stripe with no referee.
func newBareEnv(t *testing.T, opts stripelocal.Options) *env {
	t.Helper()
	srv := stripelocal.New(opts)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return &env{srv: srv, url: hs.URL, sc: stripeClient(hs.URL, "sk_test_local")}
}

// stripeClient is an unmodified stripe-go client; only the backend URL
// changes. Its own network retries are off so that tests see each answer.
func stripeClient(url, key string) *client.API {
	b := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL:               stripe.String(url),
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	return client.New(key, &stripe.Backends{API: b, Connect: b, Uploads: b})
}

// receiver is a webhook endpoint that verifies each delivery with
// stripe-go's webhook package and records the events.
type receiver struct {
	t       *testing.T
	secret  string
	mu      sync.Mutex
	events  []stripe.Event
	fail    int // answer 500 to this many deliveries first
	hits    int
	invalid int
	srv     *httptest.Server
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{t: t, secret: secret}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hits++
	if r.fail > 0 {
		r.fail--
		w.WriteHeader(500)
		return
	}
	ev, err := webhook.ConstructEvent(body, req.Header.Get("Stripe-Signature"), r.secret)
	if err != nil {
		r.invalid++
		r.t.Errorf("delivery did not verify: %v", err)
		w.WriteHeader(400)
		return
	}
	r.events = append(r.events, ev)
}

func (r *receiver) received() []stripe.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]stripe.Event(nil), r.events...)
}

func (r *receiver) types() []string {
	var out []string
	for _, ev := range r.received() {
		out = append(out, string(ev.Type))
	}
	return out
}

func stripeErr(t *testing.T, err error) *stripe.Error {
	t.Helper()
	var se *stripe.Error
	if !errors.As(err, &se) {
		t.Fatalf("got %v (%T), want a *stripe.Error", err, err)
	}
	return se
}
