// Package devstack runs the whole system locally for `make dev`, with no
// AWS, no Stripe account and no Docker: moto's server for DynamoDB and
// Secrets Manager, the local Stripe (or Stripe test mode with a real
// sk_test_ key), the three real bootstrap binaries under aws-lambda-rie, an
// API Gateway emulation in front of the webhook and a Lambda Invoke API for
// the other two.
package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/baseten/billing-functions/internal/dynamoproxy"
	"github.com/baseten/billing-functions/internal/gateway"
	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

// Options configure the stack. Zero ports take the defaults.
type Options struct {
	Root                                          string // the repository
	StateDir                                      string // builds and logs; default <Root>/.dev
	GatewayPort, InvokePort, StripePort, MotoPort int
	Namespace                                     string
	// StripeAPIKey, when a real sk_test_ key, selects Stripe test mode
	// instead of the local Stripe; EndpointSecret is then the signing
	// secret `stripe listen` prints.
	StripeAPIKey, PublishableKey, EndpointSecret string
	MotoServer, RIE                              string // binaries
	// BuildFlags, when set, are the go build flags of the bootstraps
	// instead of the Makefile's.
	BuildFlags []string
	Out        io.Writer
}

// The local stage's fixed values.
const (
	Stage        = "dev"
	TableName    = "billing-local"
	SecretID     = "billing/dev/stripe"
	AlertBusName = "billing-alerts-local"
	// AlertQueueName receives every alert put on the bus (make dev's
	// stand-in for the core app).
	AlertQueueName = "billing-alerts-local"
	LocalAPIKey    = "sk_test_local"
	LocalPubKey    = "pk_test_local"
	LocalWhSecret  = "whsec_local_dev"
	WebhookPath    = "/integrations/stripe/webhooks"
	// DynamoDBActionsFile, in the state directory, lists when the stack
	// stops the IAM actions each function's DynamoDB requests needed and
	// the partition key prefixes they touched, by logical ID (a test
	// compares them with the template's policies).
	DynamoDBActionsFile = "dynamodb-actions.json"
)

// Stack is the running system.
type Stack struct {
	opts                             Options
	GatewayURL, InvokeURL, StripeURL string
	MotoURL, LogDir                  string
	awsURL                           string // moto behind dynamoproxy
	proxy                            *dynamoproxy.Proxy
	RealStripe                       bool
	procs                            []*process
	servers                          []*http.Server
	stripe                           *stripelocal.Server
	functions                        map[string]*function
}

func (o *Options) defaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&o.GatewayPort, 3000)
	def(&o.InvokePort, 3001)
	def(&o.StripePort, 12111)
	def(&o.MotoPort, 5055)
	if o.Namespace == "" {
		o.Namespace = "local-dev"
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
}

// Start brings the stack up. On failure everything started is stopped.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	opts.defaults()
	if opts.StateDir == "" {
		opts.StateDir = filepath.Join(opts.Root, ".dev")
	}
	s := &Stack{opts: opts, functions: map[string]*function{}, LogDir: filepath.Join(opts.StateDir, "logs"),
		RealStripe: strings.HasPrefix(opts.StripeAPIKey, "sk_test_")}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if strings.HasPrefix(opts.StripeAPIKey, "sk_live_") || strings.HasPrefix(opts.StripeAPIKey, "rk_live_") {
		return nil, errors.New("STRIPE_API_KEY is a live key: make dev only runs in test mode")
	}
	if err := s.checkPorts(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.LogDir, 0o755); err != nil {
		return nil, err
	}
	if err := s.startMoto(); err != nil {
		return nil, err
	}
	if !s.RealStripe {
		if err := s.startLocalStripe(); err != nil {
			return nil, err
		}
	}
	if err := s.setUpStage(ctx); err != nil {
		return nil, err
	}
	if err := s.startFunctions(ctx); err != nil {
		return nil, err
	}
	if err := s.serve(); err != nil {
		return nil, err
	}
	if s.stripe != nil {
		// The same event list and API version as billingctl webhook-endpoint
		// gives a stage's endpoint.
		s.stripe.AddWebhookEndpoint(s.GatewayURL+WebhookPath, []string{LocalWhSecret}, billing.HandledEventTypes(), stripe.APIVersion)
		// The local account's portal settings are saved, as someone does
		// once in a test account's Dashboard.
		s.stripe.SetPortalDefault(true)
	}
	return s, nil
}

