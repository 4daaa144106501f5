package billing_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

// The benchmarks report requests as custom metrics (dynamodb-req/op,
// stripe-req/op), counted at the client boundary, beside time and
// allocations. `make bench` collects them into bench/REPORT.md.

func benchFixture(b *testing.B) *fixture { return newFixture(b, ns) }

func reportRequests(b *testing.B, f *fixture, n int) {
	d, s := f.requests()
	b.ReportMetric(float64(d)/float64(n), "dynamodb-req/op")
	b.ReportMetric(float64(s)/float64(n), "stripe-req/op")
}

// BenchmarkWebhookRequests measures the requests one delivery costs, per
// kind of delivery.
func BenchmarkWebhookRequests(b *testing.B) {
	kinds := []string{"new", "duplicate", "stale", "foreign", "tie", "version_mismatch"}
	for _, kind := range kinds {
		b.Run(kind, func(b *testing.B) {
			f := benchFixture(b)
			var live []*stripe.Subscription
			if kind == "tie" || kind == "version_mismatch" {
				live = f.liveSubscriptions(b.N) // a re-fetch needs a real one
			}
			payloads := make([][]byte, b.N)
			for i := range b.N {
				org := fmt.Sprintf("org_b%d", i)
				obj := subscriptionObject(fmt.Sprintf("sub_b%d", i), org, "active", false, "business", "gpu-t4")
				created, version := int64(100), stripe.APIVersion
				switch kind {
				case "duplicate", "stale":
					f.send(eventJSON(fmt.Sprintf("evt_pre%d", i), "customer.subscription.updated", 200, version, obj))
					if kind == "duplicate" {
						payloads[i] = eventJSON(fmt.Sprintf("evt_pre%d", i), "customer.subscription.updated", 200, version, obj)
						continue
					}
				case "foreign":
					obj["metadata"] = map[string]any{"org_id": org, "billing_namespace": "another-ns"}
				case "tie":
					org := live[i].Metadata["org_id"]
					f.send(eventJSON(fmt.Sprintf("evt_pre%d", i), "customer.subscription.updated", 100, version,
						subscriptionObject(live[i].ID, org, "past_due", false, "business")))
					obj = subscriptionObject(live[i].ID, org, "unpaid", false, "business") // same second, other state
				case "version_mismatch":
					obj = subscriptionObject(live[i].ID, live[i].Metadata["org_id"], "active", false, "business")
					version = "2024-06-20"
				}
				payloads[i] = eventJSON(fmt.Sprintf("evt_b%d_%s", i, kind), "customer.subscription.updated", created, version, obj)
			}
			sigs := make([]string, b.N)
			for i := range b.N {
				sigs[i] = signed(payloads[i], fixtureSecret, time.Now())
			}
			f.requests()
			b.ResetTimer()
			for i := range b.N {
				if resp := f.deliver(payloads[i], sigs[i]); resp.StatusCode != 200 {
					b.Fatalf("%s: %d %s", kind, resp.StatusCode, resp.Body)
				}
			}
			b.StopTimer()
			reportRequests(b, f, b.N)
		})
	}
}

// BenchmarkWebhookCPU is verify + decode + decide for a 5 KB subscription
// event of ours, up to the (instant) DynamoDB write: no I/O.
func BenchmarkWebhookCPU(b *testing.B) {
	var items []string
	for len(items) < 12 {
		items = append(items, "gpu-t4")
	}
	obj := subscriptionObject("sub_cpu", "org_cpu", "active", false, append([]string{"business"}, items...)...)
	obj["metadata"] = map[string]any{"org_id": "org_cpu", "billing_namespace": ns, "note": strings.Repeat("x", 1100)}
	payload := eventJSON("evt_cpu", "customer.subscription.updated", 100, stripe.APIVersion, obj)
	cfg, _ := billing.LoadConfig(func(k string) string {
		return map[string]string{"STAGE": "dev", "BILLING_NAMESPACE": ns, "TABLE_NAME": "unused", "STRIPE_API_KEY": "sk_test_x", "STRIPE_ENDPOINT_SECRET": fixtureSecret}[k]
	})
	// Every write is accepted at once: this measures the webhook's own
	// work, not DynamoDB's.
	accept := &testenv.DB{Intercept: func(string) (bool, error) { return true, nil }}
	svc := billing.NewService(cfg, billing.NewKeySource(cfg, nil), table.New(accept, "unused"), discardLogger())
	sig := signed(payload, fixtureSecret, time.Now())
	b.ReportMetric(float64(len(payload)), "event-bytes")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		res, err := svc.ProcessWebhook(context.Background(), payload, sig)
		if err != nil || res.Status != billing.StatusProcessed {
			b.Fatalf("%+v %v", res, err)
		}
	}
}

