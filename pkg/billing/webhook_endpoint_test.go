package billing_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
)

// The webhook endpoint as code: made once with the webhook's own event
// list and stripe-go's API version, found by its namespace alone, updated
// in place, replaced to rotate its secret, and its secret stored, never
// shown.
func TestWebhookEndpoint_AsCodeCreatesOnceUpdatesInPlaceAndRotates(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	ctx := context.Background()
	secretID := createSecret(t, `{"api_key":"sk_test_fixture","publishable_key":"pk_test_fixture","webhook_secret":"whsec_by_hand"}`)
	store := billing.StageSecret{Client: testenv.SecretsManager(t), ID: secretID}
	stored := func() map[string]string {
		t.Helper()
		out, err := testenv.SecretsManager(t).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: &secretID})
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]string
		_ = json.Unmarshal([]byte(*out.SecretString), &m)
		return m
	}
	ours := func() []*stripe.WebhookEndpoint {
		t.Helper()
		var out []*stripe.WebhookEndpoint
		it := f.sc().WebhookEndpoints.List(&stripe.WebhookEndpointListParams{})
		for it.Next() {
			if it.WebhookEndpoint().Metadata["billing_namespace"] == ns {
				out = append(out, it.WebhookEndpoint())
			}
		}
		return out
	}
	// Another deployment's endpoint on the shared account, at the same URL.
	const url = "https://hooks.example.test/integrations/stripe/webhooks"
	other, err := f.sc().WebhookEndpoints.New(&stripe.WebhookEndpointParams{URL: stripe.String(url), EnabledEvents: stripe.StringSlice([]string{"*"}),
		Metadata: map[string]string{"billing_namespace": "someone-else"}})
	if err != nil {
		t.Fatal(err)
	}

	r, err := f.svc.EnsureWebhookEndpoint(ctx, store, url, false)
	if err != nil || r.Action != "created" || !r.SecretStored {
		t.Fatalf("first run: %+v %v", r, err)
	}
	eps := ours()
	if len(eps) != 1 || eps[0].ID != r.EndpointID || eps[0].URL != url || eps[0].APIVersion != stripe.APIVersion ||
		!slices.Equal(eps[0].EnabledEvents, billing.HandledEventTypes()) {
		t.Fatalf("the endpoint: %+v", eps)
	}
	first := stored()
	if !strings.HasPrefix(first["webhook_secret"], "whsec_") || first["webhook_secret"] == "whsec_by_hand" ||
		first["webhook_secret_previous"] != "whsec_by_hand" || first["api_key"] != "sk_test_fixture" {
		t.Fatalf("the stored secret after creation: previous=%q, api_key kept=%v", first["webhook_secret_previous"], first["api_key"] == "sk_test_fixture")
	}
	if raw, _ := json.Marshal(r); strings.Contains(string(raw), first["webhook_secret"]) {
		t.Fatal("the result shows the signing secret")
	}

	f.stripe.ResetCounts()
	if r, err := f.svc.EnsureWebhookEndpoint(ctx, store, url, false); err != nil || r.Action != "unchanged" || r.SecretStored {
		t.Fatalf("second run: %+v %v", r, err)
	}
	if c := f.stripe.Counts(); len(c) != 1 || c["GET /v1/webhook_endpoints"] != 1 {
		t.Fatalf("a run with nothing to change sent %v; want one list", c)
	}

	moved := url + "?v=2"
	if r2, err := f.svc.EnsureWebhookEndpoint(ctx, store, moved, false); err != nil || r2.Action != "updated" || r2.EndpointID != r.EndpointID {
		t.Fatalf("a new URL: %+v %v, want the same endpoint updated", r2, err)
	}
	if eps := ours(); len(eps) != 1 || eps[0].URL != moved || stored()["webhook_secret"] != first["webhook_secret"] {
		t.Fatalf("after the update: %+v", eps)
	}

	r3, err := f.svc.EnsureWebhookEndpoint(ctx, store, moved, true)
	if err != nil || r3.Action != "replaced" || r3.EndpointID == r.EndpointID || !slices.Equal(r3.Deleted, []string{r.EndpointID}) {
		t.Fatalf("rotation: %+v %v", r3, err)
	}
	if s := stored(); s["webhook_secret"] == first["webhook_secret"] || s["webhook_secret_previous"] != first["webhook_secret"] {
		t.Fatal("rotation did not store the new secret with the old one as previous")
	}
	if eps := ours(); len(eps) != 1 || eps[0].ID != r3.EndpointID {
		t.Fatalf("after rotation: %+v", eps)
	}
	if _, err := f.sc().WebhookEndpoints.Get(other.ID, nil); err != nil {
		t.Fatalf("another deployment's endpoint was touched: %v", err)
	}
}

// The endpoint's event list is the webhook's: every listed type is
// handled, and a type off the list is ignored as unhandled.
func TestWebhookEndpoint_TheEventListIsWhatTheWebhookHandles(t *testing.T) {
	t.Parallel()
	types := billing.HandledEventTypes()
	for _, want := range []string{"customer.subscription.updated", "invoice.payment_failed", "checkout.session.completed", "product.updated", "price.deleted"} {
		if !slices.Contains(types, want) {
			t.Errorf("%s is not on the endpoint's list %v", want, types)
		}
	}
	f := newFixture(t, ns)
	for _, typ := range []string{"charge.succeeded", "customer.source.created"} {
		res := f.send(eventJSON("evt_"+strings.ReplaceAll(typ, ".", "_"), typ, 100, stripe.APIVersion, map[string]any{"id": "ch_1", "object": "charge"}))
		if res.StatusCode != 200 || !strings.Contains(res.Body, "ignored") || slices.Contains(types, typ) {
			t.Errorf("%s: %d %s", typ, res.StatusCode, res.Body)
		}
	}
}
