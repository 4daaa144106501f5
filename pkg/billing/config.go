package billing

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Stage is a deployment environment. Each stage has its own Stripe keys.
type Stage string

const (
	StageDev     Stage = "dev"
	StageStaging Stage = "staging"
	StageProd    Stage = "prod"
)

// Live reports whether the stage must use Stripe live-mode keys.
func (s Stage) Live() bool { return s == StageProd }

// DefaultSecretTTL is how long fetched Stripe keys are trusted before the
// secret is read again.
const DefaultSecretTTL = 10 * time.Minute

// Config is the typed configuration of every billing function, loaded once per
// cold start from the environment.
type Config struct {
	Stage     Stage
	Namespace string // names this deployment inside a shared Stripe account
	TableName string

	// StripeSecretID is the Secrets Manager secret's name or ARN. It may be
	// empty on dev, where the keys can come from the overrides alone.
	StripeSecretID string

	// Overrides holds the STRIPE_* local-development variables. Each non-empty
	// field takes precedence over the same field of the secret.
	Overrides Keys

	// StripeAPIBase points the Stripe client at a local server. Empty means
	// Stripe itself.
	StripeAPIBase string

	SecretTTL time.Duration

	// UsageConcurrency and UsageRate bound record_usage_batch's meter
	// events: requests in flight, and requests a second (USAGE_CONCURRENCY,
	// USAGE_RATE).
	UsageConcurrency int
	UsageRate        float64

	// PastDueGrace is how long after its period began a past_due
	// subscription may still run instance types (PAST_DUE_GRACE_DAYS).
	PastDueGrace time.Duration

	// ReconcileRate paces a reconcile pass's Stripe requests
	// (RECONCILE_RATE, a second), ReconcilePageSize is its search pages'
	// size (RECONCILE_PAGE_SIZE), and ReconcileStepTime bounds one step
	// (RECONCILE_STEP_TIME; 0: until the invocation's deadline less a
	// margin). ReconcileLease is how long after a step's end its lease
	// holds the pass, should it die (0: DefaultReconcileLease).
	ReconcileRate     float64
	ReconcilePageSize int
	ReconcileStepTime time.Duration
	ReconcileLease    time.Duration

	// AlertBusName is the EventBridge bus spend alerts go to
	// (ALERT_BUS_NAME); empty, they are only logged.
	AlertBusName string
}

// Defaults of the usage batch's pool: test mode allows about 25 requests
// a second for the whole account, shared by every deployment on it.
const (
	DefaultUsageConcurrency = 8
	DefaultUsageRate        = 20
	// DefaultPastDueGrace covers Stripe's default Smart Retries of a
	// failed renewal's first week.
	DefaultPastDueGrace = 7 * 24 * time.Hour
)

var (
	namespacePattern = newPattern(`^[a-z0-9-]+$`, 3, 40)
	tableNamePattern = newPattern(`^[a-zA-Z0-9_.-]+$`, 3, 255)
)

