package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// command is a subscribe action for people: its flags and how to call it.
type command struct {
	action   string
	readOnly bool // changes nothing, so takes no request_id
	usage    string
	flags    func(fs *flag.FlagSet) func() map[string]any
	// print shows the answer instead of printResult.
	print func(w io.Writer, raw json.RawMessage)
}

var commands = map[string]command{
	"status": {action: "get_status", readOnly: true, usage: "status --org ORG", flags: func(fs *flag.FlagSet) func() map[string]any {
		return func() map[string]any { return map[string]any{} }
	}},
	"subscribe": {action: "subscribe", usage: "subscribe --org ORG --tier starter|business --email E [--name N] [--instance-types a,b] [--trial-days N]",
		flags: subscriptionFlags},
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
	"checkout": {action: "create_checkout_session",
		usage: "checkout --org ORG --tier starter|business --email E [--name N] [--instance-types a,b] [--trial-days N] [--success-url U] [--cancel-url U]",
		flags: func(fs *flag.FlagSet) func() map[string]any {
			subscription := subscriptionFlags(fs)
			success := fs.String("success-url", "http://localhost:8000/billing/done?session={CHECKOUT_SESSION_ID}", "where the page sends the customer after paying")
			cancel := fs.String("cancel-url", "http://localhost:8000/billing", "where the page sends the customer who leaves")
			return func() map[string]any {
				m := subscription()
				m["success_url"], m["cancel_url"] = *success, *cancel
				return m
			}
		}},
	"invoices": {action: "list_invoices", readOnly: true, usage: "invoices --org ORG [--limit N] [--starting-after INVOICE_ID]",
		flags: func(fs *flag.FlagSet) func() map[string]any {
			limit, after := fs.Int("limit", 10, "invoices per page (1 to 100)"), fs.String("starting-after", "", "the last invoice of the previous page")
			return func() map[string]any {
				m := map[string]any{"limit": *limit}
				if *after != "" {
					m["starting_after"] = *after
				}
				return m
			}
		}},
	"alerts": {action: "get_status", readOnly: true, usage: "alerts --org ORG", print: printAlerts,
		flags: func(fs *flag.FlagSet) func() map[string]any { return func() map[string]any { return map[string]any{} } }},
	"access": {action: "check_access", readOnly: true, usage: "access --org ORG --type T", flags: func(fs *flag.FlagSet) func() map[string]any {
		typ := fs.String("type", "", "instance type")
		return func() map[string]any { return map[string]any{"instance_type": *typ} }
	}},
	"spend-cap": {action: "set_spend_cap", usage: "spend-cap --org ORG --amount CENTS|none [--currency usd]", flags: func(fs *flag.FlagSet) func() map[string]any {
		amount, currency := fs.String("amount", "", "the monthly cap in minor units, or none for the tier's default"), fs.String("currency", "usd", "the catalog's currency")
		return func() map[string]any {
			if *amount == "none" {
				return map[string]any{"amount": nil}
			}
			n, err := strconv.ParseInt(*amount, 10, 64)
			if err != nil {
				return map[string]any{"amount": *amount, "currency": *currency} // the function says what is wrong
			}
			return map[string]any{"amount": n, "currency": *currency}
		}
	}},
	"preview": {action: "preview_invoice", readOnly: true, usage: "preview --org ORG", flags: func(fs *flag.FlagSet) func() map[string]any {
		return func() map[string]any { return map[string]any{} }
	}},
	"portal": {action: "create_portal_session", readOnly: true, usage: "portal --org ORG --return-url URL", flags: func(fs *flag.FlagSet) func() map[string]any {
		ret := fs.String("return-url", "http://localhost:8000/billing", "where the portal sends the customer back")
		return func() map[string]any { return map[string]any{"return_url": *ret} }
	}},
}

// subscriptionFlags are what a new subscription needs, for subscribe and
// checkout.
func subscriptionFlags(fs *flag.FlagSet) func() map[string]any {
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
	if !c.readOnly {
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
		printer := printResult
		if c.print != nil {
			printer = c.print
		}
		printer(stdout, result)
	}
	return err
}

