package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// reconcile runs one reconcile pass through the subscribe function, step
// after step as the stage's state machine does (a step that meets another
// step's lease waits and tries again), prints each difference, and fails
// when any is left, so that a script notices drift.
func reconcile(ctx context.Context, t target, args []string, asJSON bool, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	repair := fs.Bool("repair", false, "write Stripe's state into the mirror where the two differ")
	replay := fs.Bool("replay", false, "first re-process the events whose deliveries failed (the last 30 days)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	type difference struct {
		OrgID  string `json:"org_id"`
		Field  string `json:"field"`
		Mirror string `json:"mirror"`
		Stripe string `json:"stripe"`
	}
	type step struct {
		PassID        string       `json:"pass_id"`
		Done          bool         `json:"done"`
		Organizations int          `json:"organizations"`
		Differences   []difference `json:"differences"`
		Repaired      int          `json:"repaired"`
		Remaining     []difference `json:"remaining"`
		Replay        *struct{ Events, Processed, Duplicate, Ignored, Failed int }
		Pass          struct {
			Customers, Subscriptions, Differences, StripeRequests, DynamoDBRequests, Steps int64
		} `json:"pass"`
	}
	var all step
	for busy := 0; !all.Done; {
		env, err := t.invoke(ctx, "SubscribeFunction", map[string]any{"action": "reconcile", "repair": *repair, "replay": *replay})
		if err != nil {
			return err
		}
		if !env.OK && env.Error.Code == "conflict" && env.Error.Retryable && busy < 30 {
			busy++ // another step holds the pass: wait for it
			time.Sleep(2 * time.Second)
			continue
		}
		raw, err := show(env, asJSON, stdout)
		if err != nil {
			return err
		}
		var rep step
		if err := json.Unmarshal(raw, &rep); err != nil {
			return fmt.Errorf("unexpected answer: %w", err)
		}
		if r := rep.Replay; r != nil && !asJSON {
			fmt.Fprintf(stdout, "replayed %d undelivered events: %d processed, %d already mirrored, %d ignored, %d failed\n",
				r.Events, r.Processed, r.Duplicate, r.Ignored, r.Failed)
		}
		all.PassID, all.Done, all.Pass = rep.PassID, rep.Done, rep.Pass
		all.Organizations += rep.Organizations
		all.Differences = append(all.Differences, rep.Differences...)
		all.Remaining = append(all.Remaining, rep.Remaining...)
		all.Repaired += rep.Repaired
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
