package billing_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/pkg/billing"
)

// The cost of each subscribe action with realistic delays injected: every
// Stripe request takes 250 ms (the local Stripe's delay fault), every
// DynamoDB request 5 ms more than moto takes. Each action reports its
// Stripe and DynamoDB requests per call, its latency (p50, p95) and its
// floor: its Stripe round trips × 250 ms + its DynamoDB requests × 5 ms.
// `make bench` runs these into bench/REPORT.md.

const (
	costStripeDelay = 250 * time.Millisecond
	costDynamoDelay = 5 * time.Millisecond
)

// costRun measures calls made by op (its setup runs without delays first)
// and reports them.
type costRun struct {
	f                      *fixture
	latencies              []time.Duration
	stripeReqs, dynamoReqs int
	roundTrips             float64 // Stripe round trips on the critical path per call; 0 counts each request
	// What one request to moto and to the local Stripe takes on this
	// machine with no delay injected (medians): the floor the machine
	// allows adds them.
	motoBase, stripeBase time.Duration
}

func newCostRun(f *fixture) *costRun {
	c := &costRun{f: f}
	median := func(call func()) time.Duration {
		var d []time.Duration
		for range 21 {
			start := time.Now()
			call()
			d = append(d, time.Since(start))
		}
		slices.Sort(d)
		return d[len(d)/2]
	}
	c.motoBase = median(func() { _, _ = f.store.GetProductMapping(context.Background(), "starter") })
	c.stripeBase = median(func() { _, _ = f.sc().Customers.Get("cus_cost_missing", nil) })
	return c
}

func (c *costRun) measure(call func() billing.Response) {
	c.f.t.Helper()
	c.f.requests()
	c.f.stripe.InjectFault(stripelocal.Fault{Kind: "delay", DelayMS: int(costStripeDelay / time.Millisecond), Count: 1 << 30})
	c.f.db.Intercept = func(string) (bool, error) { time.Sleep(costDynamoDelay); return false, nil }
	start := time.Now()
	resp := call()
	took := time.Since(start)
	c.f.db.Intercept = nil
	c.f.stripe.ClearFaults()
	if !resp.OK {
		c.f.t.Fatalf("%+v", resp.Error)
	}
	d, s := c.f.requests()
	c.latencies, c.dynamoReqs, c.stripeReqs = append(c.latencies, took), c.dynamoReqs+d, c.stripeReqs+s
}

func (c *costRun) report(b *testing.B) {
	n := float64(len(c.latencies))
	slices.Sort(c.latencies)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	p50, p95 := c.latencies[len(c.latencies)/2], c.latencies[min(len(c.latencies)-1, len(c.latencies)*95/100)]
	stripePer, dynamoPer := float64(c.stripeReqs)/n, float64(c.dynamoReqs)/n
	trips := c.roundTrips
	if trips == 0 {
		trips = stripePer
	}
	floor := trips*ms(costStripeDelay) + dynamoPer*ms(costDynamoDelay)
	machineFloor := trips*ms(costStripeDelay+c.stripeBase) + dynamoPer*ms(costDynamoDelay+c.motoBase)
	b.ReportMetric(stripePer, "stripe-req/op")
	b.ReportMetric(dynamoPer, "dynamodb-req/op")
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p95), "p95-ms")
	b.ReportMetric(floor, "floor-ms")
	b.ReportMetric(ms(p50)/floor, "p50/floor")
	b.ReportMetric(ms(p50)/machineFloor, "p50/machine-floor")
	b.ReportMetric(ms(c.motoBase), "moto-ms")
	b.ReportMetric(ms(c.stripeBase), "local-stripe-ms")
	b.ReportMetric(0, "ns/op") // the latency above is what counts
}

