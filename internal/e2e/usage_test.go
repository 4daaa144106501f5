package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
)

// TestEndToEnd_UsageUnderLoadCountsEachRecordOnce drives usage records
// through the real subscribe binary in batches of 500 from two concurrent
// callers, with 5% of the records sent again and 1% for an instance type
// the organization does not have, then reads every organization's meter
// summary from the local Stripe: each valid record counted exactly once,
// each invalid one refused on its own with a clear error. make test runs
// 500 records for 25 organizations; make bench, 10,000 for 500
// (USAGE_LOAD_RECORDS), and reads the figures from the log line.
func TestEndToEnd_UsageUnderLoadCountsEachRecordOnce(t *testing.T) {
	n := 500
	if v, err := strconv.Atoi(os.Getenv("USAGE_LOAD_RECORDS")); err == nil && v > 0 {
		n = v
	}
	orgs := max(n/20, 1)
	// The local Stripe takes far more than test mode's 25 a second.
	s := startStack(t, "USAGE_RATE=500")
	customers := map[string]string{}
	for i := range orgs {
		org := fmt.Sprintf("org_load_%d", i)
		st := s.call(req("subscribe", org, "tier", "starter", "email", org+"@example.com", "instance_types", []string{"gpu-a10g"}))
		customers[org], _ = st["customer_id"].(string)
		s.pay(t, org)
	}

	type record struct {
		OrgID        string `json:"org_id"`
		InstanceType string `json:"instance_type"`
		Minutes      int    `json:"minutes"`
		RequestID    string `json:"request_id"`
	}
	var records []record
	want := map[string]int{} // minutes by organization
	invalid := map[string]bool{}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	for i := range n {
		r := record{OrgID: fmt.Sprintf("org_load_%d", i%orgs), InstanceType: "gpu-a10g", Minutes: 1 + i%7, RequestID: fmt.Sprintf("load-%s-%d", run, i)}
		if i%97 == 96 {
			r.InstanceType = "gpu-t4" // not on the subscription
			invalid[r.RequestID] = true
		} else {
			want[r.OrgID] += r.Minutes
		}
		records = append(records, r)
	}
	for i := 0; i < n; i += 20 { // 5% sent again, in a later batch
		records = append(records, records[i])
	}

	batches := make(chan []record)
	var mu sync.Mutex
	outcomes := map[string][]string{} // request_id → each answer
	var wg sync.WaitGroup
	start := time.Now()
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				raw, _ := json.Marshal(map[string]any{"action": "record_usage_batch", "records": b})
				out, err := s.lambda.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("SubscribeFunction"), Payload: raw})
				if err != nil {
					t.Errorf("invoke: %v", err)
					continue
				}
				var env struct {
					OK     bool
					Result struct {
						Results []struct {
							RequestID string `json:"request_id"`
							Recorded  bool
							Error     *struct{ Code, Message string }
						}
					}
				}
				if json.Unmarshal(out.Payload, &env) != nil || !env.OK || len(env.Result.Results) != len(b) {
					t.Errorf("a batch answered %.300s", out.Payload)
					continue
				}
				mu.Lock()
				for _, r := range env.Result.Results {
					a := "recorded"
					if !r.Recorded {
						a = r.Error.Code + ": " + r.Error.Message
					}
					outcomes[r.RequestID] = append(outcomes[r.RequestID], a)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < len(records); i += 500 {
		batches <- records[i:min(i+500, len(records))]
	}
	close(batches)
	wg.Wait()
	took := time.Since(start)

	wrong := 0
	for _, r := range records[:n] {
		for _, a := range outcomes[r.RequestID] {
			ok := a == "recorded"
			if invalid[r.RequestID] {
				ok = strings.HasPrefix(a, "not_found: instance_type: gpu-t4 is not on the subscription")
			}
			if !ok {
				wrong++
				if wrong < 5 {
					t.Errorf("%s (%s): %s", r.RequestID, r.InstanceType, a)
				}
			}
		}
	}

	var meters struct {
		Data []struct {
			ID        string `json:"id"`
			EventName string `json:"event_name"`
		} `json:"data"`
	}
	s.stripeAPI(t, http.MethodGet, "/v1/billing/meters?limit=100", nil, &meters)
	meterID := ""
	for _, m := range meters.Data {
		if m.EventName == "bf_local-e2e_gpu-a10g_minutes" {
			meterID = m.ID
		}
	}
	if meterID == "" {
		t.Fatalf("no gpu-a10g meter of this deployment among %d", len(meters.Data))
	}
	from, to := time.Now().Add(-time.Hour).Unix()/60*60, time.Now().Add(time.Hour).Unix()/60*60 // minute boundaries
	mismatched := 0
	for org, minutes := range want {
		var sums struct {
			Data []struct {
				AggregatedValue float64 `json:"aggregated_value"`
			}
		}
		s.stripeAPI(t, http.MethodGet, fmt.Sprintf("/v1/billing/meters/%s/event_summaries?customer=%s&start_time=%d&end_time=%d", meterID, customers[org], from, to), nil, &sums)
		got := 0.0
		for _, d := range sums.Data {
			got += d.AggregatedValue
		}
		if got != float64(minutes) {
			mismatched++
			if mismatched < 5 {
				t.Errorf("%s: Stripe counted %v minutes, want %d", org, got, minutes)
			}
		}
	}

	// Each organization's spend, as get_status reads it, is its valid
	// minutes at the A10G's 2.0117 cents, exactly: the counter and Stripe's
	// summaries agree.
	price, _ := new(big.Rat).SetString("2.0117")
	spendWrong := 0
	for org, minutes := range want {
		st := s.call(req("get_status", org))
		spend, _ := st["spend"].(map[string]any)
		amount, _ := spend["amount"].(string)
		got, ok := new(big.Rat).SetString(amount)
		if wantAmount := new(big.Rat).Mul(price, new(big.Rat).SetInt64(int64(minutes))); !ok || got.Cmp(wantAmount) != 0 {
			spendWrong++
			if spendWrong < 5 {
				t.Errorf("%s: spend %q, want %s (%d minutes)", org, amount, wantAmount.FloatString(4), minutes)
			}
		}
	}

	// What it cost, from the function's own log line per batch.
	var stripeReqs, dynamoReqs, calls int
	sc := bufio.NewScanner(strings.NewReader(s.log("subscribe")))
	for sc.Scan() {
		var line struct {
			Msg              string `json:"msg"`
			StripeRequests   int    `json:"stripe_requests"`
			DynamoDBRequests int    `json:"dynamodb_requests"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "usage" {
			calls++
			stripeReqs += line.StripeRequests
			dynamoReqs += line.DynamoDBRequests
		}
	}
	sent := len(records)
	t.Logf("usage load: %d records (%d sent with the retries) for %d organizations in %d batches by 2 callers in %v: %.0f records/s; "+
		"%.3f Stripe and %.3f DynamoDB requests per record; %d of %d organizations' summaries match; %d of %d spend counters match; %d wrong answers",
		n, sent, orgs, calls, took.Round(time.Millisecond), float64(sent)/took.Seconds(),
		float64(stripeReqs)/float64(sent), float64(dynamoReqs)/float64(sent), len(want)-mismatched, len(want), len(want)-spendWrong, len(want), wrong)
	if wrong > 0 || mismatched > 0 || spendWrong > 0 {
		t.Fatalf("%d wrong answers, %d organizations counted wrong, %d spend counters wrong", wrong, mismatched, spendWrong)
	}
	if calls == 0 || stripeReqs != n-len(invalid) {
		t.Fatalf("%d usage log lines, %d Stripe requests; want one request per valid record (%d)", calls, stripeReqs, n-len(invalid))
	}
}
