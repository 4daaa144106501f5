package billing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/baseten/billing-functions/pkg/billing"
)

// soakSize is the number of webhook deliveries of the soak: 10,000, or
// SOAK_DELIVERIES.
func soakSize(t *testing.T) int {
	n := 10_000
	if v := os.Getenv("SOAK_DELIVERIES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			t.Fatalf("SOAK_DELIVERIES=%q: want an integer of at least 100", v)
		}
	}
	return n
}

// TestSoak_TenThousandDeliveriesThenReconcileFindsNoDifference drives
// about 200 organizations through subscribe (5% of them another
// deployment's, on the same Stripe account) over months of the local
// Stripe's clock: tier changes, instance types, failed and paid renewals,
// cancellations. Then it delivers every event Stripe made, at least 10,000
// deliveries: 10% of events twice (half of those at the same moment), a
// fifth of the deliveries swapped with another up to 200 places away, by 8
// concurrent workers, each 500 redelivered as Stripe would. Reconcile then
// finds the mirror equal to Stripe.
func TestSoak_TenThousandDeliveriesThenReconcileFindsNoDifference(t *testing.T) {
	target := soakSize(t)
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	other, _, _ := newService(t, "soak-other", f.url, nil) // its own table, as another deployment has
	other.SetMetricsOutput(discard{})
	if _, err := other.UpsertProducts(context.Background(), billing.UpsertRequest{}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()

	// The drive: each organization is one of ours, or every 20th another
	// deployment's.
	type org struct {
		id  string
		svc *billing.Service
	}
	orgs := make([]org, 200)
	for i := range orgs {
		orgs[i] = org{fmt.Sprintf("org_%03d", i), f.svc}
		if i%20 == 19 {
			orgs[i].svc = other
		}
	}
	types := []string{"gpu-t4", "gpu-a10g", "gpu-a100", "gpu-h100", "cpu-1x4", "cpu-8x32"}
	// run sends each step's request to subscribe, four at a time: the
	// organizations are independent, and their order within a month does
	// not matter.
	type step struct {
		o org
		r map[string]any
	}
	run := func(steps []step) []billing.Response {
		answers := make([]billing.Response, len(steps))
		failures := make([]error, len(steps))
		slots := make(chan struct{}, 4)
		var wg sync.WaitGroup
		for i, s := range steps {
			wg.Add(1)
			slots <- struct{}{}
			go func() {
				defer func() { <-slots; wg.Done() }()
				raw, _ := json.Marshal(s.r)
				answers[i], failures[i] = s.o.svc.HandleSubscribe(context.Background(), raw)
			}()
		}
		wg.Wait()
		for i, s := range steps {
			if failures[i] != nil || !answers[i].OK {
				t.Fatalf("%s %v: %+v %v", s.o.id, s.r["action"], answers[i].Error, failures[i])
			}
		}
		return answers
	}
	someTypes := func() []string {
		out := []string{}
		for _, ty := range types {
			if rng.IntN(3) == 0 {
				out = append(out, ty)
			}
		}
		return out
	}
	var subscribes []step
	for i, o := range orgs {
		subscribes = append(subscribes, step{o, req("subscribe", o.id, "tier", []string{"starter", "business"}[i%2], "email", o.id+"@example.com", "instance_types", someTypes())})
	}
	subscriptionID := map[string]string{}
	for i, resp := range run(subscribes) {
		st, ok := resp.Result.(billing.Status)
		if !ok || st.Subscription == nil {
			t.Fatalf("subscribe %s answered %#v", orgs[i].id, resp.Result)
		}
		subscriptionID[orgs[i].id] = st.Subscription.ID
	}
	subscribed := time.Since(start)
	var advancing time.Duration
	unique := target * 10 / 11 // with 10% delivered twice
	canceled := map[string]bool{}
	for month := 0; f.stripe.EventCount() < unique; month++ {
		var changes []step
		for _, o := range orgs {
			if canceled[o.id] {
				continue
			}
			// Most months an organization changes nothing: its renewal
			// makes the events.
			switch rng.IntN(40) {
			case 0:
				changes = append(changes, step{o, req("change_tier", o.id, "tier", []string{"starter", "business"}[rng.IntN(2)])})
			case 1, 2:
				changes = append(changes, step{o, req("set_instance_types", o.id, "instance_types", someTypes())})
			case 3:
				if month > 1 {
					changes = append(changes, step{o, req("cancel", o.id)})
					canceled[o.id] = true
				}
			}
		}
		run(changes)
		// A month passes; every fifth month's renewals fail first.
		failing := month%5 == 4
		f.stripe.SetAutoPay(!failing)
		t0 := time.Now()
		f.stripe.Advance(31 * 24 * time.Hour)
		advancing += time.Since(t0)
		if failing {
			for _, o := range orgs {
				if !canceled[o.id] {
					if err := f.stripe.Settle(subscriptionID[o.id], []string{"failed", "paid"}[rng.IntN(2)]); err != nil {
						t.Fatalf("settle %s: %v", o.id, err)
					}
				}
			}
		}
		if month > 40 {
			t.Fatalf("after %d months, only %d events", month, f.stripe.EventCount())
		}
	}
	f.stripe.SetAutoPay(true)
	driven := time.Since(start)
	t.Logf("soak: drive: %s subscribing, %s advancing the clock", subscribed.Round(time.Second), advancing.Round(time.Second))

	// The schedule: every event once, 10% twice, a fifth swapped.
	evs := f.allEvents()
	type delivery struct {
		payload  []byte
		withNext bool // sent at the same moment as the next delivery
	}
	var schedule []delivery
	for _, ev := range evs {
		schedule = append(schedule, delivery{payload: ev})
		if rng.IntN(10) == 0 {
			if rng.IntN(2) == 0 {
				schedule[len(schedule)-1].withNext = true // both copies at once
			}
			schedule = append(schedule, delivery{payload: ev})
		}
	}
	paired := func(i int) bool { return schedule[i].withNext || i > 0 && schedule[i-1].withNext }
	moved := 0
	for i := range schedule {
		j := min(len(schedule)-1, max(0, i+rng.IntN(401)-200))
		if rng.IntN(5) == 0 && i != j && !paired(i) && !paired(j) {
			schedule[i], schedule[j] = schedule[j], schedule[i]
			moved++
		}
	}
	// Every event is delivered; duplicates of random events top the
	// schedule up to the target.
	for len(schedule) < target {
		schedule = append(schedule, delivery{payload: evs[rng.IntN(len(evs))]})
	}

	// Delivery: 8 workers; a 500 goes back to the queue, as Stripe retries.
	outcomes := map[string]int{}
	var mu sync.Mutex
	var retried atomic.Int64
	var latencies []time.Duration
	queue := make(chan []delivery, len(schedule))
	for i := 0; i < len(schedule); i++ {
		batch := []delivery{schedule[i]}
		if schedule[i].withNext && i+1 < len(schedule) {
			batch = append(batch, schedule[i+1])
			i++
		}
		queue <- batch
	}
	var pending sync.WaitGroup
	pending.Add(len(queue))
	f.db.reset()
	deliverStart := time.Now()
	send := func(d delivery) {
		t0 := time.Now()
		resp, _ := f.svc.HandleWebhook(context.Background(), events.APIGatewayV2HTTPRequest{Body: string(d.payload),
			Headers: map[string]string{"stripe-signature": signed(d.payload, fixtureSecret, time.Now())}})
		took := time.Since(t0)
		mu.Lock()
		latencies = append(latencies, took)
		switch resp.StatusCode {
		case http.StatusOK:
			var body struct{ Status string }
			_ = json.Unmarshal([]byte(resp.Body), &body)
			outcomes[body.Status]++
		case http.StatusInternalServerError:
			retried.Add(1)
			mu.Unlock()
			pending.Add(1)
			queue <- []delivery{d}
			return
		default:
			outcomes[strconv.Itoa(resp.StatusCode)]++
		}
		mu.Unlock()
	}
	var workers sync.WaitGroup
	for range 8 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for batch := range queue {
				var both sync.WaitGroup
				for _, d := range batch {
					both.Add(1)
					go func() { defer both.Done(); send(d) }()
				}
				both.Wait()
				pending.Done()
			}
		}()
	}
	pending.Wait()
	close(queue)
	workers.Wait()
	took := time.Since(deliverStart)
	reads, writes := f.db.reset()

	slices.Sort(latencies)
	delivered := len(latencies) - int(retried.Load())
	foreign := 0
	for _, d := range schedule {
		if bytes.Contains(d.payload, []byte(`"billing_namespace":"soak-other"`)) {
			foreign++
		}
	}
	t.Logf("soak: %d organizations (%d another deployment's), %d events over the drive (%s); %d deliveries (%d events twice, %d moved out of order by up to 200 places, %d another deployment's) by 8 workers in %s: %.0f deliveries/s",
		len(orgs), len(orgs)/20, len(evs), driven.Round(time.Second), delivered, len(schedule)-len(evs), 2*moved, foreign, took.Round(time.Second), float64(delivered)/took.Seconds())
	t.Logf("soak: answers %v; %d DynamoDB reads and %d writes; %d answered 500 and were redelivered; latency p50 %s, p99 %s, max %s",
		outcomes, reads, writes, retried.Load(), latencies[len(latencies)/2].Round(time.Millisecond), latencies[len(latencies)*99/100].Round(time.Millisecond), latencies[len(latencies)-1].Round(time.Millisecond))
	if delivered != len(schedule) || delivered < target {
		t.Fatalf("%d deliveries answered of %d scheduled, want at least %d", delivered, len(schedule), target)
	}
	if n := outcomes["400"] + outcomes["503"] + outcomes["413"]; n != 0 {
		t.Fatalf("%d deliveries were refused: %v", n, outcomes)
	}

	rep := f.reconcile(billing.ReconcileOptions{})
	t.Logf("soak: reconcile compared %d organizations: %d differences", rep.Organizations, len(rep.Differences))
	if rep.Organizations != len(orgs)-len(orgs)/20 || len(rep.Differences) != 0 {
		for i, d := range rep.Differences {
			if i < 20 {
				t.Errorf("difference: %+v", d)
			}
		}
		t.Fatalf("reconcile after the soak: %d organizations, %d differences", rep.Organizations, len(rep.Differences))
	}
	for i := 19; i < len(orgs); i += 20 {
		if m := f.mirror(orgs[i].id); m.Customer != nil || m.Subscription != nil {
			t.Fatalf("another deployment's %s is in this mirror: %+v", orgs[i].id, m)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// allEvents returns every event the local Stripe made, oldest first, as
// the JSON Stripe delivers.
func (f *fixture) allEvents() [][]byte {
	f.t.Helper()
	var out [][]byte
	after := ""
	for {
		url := f.url + "/v1/events?limit=100"
		if after != "" {
			url += "&starting_after=" + after
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer sk_test_inspect")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			f.t.Fatal(err)
		}
		var page struct {
			Data    []json.RawMessage `json:"data"`
			HasMore bool              `json:"has_more"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			f.t.Fatal(err)
		}
		for _, raw := range page.Data {
			out = append(out, raw)
			var id struct{ ID string }
			_ = json.Unmarshal(raw, &id)
			after = id.ID
		}
		if !page.HasMore {
			break
		}
	}
	slices.Reverse(out)
	return out
}
