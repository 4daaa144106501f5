package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/baseten/billing-functions/pkg/billing"
)

// migratePrices runs a price migration through the subscribe function,
// step after step (a dry run page after page), and prints each move.
func migratePrices(ctx context.Context, t target, args []string, asJSON bool, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate-prices", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dryRun := fs.Bool("dry-run", false, "list the moves; change nothing")
	proration := fs.String("proration", "none", "the moves' proration: none, create_prorations or always_invoice")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var moves []billing.PriceMove
	unchanged, page := 0, ""
	request := func() map[string]any {
		req := map[string]any{"action": "migrate_prices", "dry_run": *dryRun, "proration": *proration}
		if page != "" {
			req["page"] = page
		}
		return req
	}
	err := runSteps(ctx, t, asJSON, stdout, request, func(rep billing.MigrateReport) bool {
		moves = append(moves, rep.Moves...)
		unchanged += rep.Unchanged
		page = rep.NextPage
		return rep.Done
	})
	if err != nil {
		return err
	}
	failed, scheduled := 0, 0
	for _, m := range moves {
		switch {
		case m.Outcome == "scheduled", *dryRun && m.When == "period_end":
			scheduled++
		case m.Outcome != "moved" && m.Outcome != "planned":
			failed++
		}
	}
	if !asJSON {
		verb, later := "moved", "scheduled"
		if *dryRun {
			verb, later = "to move now", "to move when their period renews"
		}
		fmt.Fprintf(stdout, "%d items %s, %d metered items %s", len(moves)-failed-scheduled, verb, scheduled, later)
		if !*dryRun {
			fmt.Fprintf(stdout, ", %d failed, %d subscriptions changed by someone else first or already scheduled", failed, unchanged)
		}
		fmt.Fprintln(stdout)
		if len(moves) > 0 {
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ORG\tSUBSCRIPTION\tITEM\tKEY\tOLD PRICE\tNEW PRICE\tWHEN\tOUTCOME")
			for _, m := range moves {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.OrgID, m.SubscriptionID, m.ItemID, m.Key, m.OldPrice, m.NewPrice, m.When, m.Outcome)
			}
			tw.Flush()
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d moves failed\n  next: read each reason above; fix the subscription, then run migrate-prices again", failed)
	}
	return nil
}
