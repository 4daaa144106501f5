// Command billingctl is the operator CLI of the billing functions. It calls
// the deployed functions through the Lambda Invoke API: the local one that
// `make dev` serves by default, or a stage's (--stage dev), found through the
// stack's outputs.
//
//	billingctl [--stage dev | --endpoint URL] [--json] <command> [flags]
//
// Commands: status, subscribe, change-tier, set-instance-types,
// record-usage, cancel, portal, upsert-products, reconcile, migrate-prices.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

const usage = `usage: billingctl [flags] <command> [command flags]

commands:
  status --org ORG
  subscribe --org ORG --tier T --email E [--name N] [--instance-types a,b] [--trial-days N]
  change-tier --org ORG --tier T [--proration create_prorations|none|always_invoice]
  set-instance-types --org ORG --types a,b
  record-usage --org ORG --type T --minutes N [--timestamp UNIX]
  record-usage --file records.jsonl
      one record per line: {org_id, instance_type, minutes, request_id[, timestamp]},
      sent 500 at a time; prints each record not recorded
  cancel --org ORG [--now]
  portal --org ORG [--return-url URL]
  checkout --org ORG --tier T --email E [--instance-types a,b] [--trial-days N]
      prints the URL of a Checkout page; paying there makes the subscription
  invoices --org ORG [--limit N] [--starting-after ID]
  access --org ORG --type T
      may the organization run this instance type now (check_access)
  spend-cap --org ORG --amount CENTS|none [--currency usd]
      the organization's own monthly spend cap; none for the tier's default
  alerts --org ORG
      this period's spend and the cap's alerts (50%, 80%, 100%) sent to the alert bus
  preview --org ORG
      the upcoming invoice: minutes so far and the next period's tier
  upsert-products [--dry-run] [--catalog file.json]
      bring the Stripe catalog in line; prints the plan
      (+ create, ~ update, = unchanged, - archive)
  reconcile [--replay] [--repair]
      compare the mirror with Stripe for every organization; --replay first
      re-processes undelivered events, --repair writes Stripe's state
  migrate-prices [--dry-run] [--proration none|create_prorations|always_invoice]
      move every subscription item on a price upsert-products replaced to the
      current price (proration none by default); --dry-run lists the moves
  webhook-endpoint [--rotate]   (with --stage)
      make the stage's Stripe webhook endpoint exist as code: the stack's
      WebhookUrl, API version 2023-10-16 and the webhook's own event list; a
      new endpoint's signing secret goes into the stage's secret, unprinted
  (each command takes --request-id to retry a call idempotently)

flags:
`

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "billingctl:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	global := flag.NewFlagSet("billingctl", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.Usage = func() { fmt.Fprint(stderr, usage); global.PrintDefaults() }
	var t target
	global.StringVar(&t.endpoint, "endpoint", envOr("BILLINGCTL_ENDPOINT", "http://127.0.0.1:3001"), "Lambda Invoke API to call (make dev serves one here)")
	global.StringVar(&t.stage, "stage", "", "call a deployed stage (dev, staging or prod) instead of the local setup")
	global.StringVar(&t.stack, "stack", "", "the stage's stack name (default billing-functions-<stage>)")
	global.StringVar(&t.function, "function", "", "override the function name or ARN")
	asJSON := global.Bool("json", false, "print the function's JSON answer instead of a table")
	if err := global.Parse(args); err != nil {
		return err
	}
	if global.NArg() == 0 {
		global.Usage()
		return errors.New("no command")
	}
	cmd, rest := global.Arg(0), global.Args()[1:]
	switch cmd {
	case "upsert-products":
		return upsertProducts(ctx, t, rest, *asJSON, stdout, stderr)
	case "reconcile":
		return reconcile(ctx, t, rest, *asJSON, stdout, stderr)
	case "webhook-endpoint":
		return webhookEndpoint(ctx, t, rest, *asJSON, stdout, stderr)
	case "migrate-prices":
		return migratePrices(ctx, t, rest, *asJSON, stdout, stderr)
	case "record-usage":
		if slices.ContainsFunc(rest, func(a string) bool { return a == "--file" || strings.HasPrefix(a, "--file=") }) {
			return recordUsageFile(ctx, t, rest, *asJSON, stdout, stderr)
		}
	}
	if _, ok := commands[cmd]; ok {
		return runCommand(ctx, t, cmd, rest, *asJSON, stdout, stderr)
	}
	global.Usage()
	return fmt.Errorf("unknown command %q", cmd)
}

// envelope is the functions' answer.
type envelope struct {
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code            string `json:"code"`
		Message         string `json:"message"`
		Retryable       bool   `json:"retryable"`
		StripeRequestID string `json:"stripe_request_id"`
	} `json:"error"`
}

// failure turns an error envelope into an error that says what to do next.
func (e envelope) failure() error {
	hint := map[string]string{
		"billing_disabled": "set STRIPE_API_KEY locally, or the stage's secret (see the README)",
		"unavailable":      "Stripe or AWS failed transiently: run the command again",
		"invalid_request":  "fix the request as the message says",
		"not_found":        "check the organization: subscribe it first, or call set-instance-types before record-usage",
	}[e.Error.Code]
	if strings.Contains(e.Error.Message, "no product mapping") {
		hint = "no product mapping: run upsert-products (make upsert-products)"
	}
	msg := fmt.Sprintf("%s: %s", e.Error.Code, e.Error.Message)
	if e.Error.StripeRequestID != "" {
		msg += " (Stripe request " + e.Error.StripeRequestID + ")"
	}
	if hint != "" {
		msg += "\n  next: " + hint
	}
	return errors.New(msg)
}

// show prints env as JSON when asked, and returns its result, or an error
// that says what to do next.
func show(env envelope, asJSON bool, stdout io.Writer) (json.RawMessage, error) {
	if asJSON {
		out, _ := json.MarshalIndent(env, "", "  ")
		fmt.Fprintln(stdout, string(out))
	}
	if !env.OK {
		return nil, env.failure()
	}
	return env.Result, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
