// Package billing is the core of the billing functions: configuration and
// Stripe keys, the catalog, webhook processing, subscription commands and
// product upserts. It speaks in organizations, tiers and instance types;
// Stripe's and AWS's types are translated at one boundary each.
package billing

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/baseten/billing-functions/pkg/table"
)

// Service holds what every function needs: the config, the keys and the
// mappings store. Build it once per cold start.
type Service struct {
	cfg    Config
	keys   *KeySource
	store  *table.Store
	stripe *stripeClients
	log    *slog.Logger
	hooks  webhookState
	emf    io.Writer // CloudWatch Embedded Metric Format lines
	emfMu  sync.Mutex
	// alerts sends spend alerts (SetAlertBus); nil: logged only.
	alerts AlertBus
	// pace spaces reconcile's Stripe requests (reconcilePacer).
	pace     *pacer
	paceOnce sync.Once
}

// NewService wires a Service from ready parts. It makes no request.
func NewService(cfg Config, keys *KeySource, store *table.Store, logger *slog.Logger) *Service {
	return &Service{cfg: cfg, keys: keys, store: store, stripe: newStripeClients(cfg.StripeAPIBase), log: logger, emf: os.Stdout}
}

// SetMetricsOutput sends the metric lines (CloudWatch Embedded Metric
// Format, one JSON line per delivery) to w instead of standard output.
func (s *Service) SetMetricsOutput(w io.Writer) { s.emf = w }

// NewServiceFromAWS builds the AWS clients from awsCfg (which honours
// AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE>) and wires a Service. It
// makes no request.
func NewServiceFromAWS(cfg Config, awsCfg aws.Config, logger *slog.Logger) *Service {
	var secrets SecretsClient
	if cfg.StripeSecretID != "" {
		secrets = secretsmanager.NewFromConfig(awsCfg)
	}
	store := table.New(dynamodb.NewFromConfig(awsCfg), cfg.TableName)
	return NewService(cfg, NewKeySource(cfg, secrets), store, logger)
}

// Config returns the service's configuration.
func (s *Service) Config() Config { return s.cfg }

// enabledKeys returns the keys, or ErrBillingDisabled when there is no API
// key, or the KeySource's error.
func (s *Service) enabledKeys(ctx context.Context) (Keys, error) {
	k, err := s.keys.Keys(ctx)
	if err != nil {
		return Keys{}, err
	}
	if !k.Enabled() {
		return Keys{}, ErrBillingDisabled
	}
	return k, nil
}
