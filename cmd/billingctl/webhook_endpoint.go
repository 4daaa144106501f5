package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/baseten/billing-functions/pkg/billing"
)

// webhookEndpoint makes the stage's Stripe webhook endpoint exist as code
// (billing.EnsureWebhookEndpoint): the stack's WebhookUrl, stripe-go's API
// version and the webhook's own event list, found by the stage's
// namespace. A new endpoint's signing secret goes straight into the
// stage's secret; it is never printed.
func webhookEndpoint(ctx context.Context, t target, args []string, asJSON bool, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("webhook-endpoint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rotate := fs.Bool("rotate", false, "replace the endpoint to change its signing secret (the old one stays valid as webhook_secret_previous)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if t.stage == "" {
		return errors.New("webhook-endpoint needs --stage: make dev registers the local Stripe's endpoint itself, with the same event list and API version")
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return err
	}
	stack := t.stack
	if stack == "" {
		stack = "billing-functions-" + t.stage
	}
	out, err := cloudformation.NewFromConfig(awsCfg).DescribeStacks(ctx, &cloudformation.DescribeStacksInput{StackName: &stack})
	if err != nil || len(out.Stacks) == 0 {
		return fmt.Errorf("read stack %s: %w", stack, err)
	}
	values := map[string]string{}
	for _, p := range out.Stacks[0].Parameters {
		values[deref(p.ParameterKey)] = deref(p.ParameterValue)
	}
	for _, o := range out.Stacks[0].Outputs {
		values[deref(o.OutputKey)] = deref(o.OutputValue)
	}
	env := map[string]string{"STAGE": t.stage, "BILLING_NAMESPACE": values["Namespace"], "TABLE_NAME": values["TableName"],
		"STRIPE_SECRET_ID": values["StripeSecretArn"]}
	cfg, err := billing.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		return fmt.Errorf("stack %s: %w", stack, err)
	}
	if values["WebhookUrl"] == "" {
		return fmt.Errorf("stack %s has no WebhookUrl output", stack)
	}
	sm := secretsmanager.NewFromConfig(awsCfg)
	svc := billing.NewService(cfg, billing.NewKeySource(cfg, sm), nil, slog.New(slog.NewTextHandler(stderr, nil)))
	res, err := svc.EnsureWebhookEndpoint(ctx, billing.StageSecret{Client: sm, ID: cfg.StripeSecretID}, values["WebhookUrl"], *rotate)
	if err != nil {
		return err
	}
	if asJSON {
		raw, _ := json.MarshalIndent(res, "", "  ")
		fmt.Fprintln(stdout, string(raw))
		return nil
	}
	fmt.Fprintf(stdout, "%s %s\n  url          %s\n  api_version  %s\n  events       %s\n", res.Action, res.EndpointID, res.URL, res.APIVersion, strings.Join(res.EnabledEvents, ", "))
	if res.SecretStored {
		fmt.Fprintf(stdout, "  signing secret stored in %s (webhook_secret; the one before kept as webhook_secret_previous)\n", cfg.StripeSecretID)
	}
	for _, id := range res.Deleted {
		fmt.Fprintf(stdout, "  deleted %s\n", id)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
