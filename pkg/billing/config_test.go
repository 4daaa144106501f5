package billing

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func validEnv() map[string]string {
	return map[string]string{
		"STAGE":             "staging",
		"BILLING_NAMESPACE": "baseten-staging",
		"TABLE_NAME":        "billing-staging",
		"STRIPE_SECRET_ID":  "billing/staging/stripe",
	}
}

func TestLoadConfig_Valid(t *testing.T) {
	e := validEnv()
	e["SECRET_CACHE_TTL"] = "90s"
	e["STRIPE_API_BASE"] = "http://127.0.0.1:12111"
	e["USAGE_RATE"], e["USAGE_CONCURRENCY"] = "12.5", "4"
	c, err := LoadConfig(env(e))
	if err != nil {
		t.Fatal(err)
	}
	if c.Stage != StageStaging || c.Namespace != "baseten-staging" || c.TableName != "billing-staging" ||
		c.StripeSecretID != "billing/staging/stripe" || c.SecretTTL != 90*time.Second || c.StripeAPIBase != "http://127.0.0.1:12111" ||
		c.UsageRate != 12.5 || c.UsageConcurrency != 4 {
		t.Fatalf("unexpected config %+v", c)
	}
}

func TestLoadConfig_DefaultsTTLToTenMinutes(t *testing.T) {
	c, err := LoadConfig(env(validEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.SecretTTL, 10*time.Minute; got != want {
		t.Fatalf("SecretTTL = %v, want %v", got, want)
	}
	if c.UsageRate != DefaultUsageRate || c.UsageConcurrency != DefaultUsageConcurrency {
		t.Fatalf("usage pool %v a second, %d at once; want the defaults", c.UsageRate, c.UsageConcurrency)
	}
}

func TestLoadConfig_ListsEveryProblemAtOnce(t *testing.T) {
	_, err := LoadConfig(env(map[string]string{
		"STAGE":             "qa",
		"BILLING_NAMESPACE": "Bad_NS",
		"STRIPE_API_BASE":   "ftp://x",
		"SECRET_CACHE_TTL":  "-1m",
		"USAGE_RATE":        "0",
		"USAGE_CONCURRENCY": "many",
	}))
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"STAGE", "BILLING_NAMESPACE", "TABLE_NAME", "STRIPE_API_BASE", "SECRET_CACHE_TTL", "USAGE_RATE", "USAGE_CONCURRENCY"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
}

func TestLoadConfig_SecretRequiredOutsideDev(t *testing.T) {
	for _, stage := range []string{"staging", "prod"} {
		e := validEnv()
		e["STAGE"] = stage
		delete(e, "STRIPE_SECRET_ID")
		if _, err := LoadConfig(env(e)); err == nil || !strings.Contains(err.Error(), "STRIPE_SECRET_ID") {
			t.Errorf("%s without STRIPE_SECRET_ID: got %v, want an error naming it", stage, err)
		}
	}
	e := validEnv()
	e["STAGE"] = "dev"
	delete(e, "STRIPE_SECRET_ID")
	if _, err := LoadConfig(env(e)); err != nil {
		t.Errorf("dev without a secret must load (billing may be disabled there): %v", err)
	}
}

func TestLoadConfig_KeyModeMustMatchStage(t *testing.T) {
	cases := []struct {
		stage, key string
		ok         bool
	}{
		{"dev", "sk_test_abc", true},
		{"dev", "rk_test_abc", true},
		{"dev", "sk_live_abc", false},
		{"staging", "rk_live_abc", false},
		{"prod", "sk_live_abc", true},
		{"prod", "sk_test_abc", false},
		{"dev", "not-a-key", false},
	}
	for _, c := range cases {
		e := validEnv()
		e["STAGE"], e["STRIPE_API_KEY"] = c.stage, c.key
		_, err := LoadConfig(env(e))
		if (err == nil) != c.ok {
			t.Errorf("STAGE=%s key %s…: err = %v, want ok=%v", c.stage, c.key[:7], err, c.ok)
		}
		if err != nil && strings.Contains(err.Error(), c.key) {
			t.Errorf("the error quotes the key: %v", err)
		}
	}
}

func TestLoadConfig_PublishableKeyModeChecked(t *testing.T) {
	e := validEnv()
	e["STAGE"], e["STRIPE_PUBLISHABLE_KEY"] = "prod", "pk_test_x"
	if _, err := LoadConfig(env(e)); err == nil || !strings.Contains(err.Error(), "STRIPE_PUBLISHABLE_KEY") {
		t.Fatalf("got %v, want an error naming STRIPE_PUBLISHABLE_KEY", err)
	}
}

func TestLoadConfig_NoLocalStripeOnProd(t *testing.T) {
	e := validEnv()
	e["STAGE"], e["STRIPE_API_BASE"] = "prod", "http://127.0.0.1:12111"
	if _, err := LoadConfig(env(e)); err == nil || !strings.Contains(err.Error(), "STRIPE_API_BASE") {
		t.Fatalf("got %v, want STRIPE_API_BASE refused on prod", err)
	}
}

func TestKeys_RedactEveryValueUnderFmtJSONAndSlog(t *testing.T) {
	k := Keys{APIKey: "sk_test_SECRET", PublishableKey: "pk_test_PUB", WebhookSecret: "whsec_W", WebhookSecretPrevious: "whsec_P"}
	asJSON, err := json.Marshal(k)
	if err != nil || !strings.Contains(string(asJSON), `"api_key":true`) {
		t.Fatalf("json.Marshal: %s %v", asJSON, err)
	}
	nested, _ := json.Marshal(map[string]any{"keys": k, "ptr": &k})
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("keys", "keys", k, "ptr", &k)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("keys", "keys", k)
	// Decoding the secret's JSON still reads the values.
	var back Keys
	if err := json.Unmarshal([]byte(`{"api_key":"sk_test_x","webhook_secret":"whsec_y"}`), &back); err != nil || back.APIKey != "sk_test_x" || back.WebhookSecret != "whsec_y" {
		t.Fatalf("decoding the secret: %+v %v", back, err)
	}
	for _, s := range []string{k.String(), k.GoString(), fmt.Sprintf("%v %+v %#v %s", k, k, k, k), fmt.Sprintf("%v %+v", &k, &k),
		string(asJSON), string(nested), logged.String()} {
		for _, v := range []string{"SECRET", "PUB", "whsec_W", "whsec_P"} {
			if strings.Contains(s, v) {
				t.Fatalf("%q reveals %q", s, v)
			}
		}
	}
}
