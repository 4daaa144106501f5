package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/smithy-go"
)

// Keys are one stage's Stripe credentials. String and the JSON encoding of
// a Keys never reveal a value.
type Keys struct {
	APIKey                string `json:"api_key"`
	PublishableKey        string `json:"publishable_key"`
	WebhookSecret         string `json:"webhook_secret"`
	WebhookSecretPrevious string `json:"webhook_secret_previous,omitempty"`
}

// Enabled reports whether billing is on: it is off when there is no API key.
func (k Keys) Enabled() bool { return k.APIKey != "" }

// Live reports whether the API key is a live-mode key.
func (k Keys) Live() bool {
	return strings.HasPrefix(k.APIKey, "sk_live_") || strings.HasPrefix(k.APIKey, "rk_live_")
}

// WebhookSecrets returns the secrets a webhook signature may be made with:
// the current one first, then the previous one during a rotation.
func (k Keys) WebhookSecrets() []string {
	var s []string
	for _, v := range []string{k.WebhookSecret, k.WebhookSecretPrevious} {
		if v != "" {
			s = append(s, v)
		}
	}
	return s
}

// String redacts every value, so that a Keys printed by mistake leaks nothing.
func (k Keys) String() string {
	set := func(v string) string {
		if v == "" {
			return "unset"
		}
		return "set"
	}
	return fmt.Sprintf("Keys{api_key:%s publishable_key:%s webhook_secret:%s webhook_secret_previous:%s}",
		set(k.APIKey), set(k.PublishableKey), set(k.WebhookSecret), set(k.WebhookSecretPrevious))
}

// GoString keeps %#v as safe as %v.
func (k Keys) GoString() string { return k.String() }

// MarshalJSON encodes which keys are set, never their values (decoding
// reads the secret's JSON through the field tags as usual).
func (k Keys) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]bool{"api_key": k.APIKey != "", "publishable_key": k.PublishableKey != "",
		"webhook_secret": k.WebhookSecret != "", "webhook_secret_previous": k.WebhookSecretPrevious != ""})
}

// LogValue makes slog print a Keys as String does, under any handler.
func (k Keys) LogValue() slog.Value { return slog.StringValue(k.String()) }

// merge returns k with every non-empty field of over taking precedence.
func (k Keys) merge(over Keys) Keys {
	pick := func(o, v string) string {
		if o != "" {
			return o
		}
		return v
	}
	return Keys{
		APIKey:                pick(over.APIKey, k.APIKey),
		PublishableKey:        pick(over.PublishableKey, k.PublishableKey),
		WebhookSecret:         pick(over.WebhookSecret, k.WebhookSecret),
		WebhookSecretPrevious: pick(over.WebhookSecretPrevious, k.WebhookSecretPrevious),
	}
}