// BenchmarkWebhookThroughput delivers new events of ours from 8 workers,
// in process, against moto.
func BenchmarkWebhookThroughput(b *testing.B) {
	f := benchFixture(b)
	payloads := make([][]byte, b.N)
	sigs := make([]string, b.N)
	for i := range b.N {
		org := fmt.Sprintf("org_t%d", i%200)
		payloads[i] = eventJSON(fmt.Sprintf("evt_t%d", i), "customer.subscription.updated", int64(100+i), stripe.APIVersion,
			subscriptionObject("sub_"+org, org, "active", false, "starter"))
		sigs[i] = signed(payloads[i], fixtureSecret, time.Now())
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if resp := f.deliver(payloads[i], sigs[i]); resp.StatusCode != 200 {
					b.Errorf("%d %s", resp.StatusCode, resp.Body)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkGetStatus reads an org's status.
func BenchmarkGetStatus(b *testing.B) {
	f := benchFixture(b)
	f.upsert(billing.UpsertRequest{})
	f.subscribe("org_gs", "tier", "starter", "email", "gs@example.com")
	f.requests()
	b.ResetTimer()
	for range b.N {
		f.ok(map[string]any{"action": "get_status", "org_id": "org_gs"})
	}
	b.StopTimer()
	reportRequests(b, f, b.N)
}

// BenchmarkUpsertProducts measures a first run and a steady-state run.
func BenchmarkUpsertProducts(b *testing.B) {
	for _, phase := range []string{"first", "steady"} {
		b.Run(phase, func(b *testing.B) {
			var writes, reads, dbReads, dbWrites int
			for range b.N {
				b.StopTimer()
				f := benchFixture(b)
				if phase == "steady" {
					f.upsert(billing.UpsertRequest{})
				}
				f.requests()
				b.StartTimer()
				f.upsert(billing.UpsertRequest{})
				b.StopTimer()
				for k, v := range f.stripe.Counts() {
					if strings.HasPrefix(k, "GET ") {
						reads += v
					} else {
						writes += v
					}
				}
				r, w := f.db.Reset()
				dbReads, dbWrites = dbReads+r, dbWrites+w
			}
			b.ReportMetric(float64(writes)/float64(b.N), "stripe-writes/op")
			b.ReportMetric(float64(reads)/float64(b.N), "stripe-reads/op")
			b.ReportMetric(float64(dbReads)/float64(b.N), "dynamodb-reads/op")
			b.ReportMetric(float64(dbWrites)/float64(b.N), "dynamodb-writes/op")
		})
	}
}

// BenchmarkSecretsWarm counts GetSecretValue calls over 1,000 warm
// invocations of one function environment.
func BenchmarkSecretsWarm(b *testing.B) {
	for range b.N {
		b.StopTimer()
		counting := &countingSecrets{SecretsClient: testenv.SecretsManager(b)}
		cfg := billing.Config{Stage: billing.StageStaging, Namespace: ns, TableName: "t", StripeSecretID: createSecret(b, stagingSecret)}
		svc := billing.NewService(cfg, billing.NewKeySource(cfg, counting), nil, discardLogger())
		b.StartTimer()
		for range 1000 {
			resp, _ := svc.HandleSubscribe(context.Background(), []byte(`{"action":"get_config"}`))
			if !resp.OK {
				b.Fatal(resp.Error)
			}
		}
		b.ReportMetric(float64(counting.calls.Load()), "getsecretvalue/1000-invocations")
	}
}