// LoadConfig reads the configuration through getenv (os.Getenv in Lambda).
// When any value is missing or invalid it returns one error listing every
// problem; the error never contains a key's value.
func LoadConfig(getenv func(string) string) (Config, error) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	c := Config{
		Stage:          Stage(strings.TrimSpace(getenv("STAGE"))),
		Namespace:      strings.TrimSpace(getenv("BILLING_NAMESPACE")),
		TableName:      strings.TrimSpace(getenv("TABLE_NAME")),
		StripeSecretID: strings.TrimSpace(getenv("STRIPE_SECRET_ID")),
		StripeAPIBase:  strings.TrimSpace(getenv("STRIPE_API_BASE")),
		AlertBusName:   strings.TrimSpace(getenv("ALERT_BUS_NAME")),
		Overrides: Keys{
			APIKey:         strings.TrimSpace(getenv("STRIPE_API_KEY")),
			PublishableKey: strings.TrimSpace(getenv("STRIPE_PUBLISHABLE_KEY")),
			WebhookSecret:  strings.TrimSpace(getenv("STRIPE_ENDPOINT_SECRET")),
		},
		SecretTTL:         DefaultSecretTTL,
		UsageConcurrency:  DefaultUsageConcurrency,
		UsageRate:         DefaultUsageRate,
		PastDueGrace:      DefaultPastDueGrace,
		ReconcileRate:     DefaultReconcileRate,
		ReconcilePageSize: DefaultReconcilePageSize,
	}

	switch c.Stage {
	case StageDev, StageStaging, StageProd:
	case "":
		bad("STAGE is required (dev, staging or prod)")
	default:
		bad("STAGE %q is not one of dev, staging, prod", c.Stage)
	}
	if !namespacePattern.MatchString(c.Namespace) {
		bad("BILLING_NAMESPACE must be 3-40 characters of [a-z0-9-], got %q", c.Namespace)
	}
	if !tableNamePattern.MatchString(c.TableName) {
		bad("TABLE_NAME must be a DynamoDB table name (3-255 characters of [a-zA-Z0-9_.-]), got %q", c.TableName)
	}
	// Outside dev a missing secret would silently disable billing, so it is
	// an error there rather than a mode.
	if c.StripeSecretID == "" && c.Stage != StageDev && c.Stage != "" {
		bad("STRIPE_SECRET_ID is required on %s", c.Stage)
	}
	if c.StripeAPIBase != "" {
		u, err := url.Parse(c.StripeAPIBase)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("STRIPE_API_BASE must be an http(s) URL, got %q", c.StripeAPIBase)
		case c.Stage == StageProd:
			bad("STRIPE_API_BASE must not be set on prod")
		}
	}
	if v := strings.TrimSpace(getenv("SECRET_CACHE_TTL")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			bad("SECRET_CACHE_TTL must be a positive duration such as 10m, got %q", v)
		} else {
			c.SecretTTL = d
		}
	}
	if v := strings.TrimSpace(getenv("USAGE_CONCURRENCY")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			bad("USAGE_CONCURRENCY must be an integer from 1 to 64, got %q", v)
		} else {
			c.UsageConcurrency = n
		}
	}
	if v := strings.TrimSpace(getenv("USAGE_RATE")); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || !(r >= 1 && r <= 1000) {
			bad("USAGE_RATE must be a number of requests a second from 1 to 1000, got %q", v)
		} else {
			c.UsageRate = r
		}
	}
	if v := strings.TrimSpace(getenv("RECONCILE_RATE")); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || !(r >= 0.1 && r <= 100) {
			bad("RECONCILE_RATE must be a number of requests a second from 0.1 to 100, got %q", v)
		} else {
			c.ReconcileRate = r
		}
	}
	if v := strings.TrimSpace(getenv("RECONCILE_PAGE_SIZE")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			bad("RECONCILE_PAGE_SIZE must be an integer from 1 to 100 (Stripe's search limit), got %q", v)
		} else {
			c.ReconcilePageSize = n
		}
	}
	if v := strings.TrimSpace(getenv("RECONCILE_STEP_TIME")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			bad("RECONCILE_STEP_TIME must be a positive duration such as 20s, got %q", v)
		} else {
			c.ReconcileStepTime = d
		}
	}
	if v := strings.TrimSpace(getenv("PAST_DUE_GRACE_DAYS")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 60 {
			bad("PAST_DUE_GRACE_DAYS must be an integer from 0 to 60, got %q", v)
		} else {
			c.PastDueGrace = time.Duration(n) * 24 * time.Hour
		}
	}
	if c.Stage != "" {
		if err := c.Overrides.checkMode(c.Stage, "STRIPE_API_KEY", "STRIPE_PUBLISHABLE_KEY"); err != nil {
			problems = append(problems, err.Error())
		}
	}

	if len(problems) > 0 {
		return Config{}, errors.New("invalid configuration:\n  - " + strings.Join(problems, "\n  - "))
	}
	return c, nil
}