// spendOf is the spend part of a status.
type spendOf struct {
	Spend *struct {
		Amount      string `json:"amount"`
		Cap         *int64 `json:"cap"`
		Currency    string `json:"currency"`
		PeriodStart int64  `json:"period_start"`
		Alerts      []struct {
			Threshold int64 `json:"threshold"`
			At        int64 `json:"at"`
		} `json:"alerts"`
	} `json:"spend"`
}

// printAlerts prints the spend alerts sent this period, one a line.
func printAlerts(w io.Writer, raw json.RawMessage) {
	var st spendOf
	if json.Unmarshal(raw, &st) != nil || st.Spend == nil {
		fmt.Fprintln(w, "no subscription, so no spend and no alerts")
		return
	}
	capText := "no cap"
	if st.Spend.Cap != nil {
		capText = fmt.Sprintf("cap %d", *st.Spend.Cap)
	}
	fmt.Fprintf(w, "spend %s %s (%s) since %s\n", st.Spend.Amount, st.Spend.Currency, capText, time.Unix(st.Spend.PeriodStart, 0).UTC().Format(time.RFC3339))
	if len(st.Spend.Alerts) == 0 {
		fmt.Fprintln(w, "no alert sent this period")
	}
	for _, a := range st.Spend.Alerts {
		fmt.Fprintf(w, "alert %d%%\tsent %s\n", a.Threshold, time.Unix(a.At, 0).UTC().Format(time.RFC3339))
	}
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
	if printInvoices(tw, raw) || printPreview(tw, raw) {
		return
	}
	var fields map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // unix times print as integers
	_ = dec.Decode(&fields)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%v\n", k, fields[k])
	}
}

// printInvoices prints list_invoices' answer as a table.
func printInvoices(tw io.Writer, raw json.RawMessage) bool {
	var page struct {
		Invoices []struct {
			ID, Status, Currency string
			Number               *string `json:"number"`
			Total, Created       int64
			HostedInvoiceURL     *string `json:"hosted_invoice_url"`
		} `json:"invoices"`
		HasMore *bool `json:"has_more"`
	}
	if json.Unmarshal(raw, &page) != nil || page.HasMore == nil {
		return false
	}
	fmt.Fprintf(tw, "id\tnumber\tstatus\ttotal\tcreated\tpage\n")
	for _, inv := range page.Invoices {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", inv.ID, orNone(inv.Number), inv.Status, money(inv.Total, inv.Currency),
			time.Unix(inv.Created, 0).UTC().Format("2006-01-02"), orNone(inv.HostedInvoiceURL))
	}
	if *page.HasMore {
		fmt.Fprintf(tw, "more: --starting-after %s\n", page.Invoices[len(page.Invoices)-1].ID)
	}
	return true
}

// printPreview prints preview_invoice's answer as a table.
func printPreview(tw io.Writer, raw json.RawMessage) bool {
	var p struct {
		Currency string
		Total    *int64 `json:"total"`
		Lines    []struct {
			Key, Kind string
			Minutes   *int64 `json:"minutes"`
			Amount    int64
			PeriodEnd int64 `json:"period_end"`
		} `json:"lines"`
	}
	if json.Unmarshal(raw, &p) != nil || p.Total == nil || p.Lines == nil {
		return false
	}
	fmt.Fprintf(tw, "line\tkind\tminutes\tamount\tuntil\n")
	for _, l := range p.Lines {
		minutes := "-"
		if l.Minutes != nil {
			minutes = fmt.Sprint(*l.Minutes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Key, l.Kind, minutes, money(l.Amount, p.Currency), time.Unix(l.PeriodEnd, 0).UTC().Format("2006-01-02"))
	}
	fmt.Fprintf(tw, "total\t\t\t%s\t\n", money(*p.Total, p.Currency))
	return true
}

// money formats an amount in a currency's minor unit (two decimals).
func money(minor int64, currency string) string {
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	return fmt.Sprintf("%s%d.%02d %s", sign, minor/100, minor%100, strings.ToUpper(currency))
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
