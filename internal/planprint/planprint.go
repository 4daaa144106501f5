// Package planprint prints an upsert-products answer as a table for people:
// + create, ~ update, = unchanged, - archive.
package planprint

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

var marks = map[string]string{"create": "+", "update": "~", "replace_price": "~", "unchanged": "=", "archive": "-"}

// Print writes the plan in result (the "result" of the envelope).
func Print(w io.Writer, result json.RawMessage) error {
	var res struct {
		Created, Updated, Archived, Unchanged int
		DryRun                                bool   `json:"dry_run"`
		Portal                                string `json:"portal_configuration"`
		Plan                                  []struct {
			Key     string   `json:"key"`
			Action  string   `json:"action"`
			Changes []string `json:"changes"`
		} `json:"plan"`
	}
	if err := json.Unmarshal(result, &res); err != nil {
		return fmt.Errorf("unexpected result: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tKEY\tACTION\tCHANGES")
	for _, p := range res.Plan {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", marks[p.Action], p.Key, p.Action, strings.Join(p.Changes, "; "))
	}
	tw.Flush()
	fmt.Fprintf(w, "created %d · updated %d · archived %d · unchanged %d", res.Created, res.Updated, res.Archived, res.Unchanged)
	if res.DryRun {
		fmt.Fprint(w, " (dry run: nothing was written)")
	}
	fmt.Fprintln(w)
	if res.Portal != "" {
		fmt.Fprintf(w, "customer portal configuration %s (payment methods and invoices)\n", res.Portal)
	}
	return nil
}
