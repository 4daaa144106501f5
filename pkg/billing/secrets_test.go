package billing_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
)

func cfgFor(secretID string) billing.Config {
	return billing.Config{Stage: billing.StageStaging, Namespace: "baseten-staging", TableName: "t", StripeSecretID: secretID, SecretTTL: 10 * time.Minute}
}

func TestKeySource_ReadsSecretOnceForManyWarmCalls(t *testing.T) {
	t.Parallel()
	client := &countingSecrets{SecretsClient: testenv.SecretsManager(t)}
	src := billing.NewKeySource(cfgFor(createSecret(t, stagingSecret)), client)
	if client.calls.Load() != 0 {
		t.Fatal("NewKeySource read the secret: a cold start must do no network I/O")
	}
	var wg sync.WaitGroup
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := src.Keys(context.Background())
			if err != nil || k.APIKey != "sk_test_one" || k.WebhookSecret != "whsec_one" {
				t.Errorf("Keys = %v, %v", k, err)
			}
		}()
	}
	wg.Wait()
	if got := client.calls.Load(); got != 1 {
		t.Fatalf("GetSecretValue calls for 1,000 warm calls = %d, want 1", got)
	}
}

func TestKeySource_RereadsAfterTTLAndOnRefresh(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	name := createSecret(t, stagingSecret)
	client := &countingSecrets{SecretsClient: testenv.SecretsManager(t)}
	src := billing.NewKeySource(cfgFor(name), client)
	now := time.Unix(1_800_000_000, 0)
	src.SetClock(func() time.Time { return now })

	if _, err := src.Keys(ctx); err != nil {
		t.Fatal(err)
	}
	putSecret(t, name, `{"api_key":"sk_test_two","publishable_key":"pk_test_two","webhook_secret":"whsec_two","webhook_secret_previous":"whsec_one"}`)

	now = now.Add(9 * time.Minute)
	k, _ := src.Keys(ctx)
	if k.APIKey != "sk_test_one" {
		t.Fatalf("within the TTL got %s…, want the cached key", k.APIKey[:11])
	}
	now = now.Add(2 * time.Minute)
	k, _ = src.Keys(ctx)
	if k.APIKey != "sk_test_two" || strings.Join(k.WebhookSecrets(), ",") != "whsec_two,whsec_one" {
		t.Fatalf("after the TTL got %v, want the rotated keys with the previous webhook secret", k)
	}

	putSecret(t, name, `{"api_key":"sk_test_three","publishable_key":"pk_test_3","webhook_secret":"whsec_3"}`)
	k, err := src.Refresh(ctx)
	if err != nil || k.APIKey != "sk_test_three" {
		t.Fatalf("Refresh = %v, %v; want the new key at once", k, err)
	}
	if got := client.calls.Load(); got != 3 {
		t.Fatalf("GetSecretValue calls = %d, want 3 (first, after TTL, forced)", got)
	}
}

func TestKeySource_OverridesTakePrecedence(t *testing.T) {
	t.Parallel()
	cfg := cfgFor(createSecret(t, stagingSecret))
	cfg.Overrides = billing.Keys{WebhookSecret: "whsec_local"}
	k, err := billing.NewKeySource(cfg, testenv.SecretsManager(t)).Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if k.WebhookSecret != "whsec_local" || k.APIKey != "sk_test_one" {
		t.Fatalf("got %v: want the override's webhook secret and the secret's API key", k)
	}
}

func TestKeySource_EmptyKeyMeansBillingDisabled(t *testing.T) {
	t.Parallel()
	cfg := billing.Config{Stage: billing.StageDev, Namespace: "local-dev", TableName: "t"}
	k, err := billing.NewKeySource(cfg, nil).Keys(context.Background())
	if err != nil {
		t.Fatalf("no key must not be an error: %v", err)
	}
	if k.Enabled() {
		t.Fatal("billing enabled with no API key")
	}
	k, err = billing.NewKeySource(cfgFor(createSecret(t, `{"api_key":"","publishable_key":"","webhook_secret":""}`)), testenv.SecretsManager(t)).Keys(context.Background())
	if err != nil || k.Enabled() {
		t.Fatalf("a secret with an empty api_key: enabled=%v err=%v, want disabled and no error", k.Enabled(), err)
	}
}

func TestKeySource_LiveKeyInStagingSecretIsRefused(t *testing.T) {
	t.Parallel()
	const live = `{"api_key":"sk_live_REAL","publishable_key":"pk_live_x","webhook_secret":"whsec_x"}`
	_, err := billing.NewKeySource(cfgFor(createSecret(t, live)), testenv.SecretsManager(t)).Keys(context.Background())
	if billing.ErrorCode(err) != billing.CodeInternal || !strings.Contains(err.Error(), "live-mode") {
		t.Fatalf("got %v, want an internal misconfiguration naming the live-mode key", err)
	}
	if strings.Contains(err.Error(), "REAL") {
		t.Fatalf("the error reveals the key: %v", err)
	}
}

func TestKeySource_MalformedSecretDoesNotLeakIt(t *testing.T) {
	t.Parallel()
	_, err := billing.NewKeySource(cfgFor(createSecret(t, `{"api_key": "sk_test_LEAK", "oops": `)), testenv.SecretsManager(t)).Keys(context.Background())
	if billing.ErrorCode(err) != billing.CodeInternal {
		t.Fatalf("got %v, want internal", err)
	}
	if strings.Contains(err.Error(), "LEAK") {
		t.Fatalf("the error quotes the secret: %v", err)
	}
}

func TestKeySource_MissingSecretIsNotRetryable(t *testing.T) {
	t.Parallel()
	_, err := billing.NewKeySource(cfgFor("billing/does-not-exist"), testenv.SecretsManager(t)).Keys(context.Background())
	e := billing.AsError(err)
	if e.Code != billing.CodeInternal || e.Retryable {
		t.Fatalf("got %+v, want a non-retryable internal error", e)
	}
}

func TestKeySource_SecretsManagerDownIsUnavailable(t *testing.T) {
	t.Parallel()
	port, _ := testenv.FreePort() // nothing listens there
	down := secretsmanager.NewFromConfig(testenv.AWSConfig("http://127.0.0.1:"+strconv.Itoa(port)), func(o *secretsmanager.Options) {
		o.RetryMaxAttempts = 1
	})
	_, err := billing.NewKeySource(cfgFor("billing/x"), down).Keys(context.Background())
	if e := billing.AsError(err); e.Code != billing.CodeUnavailable || !e.Retryable {
		t.Fatalf("got %+v, want retryable unavailable", e)
	}
}

func TestKeySource_ServesExpiredKeysWhileSecretsManagerIsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	name := createSecret(t, stagingSecret)
	flaky := &switchableSecrets{SecretsClient: testenv.SecretsManager(t)}
	src := billing.NewKeySource(cfgFor(name), flaky)
	now := time.Unix(1_800_000_000, 0)
	src.SetClock(func() time.Time { return now })
	if _, err := src.Keys(ctx); err != nil {
		t.Fatal(err)
	}
	port, _ := testenv.FreePort()
	flaky.SecretsClient = secretsmanager.NewFromConfig(testenv.AWSConfig("http://127.0.0.1:"+strconv.Itoa(port)), func(o *secretsmanager.Options) { o.RetryMaxAttempts = 1 })
	now = now.Add(time.Hour)
	k, err := src.Keys(ctx)
	if err != nil || k.APIKey != "sk_test_one" {
		t.Fatalf("Keys during an outage = %v, %v; want the expired keys", k, err)
	}
}

type switchableSecrets struct{ billing.SecretsClient }
