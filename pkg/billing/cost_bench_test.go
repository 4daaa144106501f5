package billing_test

import (
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/pkg/billing"
)

// The cost of each subscribe action with realistic delays injected: every
// Stripe request takes 250 ms more than the local Stripe takes (its delay
// fault); every DynamoDB request is answered 5 ms after it is sent, moto's
// own time inside those 5 ms (testenv.DB's Latency). Each action reports
// its Stripe and DynamoDB requests per call, its latency (p50, p95) and
// its floor: its Stripe round trips × 250 ms + its DynamoDB requests × 5
// ms. `make bench` runs these into bench/REPORT.md.

const (
	costStripeDelay   = 250 * time.Millisecond
	costDynamoLatency = 5 * time.Millisecond
)

// costRun measures calls (their setup runs without delays first) and
// reports them.
type costRun struct {
	f                      *fixture
	delayed                bool
	latencies              []time.Duration
	stripeReqs, dynamoReqs int
	roundTrips             float64 // Stripe round trips on the critical path per call; 0 counts each request
}

func (c *costRun) measure(call func() billing.Response) {
	c.f.t.Helper()
	c.f.requests()
	if c.delayed {
		c.f.stripe.InjectFault(stripelocal.Fault{Kind: "delay", DelayMS: int(costStripeDelay / time.Millisecond), Count: 1 << 30})
		c.f.db.Latency = costDynamoLatency
	}
	start := time.Now()
	resp := call()
	took := time.Since(start)
	c.f.db.Latency = 0
	c.f.stripe.ClearFaults()
	if !resp.OK {
		c.f.t.Fatalf("%+v", resp.Error)
	}
	d, s := c.f.requests()
	c.latencies, c.dynamoReqs, c.stripeReqs = append(c.latencies, took), c.dynamoReqs+d, c.stripeReqs+s
}

func (c *costRun) p50() time.Duration {
	slices.Sort(c.latencies)
	return c.latencies[len(c.latencies)/2]
}

// report reports the delayed run c beside the same calls without delays:
// what the emulators themselves take on this machine (moto, the local
// Stripe and its bookkeeping) is the undelayed p50.
func (c *costRun) report(b *testing.B, undelayed *costRun) {
	n := float64(len(c.latencies))
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	p50, p95 := c.p50(), c.latencies[min(len(c.latencies)-1, len(c.latencies)*95/100)]
	stripePer, dynamoPer := float64(c.stripeReqs)/n, float64(c.dynamoReqs)/n
	trips := c.roundTrips
	if trips == 0 {
		trips = stripePer
	}
	injected := trips*ms(costStripeDelay) + dynamoPer*ms(costDynamoLatency)
	b.ReportMetric(stripePer, "stripe-req/op")
	b.ReportMetric(dynamoPer, "dynamodb-req/op")
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p95), "p95-ms")
	b.ReportMetric(injected, "floor-ms")
	b.ReportMetric(ms(p50)/injected, "p50/floor")
	b.ReportMetric(ms(p95)/injected, "p95/floor")
	b.ReportMetric(ms(undelayed.p50()), "undelayed-p50-ms")
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
		{"check_access", func(b *testing.B, c *costRun, i int) {
			if i == 0 {
				paid(c.f, "org_cost_ca")
			}
			c.measure(func() billing.Response {
				return c.f.call(map[string]any{"action": "check_access", "org_id": "org_cost_ca", "instance_type": "gpu-a10g"})
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
			undelayed, c := &costRun{f: f}, &costRun{f: f, delayed: true}
			for i := range b.N {
				tc.run(b, undelayed, i)
			}
			for i := range b.N {
				tc.run(b, c, b.N+i)
			}
			c.report(b, undelayed)
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
	run := time.Now().UnixNano()
	var passes []*costRun
	for _, delayed := range []bool{false, true} {
		c := &costRun{f: f, delayed: delayed, roundTrips: float64(billing.MaxUsageBatch) / billing.DefaultUsageConcurrency}
		for i := range b.N {
			var records []any
			for j := range billing.MaxUsageBatch {
				records = append(records, usage(orgs[j%len(orgs)], "gpu-a10g", 1, fmt.Sprintf("ub-%d-%v-%d-%d", run, delayed, i, j)))
			}
			c.measure(func() billing.Response {
				resp := f.call(batch(records...))
				if r := batchResult(b, resp); r.Recorded != len(records) {
					f.t.Fatalf("recorded %d of %d", r.Recorded, len(records))
				}
				return resp
			})
		}
		passes = append(passes, c)
	}
	passes[1].report(b, passes[0])
}