// checkMode returns an error when a key's mode does not match the stage: a
// live key outside prod, or a test key on prod. Names label the two keys in
// the message; the values are never included.
func (k Keys) checkMode(stage Stage, apiName, pubName string) error {
	var problems []string
	check := func(name, v string, live, test []string) {
		if v == "" {
			return
		}
		isLive, isTest := hasAnyPrefix(v, live), hasAnyPrefix(v, test)
		switch {
		case !isLive && !isTest:
			problems = append(problems, fmt.Sprintf("%s does not look like a Stripe key (want %s…)", name, strings.Join(append(test, live...), "… or ")))
		case stage.Live() && !isLive:
			problems = append(problems, fmt.Sprintf("%s is a test-mode key but STAGE is %s, which needs a live key", name, stage))
		case !stage.Live() && !isTest:
			problems = append(problems, fmt.Sprintf("%s is a live-mode key but STAGE is %s, which must use a test key", name, stage))
		}
	}
	check(apiName, k.APIKey, []string{"sk_live_", "rk_live_"}, []string{"sk_test_", "rk_test_"})
	check(pubName, k.PublishableKey, []string{"pk_live_"}, []string{"pk_test_"})
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// SecretsClient is the one Secrets Manager call the billing core makes, so
// the only IAM permission it needs is secretsmanager:GetSecretValue.
type SecretsClient interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

var _ SecretsClient = (*secretsmanager.Client)(nil)

// KeySource resolves a stage's Stripe keys: the secret, with the config's
// overrides on top. It reads the secret lazily, at most once per TTL, and is
// safe for concurrent use. Nothing is fetched until the first Keys call, so a
// cold start does no network I/O.
type KeySource struct {
	client    SecretsClient // nil when there is no secret to read
	secretID  string
	overrides Keys
	stage     Stage
	ttl       time.Duration
	now       func() time.Time

	mu        sync.Mutex
	keys      Keys
	fetchedAt time.Time
	loaded    bool
}

// NewKeySource returns a KeySource for cfg. client may be nil when
// cfg.StripeSecretID is empty.
func NewKeySource(cfg Config, client SecretsClient) *KeySource {
	ttl := cfg.SecretTTL
	if ttl <= 0 {
		ttl = DefaultSecretTTL
	}
	return &KeySource{
		client:    client,
		secretID:  cfg.StripeSecretID,
		overrides: cfg.Overrides,
		stage:     cfg.Stage,
		ttl:       ttl,
		now:       time.Now,
	}
}

// SetClock replaces the clock; tests use it to expire the cache without
// sleeping.
func (s *KeySource) SetClock(now func() time.Time) { s.now = now }

// Keys returns the cached keys, reading the secret when the cache is empty
// or older than the TTL. It fails with a CodeUnavailable *Error when Secrets
// Manager fails transiently, and with a CodeInternal *Error when the secret is
// missing, malformed or holds a key of the wrong mode for the stage.
func (s *KeySource) Keys(ctx context.Context) (Keys, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loaded && s.now().Sub(s.fetchedAt) < s.ttl {
		return s.keys, nil
	}
	keys, err := s.loadLocked(ctx)
	if err != nil && s.loaded && ErrorCode(err) == CodeUnavailable {
		// Expired keys are still the best keys there are: an outage of
		// Secrets Manager must not take billing down with it.
		return s.keys, nil
	}
	return keys, err
}

// Refresh reads the secret again whatever the cache holds. Callers use it
// once when Stripe answers 401 or a webhook signature fails against the
// cached secret.
func (s *KeySource) Refresh(ctx context.Context) (Keys, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadLocked(ctx)
}

func (s *KeySource) loadLocked(ctx context.Context) (Keys, error) {
	var fromSecret Keys
	if s.secretID != "" && s.client != nil {
		out, err := s.client.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: &s.secretID})
		if err != nil {
			return Keys{}, classifySecretError(err)
		}
		if out.SecretString == nil {
			return Keys{}, &Error{Code: CodeInternal, Message: "the Stripe secret has no string value"}
		}
		dec := json.NewDecoder(strings.NewReader(*out.SecretString))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fromSecret); err != nil {
			// The decoder's message can quote the secret's text, so it is
			// not kept.
			return Keys{}, &Error{Code: CodeInternal, Message: "the Stripe secret is not a JSON object of api_key, publishable_key, webhook_secret and webhook_secret_previous"}
		}
	}
	keys := fromSecret.merge(s.overrides)
	if err := keys.checkMode(s.stage, "the Stripe API key", "the publishable key"); err != nil {
		return Keys{}, &Error{Code: CodeInternal, Message: "misconfigured: " + err.Error()}
	}
	s.keys, s.fetchedAt, s.loaded = keys, s.now(), true
	return keys, nil
}

// classifySecretError maps a Secrets Manager failure to the error vocabulary:
// a missing secret or a denied read is a configuration problem that no retry
// fixes; anything else is treated as transient.
func classifySecretError(err error) error {
	var notFound *smtypes.ResourceNotFoundException
	if errors.As(err, &notFound) {
		return &Error{Code: CodeInternal, Message: "the Stripe secret does not exist", Err: err}
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "AccessDeniedException", "DecryptionFailure", "InvalidParameterException", "InvalidRequestException":
			return &Error{Code: CodeInternal, Message: "the Stripe secret cannot be read: " + api.ErrorCode(), Err: err}
		}
	}
	return &Error{Code: CodeUnavailable, Message: "Secrets Manager is unavailable", Retryable: true, Err: fmt.Errorf("%w: %w", errSecretsDown, err)}
}

// errSecretsDown marks a failure to read the keys at all.
var errSecretsDown = errors.New("secrets manager unavailable")
