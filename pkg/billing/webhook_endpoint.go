package billing

import (
	"context"
	"encoding/json"
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/stripe/stripe-go/v76"
)

// HandledEventTypes lists, sorted, the event types the webhook handles:
// its endpoint's enabled_events, generated from the handlers themselves so
// that the two cannot drift.
func HandledEventTypes() []string {
	return slices.Sorted(maps.Keys(webhookHandlers))
}

// WebhookEndpointResult says what EnsureWebhookEndpoint did. The signing
// secret is never in it.
type WebhookEndpointResult struct {
	Action        string   `json:"action"` // created, updated, unchanged, replaced
	EndpointID    string   `json:"endpoint_id"`
	URL           string   `json:"url"`
	APIVersion    string   `json:"api_version"`
	EnabledEvents []string `json:"enabled_events"`
	// SecretStored says a new signing secret was written into the stage's
	// secret (as webhook_secret, the one before as webhook_secret_previous).
	SecretStored bool `json:"secret_stored"`
	// Deleted lists the namespace's endpoints removed: replaced, or
	// duplicates a crashed run left.
	Deleted []string `json:"deleted,omitempty"`
}

// EnsureWebhookEndpoint makes this namespace's webhook endpoint exist, as
// code: url, the API version stripe-go sends (events rendered in another
// version would each be fetched again) and enabled_events exactly
// HandledEventTypes(), with billing_namespace in its metadata, by which
// alone it is found (the account is shared; nothing is found by URL or
// name). A changed url or event list is updated in place; an API version
// cannot be changed (Stripe takes it on creation only), so that endpoint is
// replaced. A new endpoint's signing secret, which Stripe shows only on
// creation, goes into the stage's secret before any older endpoint is
// deleted, the current one kept as webhook_secret_previous, so that every
// delivery verifies throughout. rotate replaces the endpoint to change its
// secret. Running it again changes nothing.
func (s *Service) EnsureWebhookEndpoint(ctx context.Context, store SecretWriter, url string, rotate bool) (WebhookEndpointResult, error) {
	want := HandledEventTypes()
	res := WebhookEndpointResult{URL: url, APIVersion: stripe.APIVersion, EnabledEvents: want}
	var ours []*stripe.WebhookEndpoint
	err := s.withStripe(ctx, "list webhook endpoints", func(api *stripeAPI) error {
		ours = nil
		it := api.WebhookEndpoints.List(&stripe.WebhookEndpointListParams{ListParams: stripe.ListParams{Context: ctx, Limit: stripe.Int64(100)}})
		for it.Next() {
			if ep := it.WebhookEndpoint(); ep.Metadata[metaNamespace] == s.cfg.Namespace {
				ours = append(ours, ep)
			}
		}
		return it.Err()
	})
	if err != nil {
		return res, err
	}
	if len(ours) == 1 && !rotate && ours[0].APIVersion == stripe.APIVersion {
		ep := ours[0]
		res.EndpointID, res.Action = ep.ID, "unchanged"
		if ep.URL == url && slices.Equal(slices.Sorted(slices.Values(ep.EnabledEvents)), want) && ep.Status == "enabled" {
			return res, nil
		}
		res.Action = "updated"
		return res, s.withStripe(ctx, "update the webhook endpoint", func(api *stripeAPI) error {
			p := &stripe.WebhookEndpointParams{URL: stripe.String(url), EnabledEvents: stripe.StringSlice(want), Disabled: stripe.Bool(false)}
			p.Context = ctx
			_, err := api.WebhookEndpoints.Update(ep.ID, p)
			return err
		})
	}
	// None, several (a run stopped between its create and its deletes), an
	// API version of another time, or a rotation: a new endpoint.
	var created *stripe.WebhookEndpoint
	err = s.withStripe(ctx, "create the webhook endpoint", func(api *stripeAPI) error {
		p := &stripe.WebhookEndpointParams{URL: stripe.String(url), EnabledEvents: stripe.StringSlice(want), APIVersion: stripe.String(stripe.APIVersion),
			Description: stripe.String("billing-functions " + s.cfg.Namespace)}
		p.AddMetadata(metaNamespace, s.cfg.Namespace)
		p.Context = ctx
		var err error
		created, err = api.WebhookEndpoints.New(p)
		return err
	})
	if err != nil {
		return res, err
	}
	res.EndpointID, res.Action = created.ID, "created"
	if len(ours) > 0 {
		res.Action = "replaced"
	}
	if err := store.StoreWebhookSecret(ctx, created.Secret); err != nil {
		// The endpoint exists without its secret stored: the next run
		// replaces it.
		return res, err
	}
	res.SecretStored = true
	for _, old := range ours {
		err := s.withStripe(ctx, "delete a replaced webhook endpoint", func(api *stripeAPI) error {
			p := &stripe.WebhookEndpointParams{}
			p.Context = ctx
			_, err := api.WebhookEndpoints.Del(old.ID, p)
			return err
		})
		if err != nil && ErrorCode(err) != CodeNotFound {
			return res, err
		}
		res.Deleted = append(res.Deleted, old.ID)
	}
	return res, nil
}

// SecretWriter stores a new webhook signing secret into the stage's
// secret.
type SecretWriter interface {
	StoreWebhookSecret(ctx context.Context, secret string) error
}

// SecretsReadWriter is the part of the Secrets Manager client a
// StageSecret uses.
type SecretsReadWriter interface {
	SecretsClient
	PutSecretValue(ctx context.Context, in *secretsmanager.PutSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.PutSecretValueOutput, error)
}

// StageSecret is a stage's secret in Secrets Manager, for operators'
// tools: the functions only read it.
type StageSecret struct {
	Client SecretsReadWriter
	ID     string
}

// StoreWebhookSecret writes secret as the secret's webhook_secret, the one
// it replaces as webhook_secret_previous (the webhook verifies with both),
// keeping every other field. It never logs or returns either value.
func (st StageSecret) StoreWebhookSecret(ctx context.Context, secret string) error {
	if secret == "" {
		return Errorf(CodeInternal, "Stripe returned no signing secret for the new endpoint")
	}
	out, err := st.Client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: &st.ID})
	if err != nil {
		return classifySecretError(err)
	}
	fields := map[string]any{}
	if out.SecretString != nil && json.Unmarshal([]byte(*out.SecretString), &fields) != nil {
		return Errorf(CodeInternal, "the stage's secret is not a JSON object")
	}
	if cur, _ := fields["webhook_secret"].(string); cur != "" && cur != secret {
		fields["webhook_secret_previous"] = cur
	}
	fields["webhook_secret"] = secret
	raw, _ := json.Marshal(fields)
	if _, err := st.Client.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: &st.ID, SecretString: stringPtr(string(raw))}); err != nil {
		return classifySecretError(err)
	}
	return nil
}

func stringPtr(s string) *string { return &s }
