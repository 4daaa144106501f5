package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
)

type upsertResult struct {
	Created, Updated, Archived, Unchanged int
	DryRun                                bool `json:"dry_run"`
	Plan                                  []struct {
		Key     string   `json:"key"`
		Action  string   `json:"action"`
		Changes []string `json:"changes"`
	} `json:"plan"`
}

var actionMark = map[string]string{"create": "+", "update": "~", "replace_price": "~", "unchanged": "=", "archive": "-"}

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
	if asJSON {
		out, _ := json.MarshalIndent(env, "", "  ")
		fmt.Fprintln(stdout, string(out))
	}
	if !env.OK {
		return env.failure()
	}
	if asJSON {
		return nil
	}
	var res upsertResult
	if err := json.Unmarshal(env.Result, &res); err != nil {
		return fmt.Errorf("unexpected result: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tKEY\tACTION\tCHANGES")
	for _, p := range res.Plan {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", actionMark[p.Action], p.Key, p.Action, strings.Join(p.Changes, "; "))
	}
	tw.Flush()
	fmt.Fprintf(stdout, "created %d · updated %d · archived %d · unchanged %d", res.Created, res.Updated, res.Archived, res.Unchanged)
	if res.DryRun {
		fmt.Fprint(stdout, " (dry run: nothing was written)")
	}
	fmt.Fprintln(stdout)
	return nil
}
