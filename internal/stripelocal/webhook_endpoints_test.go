package stripelocal_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stripe/stripe-go/v76"
)

// FIDELITY.md rule 16: the secret only on creation, what an update takes,
// and the account's 16 endpoints.
func TestWebhookEndpoints_SecretOnCreationUpdateAndTheLimit(t *testing.T) {
	e := newEnv(t)
	ep, err := e.sc.WebhookEndpoints.New(&stripe.WebhookEndpointParams{URL: stripe.String("https://a.example.test/hook"),
		EnabledEvents: stripe.StringSlice([]string{"invoice.paid"}), APIVersion: stripe.String(stripe.APIVersion),
		Metadata: map[string]string{"billing_namespace": "ns"}})
	if err != nil || !strings.HasPrefix(ep.Secret, "whsec_") || ep.APIVersion != stripe.APIVersion || ep.Metadata["billing_namespace"] != "ns" {
		t.Fatalf("create: %+v %v", ep, err)
	}
	got, err := e.sc.WebhookEndpoints.Get(ep.ID, nil)
	if err != nil || got.Secret != "" {
		t.Fatalf("retrieve: the secret is shown after creation (%v)", err)
	}
	up, err := e.sc.WebhookEndpoints.Update(ep.ID, &stripe.WebhookEndpointParams{URL: stripe.String("https://b.example.test/hook"),
		EnabledEvents: stripe.StringSlice([]string{"invoice.paid", "invoice.payment_failed"}), Disabled: stripe.Bool(true)})
	if err != nil || up.URL != "https://b.example.test/hook" || len(up.EnabledEvents) != 2 || up.Status != "disabled" || up.Secret != "" {
		t.Fatalf("update: %+v %v", up, err)
	}
	// An update with api_version is refused by the referee (stripe-mock:
	// the spec's update takes no api_version), so no test sends one.
	for i := 1; i < 16; i++ {
		if _, err := e.sc.WebhookEndpoints.New(&stripe.WebhookEndpointParams{URL: stripe.String(fmt.Sprintf("https://%d.example.test/hook", i)),
			EnabledEvents: stripe.StringSlice([]string{"*"})}); err != nil {
			t.Fatalf("endpoint %d of 16: %v", i+1, err)
		}
	}
	_, err = e.sc.WebhookEndpoints.New(&stripe.WebhookEndpointParams{URL: stripe.String("https://17.example.test/hook"), EnabledEvents: stripe.StringSlice([]string{"*"})})
	var se *stripe.Error
	if !errors.As(err, &se) || se.HTTPStatusCode != 400 {
		t.Fatalf("a 17th endpoint: %v, want a 400", err)
	}
}
