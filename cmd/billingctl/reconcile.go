package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
)

// reconcile asks the subscribe function to compare the mirror with Stripe,
// prints each difference, and fails when any is left, so that a script
// notices drift.
func reconcile(ctx context.Context, t target, args []string, asJSON bool, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	repair := fs.Bool("repair", false, "write Stripe's state into the mirror where the two differ")
	replay := fs.Bool("replay", false, "first re-process the events whose deliveries failed (the last 30 days)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	env, err := t.invoke(ctx, "SubscribeFunction", map[string]any{"action": "reconcile", "repair": *repair, "replay": *replay})
	if err != nil {
		return err
	}
	raw, err := show(env, asJSON, stdout)
	if err != nil {
		return err
	}
	type difference struct {
		OrgID  string `json:"org_id"`
		Field  string `json:"field"`
		Mirror string `json:"mirror"`
		Stripe string `json:"stripe"`
	}
	var rep struct {
		Organizations int          `json:"organizations"`
		Differences   []difference `json:"differences"`
		Repaired      int          `json:"repaired"`
		Remaining     []difference `json:"remaining"`
		Replay        *struct{ Events, Processed, Duplicate, Ignored, Failed int }
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		return fmt.Errorf("unexpected answer: %w", err)
	}
	if !asJSON {
		if r := rep.Replay; r != nil {
			fmt.Fprintf(stdout, "replayed %d undelivered events: %d processed, %d already mirrored, %d ignored, %d failed\n",
				r.Events, r.Processed, r.Duplicate, r.Ignored, r.Failed)
		}
		fmt.Fprintf(stdout, "%d organizations, %d differences\n", rep.Organizations, len(rep.Differences))
		if len(rep.Differences) > 0 {
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ORG\tFIELD\tMIRROR\tSTRIPE")
			for _, d := range rep.Differences {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.OrgID, d.Field, orDash(d.Mirror), orDash(d.Stripe))
			}
			tw.Flush()
		}
		if *repair {
			fmt.Fprintf(stdout, "repaired %d organizations; %d differences remain\n", rep.Repaired, len(rep.Remaining))
		}
	}
	left := len(rep.Differences)
	if *repair {
		left = len(rep.Remaining)
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