func (s *Stack) checkPorts() error {
	for _, p := range []struct {
		name, env string
		port      int
		needed    bool
	}{
		{"the webhook gateway", "DEV_GATEWAY_PORT", s.opts.GatewayPort, true},
		{"the Lambda Invoke API", "DEV_INVOKE_PORT", s.opts.InvokePort, true},
		{"the local Stripe", "DEV_STRIPE_PORT", s.opts.StripePort, !s.RealStripe},
		{"moto", "DEV_MOTO_PORT", s.opts.MotoPort, true},
	} {
		if p.needed && !portFree(fmt.Sprintf("127.0.0.1:%d", p.port)) {
			return fmt.Errorf("port %d (%s) is taken, perhaps by another make dev; choose another with %s=<port>", p.port, p.name, p.env)
		}
	}
	return nil
}

func (s *Stack) logWriter(name string) (io.Writer, error) {
	f, err := os.Create(filepath.Join(s.LogDir, name+".log"))
	if err != nil {
		return nil, err
	}
	return &prefixWriter{prefix: fmt.Sprintf("[%-15s]", name), out: s.opts.Out, file: f}, nil
}

func (s *Stack) startMoto() error {
	f, err := os.Create(filepath.Join(s.LogDir, "moto.log"))
	if err != nil {
		return err
	}
	p, err := start("moto", f, os.Environ(), s.opts.MotoServer, "-H", "127.0.0.1", "-p", fmt.Sprint(s.opts.MotoPort))
	if err != nil {
		return fmt.Errorf("%w (install moto with `make dev`, which puts it in .venv)", err)
	}
	s.procs = append(s.procs, p)
	s.MotoURL = fmt.Sprintf("http://127.0.0.1:%d", s.opts.MotoPort)
	if err := waitPort(fmt.Sprintf("127.0.0.1:%d", s.opts.MotoPort), p, 30*time.Second); err != nil {
		return err
	}
	// The functions reach moto through a proxy that isolates transactions,
	// which moto does not (see dynamoproxy).
	proxyPort, err := freePort()
	if err != nil {
		return err
	}
	target, _ := url.Parse(s.MotoURL)
	s.awsURL = fmt.Sprintf("http://127.0.0.1:%d", proxyPort)
	s.proxy = dynamoproxy.New(target)
	return s.listen(fmt.Sprintf("127.0.0.1:%d", proxyPort), s.proxy)
}

func (s *Stack) startLocalStripe() error {
	w, err := s.logWriter("stripe")
	if err != nil {
		return err
	}
	s.stripe = stripelocal.New(stripelocal.Options{RetryBase: 2 * time.Second, Logf: func(format string, args ...any) {
		fmt.Fprintf(w, format+"\n", args...)
	}})
	addr := fmt.Sprintf("127.0.0.1:%d", s.opts.StripePort)
	s.StripeURL = "http://" + addr
	return s.listen(addr, s.stripe)
}

func (s *Stack) listen(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.servers = append(s.servers, srv)
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// setUpStage creates the table and the stage's secret, as a deployment
// would.
func (s *Stack) setUpStage(ctx context.Context) error {
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"), config.WithBaseEndpoint(s.MotoURL),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")))
	if err != nil {
		return err
	}
	if err := table.CreateTable(ctx, dynamodb.NewFromConfig(cfg), TableName); err != nil {
		return fmt.Errorf("create the table: %w", err)
	}
	secret := fmt.Sprintf(`{"api_key":%q,"publishable_key":%q,"webhook_secret":%q}`, LocalAPIKey, LocalPubKey, LocalWhSecret)
	if s.RealStripe {
		secret = fmt.Sprintf(`{"api_key":%q,"publishable_key":%q,"webhook_secret":%q}`, s.opts.StripeAPIKey, s.opts.PublishableKey, s.opts.EndpointSecret)
	}
	_, err = secretsmanager.NewFromConfig(cfg).CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(SecretID), SecretString: &secret})
	if err != nil {
		return fmt.Errorf("create the secret: %w", err)
	}
	return createAlertBus(ctx, cfg)
}