// BenchmarkCommandCost measures each action b.N times.
func BenchmarkCommandCost(b *testing.B) {
	paid := func(f *fixture, org string) {
		f.subscribe(org, "tier", "starter", "email", org+"@example.com", "instance_types", []string{"gpu-a10g"})
	}
	cases := []struct {
		name string
		run  func(b *testing.B, c *costRun, i int)
	}{
		{"get_status", func(b *testing.B, c *costRun, i int) {
			if i == 0 {
				paid(c.f, "org_cost_gs")
			}
			c.measure(func() billing.Response {
				return c.f.call(map[string]any{"action": "get_status", "org_id": "org_cost_gs"})
			})
		}},
		{"subscribe", func(b *testing.B, c *costRun, i int) {
			org := fmt.Sprintf("org_cost_sub_%d_%d", time.Now().UnixNano(), i)
			c.measure(func() billing.Response {
				return c.f.call(req("subscribe", org, "tier", "starter", "email", "c@example.com", "instance_types", []string{"gpu-a10g"}))
			})
		}},
		{"change_tier", func(b *testing.B, c *costRun, i int) {
			if i == 0 {
				paid(c.f, "org_cost_ct")
			}
			tier := []string{"business", "starter"}[i%2]
			c.measure(func() billing.Response { return c.f.call(req("change_tier", "org_cost_ct", "tier", tier)) })
		}},
		{"set_instance_types", func(b *testing.B, c *costRun, i int) {
			if i == 0 {
				paid(c.f, "org_cost_it")
			}
			types := [][]string{{"gpu-a10g", "gpu-t4"}, {"gpu-a10g"}}[i%2]
			c.measure(func() billing.Response {
				return c.f.call(req("set_instance_types", "org_cost_it", "instance_types", types))
			})
		}},
		{"cancel", func(b *testing.B, c *costRun, i int) {
			org := fmt.Sprintf("org_cost_cn_%d_%d", time.Now().UnixNano(), i)
			paid(c.f, org)
			c.measure(func() billing.Response { return c.f.call(req("cancel", org)) })
		}},
		{"record_usage", func(b *testing.B, c *costRun, i int) {
			if i == 0 {
				paid(c.f, "org_cost_ru")
			}
			c.measure(func() billing.Response {
				return c.f.call(req("record_usage", "org_cost_ru", "instance_type", "gpu-a10g", "minutes", 1))
			})
		}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			f := benchFixture(b)
			f.upsert(billing.UpsertRequest{})
			c := newCostRun(f)
			for i := range b.N {
				tc.run(b, c, i)
			}
			c.report(b)
		})
	}
}

// BenchmarkUsageBatchCost measures record_usage_batch with 500 records of
// 50 organizations, at the pool's default concurrency and a rate that
// does not bind (live mode's).
func BenchmarkUsageBatchCost(b *testing.B) {
	f := benchFixture(b)
	cfg := f.svc.Config()
	cfg.UsageRate = 1000
	f.svc = billing.NewService(cfg, billing.NewKeySource(cfg, nil), f.store, discardLogger())
	f.svc.SetMetricsOutput(io.Discard)
	f.upsert(billing.UpsertRequest{})
	var orgs []string
	for i := range 50 {
		org := fmt.Sprintf("org_cost_ub_%d", i)
		f.subscribe(org, "tier", "starter", "email", org+"@example.com", "instance_types", []string{"gpu-a10g"})
		orgs = append(orgs, org)
	}
	c := newCostRun(f)
	c.roundTrips = float64(billing.MaxUsageBatch) / billing.DefaultUsageConcurrency
	run := time.Now().UnixNano()
	for i := range b.N {
		var records []any
		for j := range billing.MaxUsageBatch {
			records = append(records, usage(orgs[j%len(orgs)], "gpu-a10g", 1, fmt.Sprintf("ub-%d-%d-%d", run, i, j)))
		}
		c.measure(func() billing.Response {
			resp := f.call(batch(records...))
			if r := batchResult(b, resp); r.Recorded != len(records) {
				f.t.Fatalf("recorded %d of %d", r.Recorded, len(records))
			}
			return resp
		})
	}
	c.report(b)
}
