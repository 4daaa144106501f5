package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
)

// batchSize is the records per record_usage_batch call (its maximum).
const batchSize = 500

// recordUsageFile sends the usage records of a JSON Lines file, one record
// per line ({org_id, instance_type, minutes, request_id[, timestamp]}),
// in batches of 500, and prints each record that was not recorded. Each
// record needs its own request_id, so that running the file again counts
// nothing twice.
func recordUsageFile(ctx context.Context, t target, args []string, asJSON bool, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("record-usage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "", "JSON Lines of usage records, each with its request_id ('-' reads stdin)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: billingctl record-usage --file records.jsonl")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	records, err := readRecords(*file)
	if err != nil {
		return err
	}
	var recorded, failed int
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for batch := range slices.Chunk(records, batchSize) {
		env, err := t.invoke(ctx, "SubscribeFunction", map[string]any{"action": "record_usage_batch", "records": batch})
		if err != nil {
			return err
		}
		result, err := show(env, asJSON, stdout)
		if err != nil {
			return err
		}
		var r struct {
			Results []struct {
				RequestID string `json:"request_id"`
				Recorded  bool   `json:"recorded"`
				Error     *struct {
					Code, Message string
					Retryable     bool
				} `json:"error"`
			} `json:"results"`
			Recorded, Failed int
		}
		if err := json.Unmarshal(result, &r); err != nil {
			return fmt.Errorf("record_usage_batch answered something else: %w", err)
		}
		recorded, failed = recorded+r.Recorded, failed+r.Failed
		for _, o := range r.Results {
			if o.Error != nil && !asJSON {
				retry := ""
				if o.Error.Retryable {
					retry = " (retryable: run the file again)"
				}
				fmt.Fprintf(tw, "%s\t%s: %s%s\n", o.RequestID, o.Error.Code, o.Error.Message, retry)
			}
		}
	}
	if !asJSON {
		fmt.Fprintf(tw, "recorded\t%d\nnot recorded\t%d\n", recorded, failed)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d records were not recorded", failed, recorded+failed)
	}
	return nil
}

// readRecords reads the JSON Lines file, refusing a line that is not a
// JSON object with a request_id.
func readRecords(path string) ([]json.RawMessage, error) {
	var in io.Reader = os.Stdin
	switch path {
	case "":
		return nil, fmt.Errorf("--file is required")
	case "-":
	default:
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
		in = f
	}
	var out []json.RawMessage
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var rec struct {
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return nil, fmt.Errorf("%s:%d: not a JSON object", path, n)
		}
		if rec.RequestID == "" {
			return nil, fmt.Errorf("%s:%d: no request_id: each record needs its own, so that running the file again counts nothing twice", path, n)
		}
		out = append(out, json.RawMessage(line))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no records", path)
	}
	return out, nil
}