// createAlertBus makes the spend alerts' bus, as the template's AlertBus,
// and, standing in for the core app's rule, a rule that delivers every
// alert to the queue AlertQueueName, where a developer (and the end-to-end
// test) reads what was sent.
func createAlertBus(ctx context.Context, cfg aws.Config) error {
	eb, q := eventbridge.NewFromConfig(cfg), sqs.NewFromConfig(cfg)
	if _, err := eb.CreateEventBus(ctx, &eventbridge.CreateEventBusInput{Name: aws.String(AlertBusName)}); err != nil {
		return fmt.Errorf("create the alert bus: %w", err)
	}
	queue, err := q.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(AlertQueueName)})
	if err != nil {
		return fmt.Errorf("create the alert queue: %w", err)
	}
	attrs, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: queue.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		return fmt.Errorf("the alert queue's ARN: %w", err)
	}
	pattern := `{"source":["` + billing.AlertSource + `"]}`
	if _, err := eb.PutRule(ctx, &eventbridge.PutRuleInput{Name: aws.String(AlertQueueName), EventBusName: aws.String(AlertBusName), EventPattern: &pattern}); err != nil {
		return fmt.Errorf("the alert rule: %w", err)
	}
	_, err = eb.PutTargets(ctx, &eventbridge.PutTargetsInput{Rule: aws.String(AlertQueueName), EventBusName: aws.String(AlertBusName),
		Targets: []ebtypes.Target{{Id: aws.String("queue"), Arn: aws.String(attrs.Attributes["QueueArn"])}}})
	if err != nil {
		return fmt.Errorf("the alert rule's target: %w", err)
	}
	return nil
}

var functionDirs = []struct{ name, logicalID string }{
	{"webhook", "WebhookFunction"}, {"subscribe", "SubscribeFunction"}, {"upsert-products", "UpsertProductsFunction"},
}

