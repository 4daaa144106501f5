// Command billing-dev is `make dev`: the whole system on this machine with
// no AWS account, no Stripe account and no Docker. Ctrl-C stops it all.
//
// Ports come from DEV_GATEWAY_PORT (3000), DEV_INVOKE_PORT (3001),
// DEV_STRIPE_PORT (12111) and DEV_MOTO_PORT (5055); builds and logs go to
// DEV_STATE_DIR (.dev). STRIPE_API_KEY=sk_test_…
// uses Stripe test mode instead of the local Stripe (network needed); then
// STRIPE_ENDPOINT_SECRET is the secret `stripe listen` prints.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/baseten/billing-functions/internal/devstack"
	"github.com/baseten/billing-functions/internal/planprint"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "make dev:", err)
		os.Exit(1)
	}
}

func run() error {
	started := time.Now()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	opts := devstack.Options{
		Root:        root,
		StateDir:    os.Getenv("DEV_STATE_DIR"),
		GatewayPort: envPort("DEV_GATEWAY_PORT"), InvokePort: envPort("DEV_INVOKE_PORT"),
		StripePort: envPort("DEV_STRIPE_PORT"), MotoPort: envPort("DEV_MOTO_PORT"),
		Namespace:    os.Getenv("BILLING_NAMESPACE"),
		StripeAPIKey: os.Getenv("STRIPE_API_KEY"), PublishableKey: os.Getenv("STRIPE_PUBLISHABLE_KEY"),
		EndpointSecret: os.Getenv("STRIPE_ENDPOINT_SECRET"),
		MotoServer:     envOr("MOTO_SERVER", filepath.Join(root, "scripts", "moto-server")),
		RIE:            envOr("AWS_LAMBDA_RIE", filepath.Join(root, "bin", "aws-lambda-rie")),
		Out:            os.Stdout,
	}
	if v := os.Getenv("DEV_BUILD_FLAGS"); v != "" {
		// The tests build the bootstraps as they build everything else.
		opts.BuildFlags = strings.Fields(v)
	}
	if opts.Namespace == "" && opts.StripeAPIKey != "" {
		// A real test account is shared: never use the default namespace there.
		opts.Namespace = "local-" + sanitize(os.Getenv("USER"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stack, err := devstack.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer stack.Stop()

	fmt.Println("loading the catalog (upsert-products):")
	out, err := stack.Invoke(ctx, "UpsertProductsFunction", []byte(`{"dry_run": false, "catalog": null}`))
	if err != nil {
		return err
	}
	var env struct {
		OK     bool            `json:"ok"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(out, &env); err != nil || !env.OK {
		return fmt.Errorf("upsert-products failed: %s", out)
	}
	_ = planprint.Print(os.Stdout, env.Result)

	stripe := stack.StripeURL + " (local; any sk_test_ key; webhook secret " + devstack.LocalWhSecret + ")"
	if stack.RealStripe {
		stripe = "Stripe test mode (forward webhooks with: stripe listen --forward-to localhost:" + strconv.Itoa(port(opts.GatewayPort, 3000)) + devstack.WebhookPath + ")"
	}
	fmt.Printf(`
billing functions ready in %.1fs
  webhook gateway    %s%s
  Lambda Invoke API  %s   (SubscribeFunction, UpsertProductsFunction)
  Stripe             %s
  moto               %s   (DynamoDB table %s, secret %s)
  stage %s · namespace %s
  logs               %s/
try:
  go run ./cmd/billingctl status --org org_demo
  aws lambda invoke --endpoint-url %s --function-name SubscribeFunction --cli-binary-format raw-in-base64-out --payload '{"action":"get_config"}' /dev/stdout
Ctrl-C stops everything.
READY
`, time.Since(started).Seconds(), stack.GatewayURL, devstack.WebhookPath, stack.InvokeURL, stripe, stack.MotoURL,
		devstack.TableName, devstack.SecretID, devstack.Stage, namespaceOf(opts), stack.LogDir, stack.InvokeURL)
	<-ctx.Done()
	fmt.Println("\nstopping…")
	return nil
}

func envPort(k string) int {
	n, _ := strconv.Atoi(os.Getenv(k))
	return n
}

func port(p, def int) int {
	if p == 0 {
		return def
	}
	return p
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func namespaceOf(o devstack.Options) string {
	if o.Namespace == "" {
		return "local-dev"
	}
	return o.Namespace
}

func sanitize(s string) string {
	out := []rune{}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			out = append(out, r)
		case r >= 'A' && r <= 'Z':
			out = append(out, r+'a'-'A')
		}
	}
	if len(out) < 3 {
		return "dev"
	}
	if len(out) > 30 {
		out = out[:30]
	}
	return string(out)
}
