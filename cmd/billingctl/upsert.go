package main

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"

	"github.com/baseten/billing-functions/internal/planprint"
)

func upsertProducts(ctx context.Context, t target, args []string, asJSON bool, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("upsert-products", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dryRun := fs.Bool("dry-run", false, "show the plan without applying it")
	catalogFile := fs.String("catalog", "", "a catalog JSON file to use instead of the embedded default")
	if err := fs.Parse(args); err != nil {
		return err
	}
	req := map[string]any{"dry_run": *dryRun, "catalog": nil}
	if *catalogFile != "" {
		raw, err := os.ReadFile(*catalogFile)
		if err != nil {
			return err
		}
		req["catalog"] = json.RawMessage(raw)
	}
	env, err := t.invoke(ctx, "UpsertProductsFunction", req)
	if err != nil {
		return err
	}
	result, err := show(env, asJSON, stdout)
	if err != nil || asJSON {
		return err
	}
	return planprint.Print(stdout, result)
}