// startFunctions builds the three bootstraps as the Makefile's build-*
// targets do, but for this machine, and runs each under aws-lambda-rie.
// Options.BuildFlags replace the Makefile's flags (the tests add -race).
func (s *Stack) startFunctions(ctx context.Context) error {
	env := []string{
		"PATH=" + os.Getenv("PATH"), "STAGE=" + Stage, "BILLING_NAMESPACE=" + s.opts.Namespace, "TABLE_NAME=" + TableName,
		"STRIPE_SECRET_ID=" + SecretID, "AWS_ENDPOINT_URL=" + s.awsURL, "AWS_REGION=us-east-1", "ALERT_BUS_NAME=" + AlertBusName,
		"AWS_SECRET_ACCESS_KEY=local",
	}
	if !s.RealStripe {
		env = append(env, "STRIPE_API_BASE="+s.StripeURL)
	}
	// The usage pool's settings pass through, as the template's
	// parameters set them on a stage, and the secret's cache time (tests
	// change the secret).
	for _, k := range []string{"USAGE_RATE", "USAGE_CONCURRENCY", "SECRET_CACHE_TTL"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	for _, fd := range functionDirs {
		bin := filepath.Join(s.opts.StateDir, "build", fd.name, "bootstrap")
		flags, buildEnv := s.opts.BuildFlags, os.Environ()
		if flags == nil {
			flags, buildEnv = []string{"-tags", "lambda.norpc", "-trimpath", "-ldflags=-s"}, append(buildEnv, "CGO_ENABLED=0")
		}
		build := exec.CommandContext(ctx, "go", append(append([]string{"build"}, flags...), "-o", bin, "./functions/"+fd.name)...)
		build.Dir = s.opts.Root
		build.Env = buildEnv
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", fd.name, err, out)
		}
		apiPort, err := freePort()
		if err != nil {
			return err
		}
		runtimePort, err := freePort()
		if err != nil {
			return err
		}
		w, err := s.logWriter(fd.name)
		if err != nil {
			return err
		}
		timeout := "30"
		if fd.name == "upsert-products" {
			timeout = "300"
		}
		// Each function signs with its own access key ID, so the proxy can
		// tell which DynamoDB actions each one needs (DynamoDBActionsFile).
		fnEnv := append(env, "AWS_ACCESS_KEY_ID="+fd.logicalID, "AWS_LAMBDA_FUNCTION_NAME="+fd.logicalID, "AWS_LAMBDA_FUNCTION_TIMEOUT="+timeout)
		p, err := start(fd.name, w, fnEnv, s.opts.RIE,
			"--runtime-api-address", fmt.Sprintf("127.0.0.1:%d", runtimePort),
			"--runtime-interface-emulator-address", fmt.Sprintf("127.0.0.1:%d", apiPort), bin)
		if err != nil {
			return fmt.Errorf("%w (make dev installs aws-lambda-rie into ./bin)", err)
		}
		s.procs = append(s.procs, p)
		if err := waitPort(fmt.Sprintf("127.0.0.1:%d", apiPort), p, 10*time.Second); err != nil {
			return err
		}
		s.functions[fd.logicalID] = &function{name: fd.name, logicalID: fd.logicalID,
			invokeURL: fmt.Sprintf("http://127.0.0.1:%d/2015-03-31/functions/function/invocations", apiPort)}
	}
	return nil
}

func (s *Stack) serve() error {
	webhook := s.functions["WebhookFunction"]
	gw := gateway.New(gateway.Route{Method: http.MethodPost, Path: WebhookPath, Invoke: func(ctx context.Context, event []byte) ([]byte, error) {
		body, fnErr, err := webhook.invoke(ctx, event)
		if err == nil && fnErr != "" {
			err = fmt.Errorf("the webhook function failed: %s", body)
		}
		return body, err
	}})
	s.GatewayURL = fmt.Sprintf("http://127.0.0.1:%d", s.opts.GatewayPort)
	if err := s.listen(fmt.Sprintf("127.0.0.1:%d", s.opts.GatewayPort), gw); err != nil {
		return err
	}
	invokable := map[string]*function{"SubscribeFunction": s.functions["SubscribeFunction"], "UpsertProductsFunction": s.functions["UpsertProductsFunction"]}
	s.InvokeURL = fmt.Sprintf("http://127.0.0.1:%d", s.opts.InvokePort)
	return s.listen(fmt.Sprintf("127.0.0.1:%d", s.opts.InvokePort), invokeAPI(invokable))
}

// Invoke calls a function by logical ID, as the Invoke API does.
func (s *Stack) Invoke(ctx context.Context, logicalID string, payload []byte) ([]byte, error) {
	fn, ok := s.functions[logicalID]
	if !ok {
		return nil, fmt.Errorf("no function %s", logicalID)
	}
	body, _, err := fn.invoke(ctx, payload)
	return body, err
}

// Stop stops everything the stack started: no process and no port is left.
func (s *Stack) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.proxy != nil {
		record := map[string]map[string][]string{"actions": s.proxy.Actions(), "partitions": s.proxy.Partitions()}
		if raw, err := json.MarshalIndent(record, "", "  "); err == nil {
			_ = os.WriteFile(filepath.Join(s.opts.StateDir, DynamoDBActionsFile), raw, 0o644)
		}
	}
	for _, srv := range s.servers {
		_ = srv.Shutdown(ctx)
	}
	if s.stripe != nil {
		s.stripe.Close()
	}
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop()
	}
}
