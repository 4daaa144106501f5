package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/baseten/billing-functions/pkg/billing"
)

// runSteps calls the subscribe function with request() until an answer,
// decoded into a fresh R and handed to each, says it is done. A step that
// meets another step's lease (a retryable conflict) waits and tries again,
// as the stage's state machine does.
func runSteps[R any](ctx context.Context, t target, asJSON bool, stdout io.Writer, request func() map[string]any, each func(R) (done bool)) error {
	for busy := 0; ; {
		env, err := t.invoke(ctx, "SubscribeFunction", request())
		if err != nil {
			return err
		}
		if !env.OK && env.Error.Code == string(billing.CodeConflict) && env.Error.Retryable && busy < 30 {
			busy++ // another step holds the pass: wait for it
			time.Sleep(2 * time.Second)
			continue
		}
		raw, err := show(env, asJSON, stdout)
		if err != nil {
			return err
		}
		var rep R
		if err := json.Unmarshal(raw, &rep); err != nil {
			return fmt.Errorf("unexpected answer: %w", err)
		}
		if each(rep) {
			return nil
		}
	}
}

// reconcile runs one reconcile pass through the subscribe function, step
// after step, prints each difference, and fails when any is left, so that
// a script notices drift.
func reconcile(ctx context.Context, t target, args []string, asJSON bool, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	repair := fs.Bool("repair", false, "write Stripe's state into the mirror where the two differ")
	replay := fs.Bool("replay", false, "first re-process the events whose deliveries failed (the last 30 days)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var all billing.ReconcileReport
	request := func() map[string]any {
		return map[string]any{"action": "reconcile", "repair": *repair, "replay": *replay}
	}
	err := runSteps(ctx, t, asJSON, stdout, request, func(rep billing.ReconcileReport) bool {
		if r := rep.Replay; r != nil && !asJSON {
			fmt.Fprintf(stdout, "replayed %d undelivered events: %d processed, %d already mirrored, %d ignored, %d failed\n",
				r.Events, r.Processed, r.Duplicate, r.Ignored, r.Failed)
		}
		all.PassID, all.Pass = rep.PassID, rep.Pass
		all.Differences = append(all.Differences, rep.Differences...)
		all.Remaining = append(all.Remaining, rep.Remaining...)
		all.Repaired += rep.Repaired
		return rep.Done
	})
	if err != nil {
		return err
	}
	if !asJSON {
		p := all.Pass
		fmt.Fprintf(stdout, "pass %s: %d organizations, %d subscriptions, %d differences (%d steps, %d Stripe and %d DynamoDB requests)\n",
			all.PassID, p.Customers, p.Subscriptions, len(all.Differences), p.Steps, p.StripeRequests, p.DynamoDBRequests)
		if len(all.Differences) > 0 {
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ORG\tFIELD\tMIRROR\tSTRIPE")
			for _, d := range all.Differences {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.OrgID, d.Field, orDash(d.Mirror), orDash(d.Stripe))
			}
			tw.Flush()
		}
		if *repair {
			fmt.Fprintf(stdout, "repaired %d organizations; %d differences remain\n", all.Repaired, len(all.Remaining))
		}
	}
	left := len(all.Differences)
	if *repair {
		left = len(all.Remaining)
	}
	if left > 0 {
		next := "run again with --repair to write Stripe's state into the mirror"
		if *repair {
			next = "these need a person (see the README's reconcile section)"
		}
		return fmt.Errorf("%d differences between the mirror and Stripe\n  next: %s", left, next)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
