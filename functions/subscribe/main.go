// Command subscribe runs the core app's billing commands (Lambda Invoke) and
// answers each with a JSON envelope.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"

	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/billing/alertbus"
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	cfg, err := billing.LoadConfig(os.Getenv)
	if err != nil {
		logger.Error("cold start failed", "error", err.Error())
		os.Exit(1)
	}
	awsCfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		logger.Error("cold start failed: AWS config", "error", err.Error())
		os.Exit(1)
	}
	svc := billing.NewServiceFromAWS(cfg, awsCfg, logger.With("function", "subscribe"))
	if cfg.AlertBusName != "" {
		svc.SetAlertBus(alertbus.New(eventbridge.NewFromConfig(awsCfg), cfg.AlertBusName))
	}
	lambda.Start(svc.HandleSubscribe)
}
