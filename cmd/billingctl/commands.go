package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// command is a subscribe action for people: its flags and how to call it.
type command struct {
	action string
	usage  string
	flags  func(fs *flag.FlagSet) func() map[string]any
}

var commands = map[string]command{
	"status": {action: "get_status", usage: "status --org ORG", flags: func(fs *flag.FlagSet) func() map[string]any {
		return func() map[string]any { return map[string]any{} }
	}},
	"subscribe": {action: "subscribe", usage: "subscribe --org ORG --tier starter|business --email E [--name N] [--instance-types a,b] [--trial-days N]",
		flags: func(fs *flag.FlagSet) func() map[string]any {
			tier, email, name := fs.String("tier", "", "plan tier"), fs.String("email", "", "billing email"), fs.String("name", "", "billing name")
			types, trial := fs.String("instance-types", "", "comma-separated instance types"), fs.Int("trial-days", 0, "trial length")
			return func() map[string]any {
				m := map[string]any{"tier": *tier, "email": *email}
				if *name != "" {
					m["name"] = *name
				}
				if *types != "" {
					m["instance_types"] = splitList(*types)
				}
				if *trial > 0 {
					m["trial_days"] = *trial
				}
				return m
			}
		}},
	"change-tier": {action: "change_tier", usage: "change-tier --org ORG --tier T [--proration create_prorations|none|always_invoice]",
		flags: func(fs *flag.FlagSet) func() map[string]any {
			tier, proration := fs.String("tier", "", "plan tier"), fs.String("proration", "", "proration behavior")
			return func() map[string]any {
				m := map[string]any{"tier": *tier}
				if *proration != "" {
					m["proration"] = *proration
				}
				return m
			}
		}},
	"set-instance-types": {action: "set_instance_types", usage: "set-instance-types --org ORG --types a,b (the complete set; '' for none)",
		flags: func(fs *flag.FlagSet) func() map[string]any {
			types := fs.String("types", "", "comma-separated instance types")
			return func() map[string]any { return map[string]any{"instance_types": splitList(*types)} }
		}},
	"record-usage": {action: "record_usage", usage: "record-usage --org ORG --type T --minutes N [--timestamp UNIX]",
		flags: func(fs *flag.FlagSet) func() map[string]any {
			typ, minutes, ts := fs.String("type", "", "instance type"), fs.Int64("minutes", 0, "minutes used"), fs.Int64("timestamp", 0, "unix seconds")
			return func() map[string]any {
				m := map[string]any{"instance_type": *typ, "minutes": *minutes}
				if *ts > 0 {
					m["timestamp"] = *ts
				}
				return m
			}
		}},
	"cancel": {action: "cancel", usage: "cancel --org ORG [--now]", flags: func(fs *flag.FlagSet) func() map[string]any {
		now := fs.Bool("now", false, "cancel at once instead of at the period end")
		return func() map[string]any { return map[string]any{"at_period_end": !*now} }
	}},
	"portal": {action: "create_portal_session", usage: "portal --org ORG --return-url URL", flags: func(fs *flag.FlagSet) func() map[string]any {
		ret := fs.String("return-url", "http://localhost:8000/billing", "where the portal sends the customer back")
		return func() map[string]any { return map[string]any{"return_url": *ret} }
	}},
}

func splitList(s string) []string {
	out := []string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// runCommand calls the subscribe function with one action and prints its
// answer as a table, or as JSON.
func runCommand(ctx context.Context, t target, name string, args []string, asJSON bool, stdout, stderr io.Writer) error {
	c := commands[name]
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	org := fs.String("org", "", "the organization's ID")
	requestID := fs.String("request-id", "", "idempotency key (default: a new one)")
	fields := c.flags(fs)
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: billingctl "+c.usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *org == "" {
		fs.Usage()
		return fmt.Errorf("--org is required")
	}
	payload := fields()
	payload["action"], payload["org_id"] = c.action, *org
	if c.action != "get_status" && c.action != "create_portal_session" {
		if *requestID == "" {
			*requestID = newRequestID()
		}
		payload["request_id"] = *requestID
	}
	env, err := t.invoke(ctx, "SubscribeFunction", payload)
	if err != nil {
		return err
	}
	result, err := show(env, asJSON, stdout)
	if err == nil && !asJSON {
		printResult(stdout, result)
	}
	return err
}

// printResult prints a status object as a table, anything else as fields.
func printResult(w io.Writer, raw json.RawMessage) {
	var st struct {
		OrgID        string  `json:"org_id"`
		CustomerID   *string `json:"customer_id"`
		Delinquent   bool    `json:"delinquent"`
		UpdatedAt    *string `json:"updated_at"`
		Subscription *struct {
			ID, Status, Tier  string
			InstanceTypes     []string `json:"instance_types"`
			CurrentPeriodEnd  int64    `json:"current_period_end"`
			CancelAtPeriodEnd bool     `json:"cancel_at_period_end"`
		} `json:"subscription"`
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	if json.Unmarshal(raw, &st) == nil && st.OrgID != "" {
		fmt.Fprintf(tw, "org\t%s\n", st.OrgID)
		fmt.Fprintf(tw, "customer\t%s\n", orNone(st.CustomerID))
		if s := st.Subscription; s != nil {
			fmt.Fprintf(tw, "subscription\t%s\n", s.ID)
			fmt.Fprintf(tw, "status\t%s\n", s.Status)
			fmt.Fprintf(tw, "tier\t%s\n", s.Tier)
			fmt.Fprintf(tw, "instance types\t%s\n", strings.Join(s.InstanceTypes, ", "))
			fmt.Fprintf(tw, "period ends\t%s\n", time.Unix(s.CurrentPeriodEnd, 0).UTC().Format(time.RFC3339))
			fmt.Fprintf(tw, "cancel at period end\t%v\n", s.CancelAtPeriodEnd)
		} else {
			fmt.Fprintf(tw, "subscription\tnone\n")
		}
		fmt.Fprintf(tw, "delinquent\t%v\n", st.Delinquent)
		fmt.Fprintf(tw, "updated\t%s\n", orNone(st.UpdatedAt))
		return
	}
	var fields map[string]any
	_ = json.Unmarshal(raw, &fields)
	for k, v := range fields {
		fmt.Fprintf(tw, "%s\t%v\n", k, v)
	}
}

func orNone(s *string) string {
	if s == nil {
		return "none"
	}
	return *s
}

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "ctl-" + hex.EncodeToString(b)
}
