package billing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/pkg/billing"
)

// soakSize is the number of webhook deliveries of the soak: 1,000 in
// `make test`, which still has duplicates, concurrent deliveries, events out
// of order and another deployment's events; SOAK_DELIVERIES sets it
// (`make soak` and `make bench` run 10,000).
func soakSize(t *testing.T) int {
	n := 1_000
	if v := os.Getenv("SOAK_DELIVERIES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			t.Fatalf("SOAK_DELIVERIES=%q: want an integer of at least 100", v)
		}
	}
	return n
}

// TestSoak_DeliveriesInAnyOrderThenReconcileFindsNoDifference drives
// one organization per 20 deliveries (40 to 200) through subscribe (5% of them another
// deployment's, on the same Stripe account) over months of the local
// Stripe's clock: tier changes, instance types, failed and paid renewals,
// cancellations. Then it delivers every event Stripe made, at least
// soakSize deliveries: 10% of events twice (half of those at the same moment), a
// fifth of the deliveries swapped with another up to 200 places away, by 8
// concurrent workers, each 500 redelivered as Stripe would. Reconcile then
// finds the mirror equal to Stripe.
func TestSoak_DeliveriesInAnyOrderThenReconcileFindsNoDifference(t *testing.T) {
	t.Parallel()
	target := soakSize(t)
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	other, _, _ := newService(t, "soak-other", f.url, nil) // its own table, as another deployment has
	other.SetMetricsOutput(io.Discard)
	if _, err := other.UpsertProducts(context.Background(), billing.UpsertRequest{}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))

	// Each organization is one of ours, or every 20th another deployment's.
	// One per 20 deliveries (40 to 200): the subscribes alone must leave
	// room for months of renewals, changes and cancellations.
	orgs := make([]soakOrg, min(200, max(40, target/20)))
	foreignOrgs := 0
	for i := range orgs {
		orgs[i] = soakOrg{fmt.Sprintf("org_%03d", i), f.svc}
		if i%20 == 19 {
			orgs[i].svc = other
			foreignOrgs++
		}
	}
	start := time.Now()
	f.soakDrive(rng, orgs, target*10/11) // 10% are delivered twice
	driven := time.Since(start)
	evs := f.allEvents()
	schedule, moved := soakSchedule(rng, evs, target)
	res := f.soakDeliver(schedule)

	delivered := len(res.latencies) - res.retried
	foreign := 0
	for _, d := range schedule {
		if bytes.Contains(d.payload, []byte(`"billing_namespace":"soak-other"`)) {
			foreign++
		}
	}
	lat := res.latencies
	t.Logf("soak: %d organizations (%d another deployment's), %d events over the drive (%s); %d deliveries (%d events twice, %d moved out of order by up to 200 places, %d another deployment's) by 8 workers in %s: %.0f deliveries/s",
		len(orgs), foreignOrgs, len(evs), driven.Round(time.Second), delivered, len(schedule)-len(evs), 2*moved, foreign, res.took.Round(time.Second), float64(delivered)/res.took.Seconds())
	t.Logf("soak: answers %v; %d DynamoDB reads and %d writes; %d answered 500 and were redelivered; latency p50 %s, p99 %s, max %s",
		res.outcomes, res.reads, res.writes, res.retried, lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	if delivered != len(schedule) || delivered < target {
		t.Fatalf("%d deliveries answered of %d scheduled, want at least %d", delivered, len(schedule), target)
	}
	if n := res.outcomes["400"] + res.outcomes["503"] + res.outcomes["413"]; n != 0 {
		t.Fatalf("%d deliveries were refused: %v", n, res.outcomes)
	}

	rep := f.reconcile(billing.ReconcileOptions{})
	t.Logf("soak: reconcile compared %d organizations: %d differences", rep.Organizations, len(rep.Differences))
	if rep.Organizations != len(orgs)-foreignOrgs || len(rep.Differences) != 0 {
		for i, d := range rep.Differences {
			if i < 20 {
				t.Errorf("difference: %+v", d)
			}
		}
		t.Fatalf("reconcile after the soak: %d organizations, %d differences", rep.Organizations, len(rep.Differences))
	}
	for _, o := range orgs {
		if o.svc != f.svc {
			if m := f.mirror(o.id); m.Customer != nil || m.Subscription != nil {
				t.Fatalf("another deployment's %s is in this mirror: %+v", o.id, m)
			}
		}
	}
}

// soakOrg is an organization of the soak and the deployment it belongs to.
type soakOrg struct {
	id  string
	svc *billing.Service
}

// soakStep is one subscribe request of an organization.
type soakStep struct {
	o soakOrg
	r map[string]any
}

// soakDelivery is one webhook delivery of the schedule.
type soakDelivery struct {
	payload  []byte
	withNext bool // sent at the same moment as the next delivery
}

// soakSchedule delivers every event once and 10% twice (half of those at
// the same moment), swaps a fifth of the deliveries with another up to 200
// places away, and tops the schedule up to target with duplicates of
// random events. It returns the schedule and the number of swaps.
func soakSchedule(rng *rand.Rand, evs [][]byte, target int) ([]soakDelivery, int) {
	var schedule []soakDelivery
	for _, ev := range evs {
		schedule = append(schedule, soakDelivery{payload: ev})
		if rng.IntN(10) == 0 {
			if rng.IntN(2) == 0 {
				schedule[len(schedule)-1].withNext = true // both copies at once
			}
			schedule = append(schedule, soakDelivery{payload: ev})
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
	for len(schedule) < target {
		schedule = append(schedule, soakDelivery{payload: evs[rng.IntN(len(evs))]})
	}
	return schedule, moved
}

// soakResult is what the deliveries of a soak got.
type soakResult struct {
	outcomes      map[string]int // webhook status, or the HTTP code of a refusal
	retried       int            // 500s, each delivered again
	latencies     []time.Duration
	took          time.Duration
	reads, writes int // DynamoDB requests
}

// soakRun sends each step's request to its deployment's subscribe, four at
// a time: the organizations are independent, and their order within a
// month does not matter.
func (f *fixture) soakRun(steps []soakStep) []billing.Response {
	f.t.Helper()
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
			f.t.Fatalf("%s %v: %+v %v", s.o.id, s.r["action"], answers[i].Error, failures[i])
		}
	}
	return answers
}

// soakDrive subscribes every organization, then lets months pass, with a
// few changes each month and every fifth month's renewals failing first,
// until the local Stripe has made events events. Decisions come from rng
// in order, so a run makes the same events every time.
func (f *fixture) soakDrive(rng *rand.Rand, orgs []soakOrg, events int) {
	f.t.Helper()
	start := time.Now()
	f.stripe.SetPaymentMode(stripelocal.PayEverything)
	types := []string{"gpu-t4", "gpu-a10g", "gpu-a100", "gpu-h100", "cpu-1x4", "cpu-8x32"}
	someTypes := func() []string {
		out := []string{}
		for _, ty := range types {
			if rng.IntN(3) == 0 {
				out = append(out, ty)
			}
		}
		return out
	}
	var subscribes []soakStep
	for i, o := range orgs {
		subscribes = append(subscribes, soakStep{o, req("subscribe", o.id, "tier", []string{"starter", "business"}[i%2], "email", o.id+"@example.com", "instance_types", someTypes())})
	}
	subscriptionID := map[string]string{}
	for i, resp := range f.soakRun(subscribes) {
		st, ok := resp.Result.(billing.Status)
		if !ok || st.Subscription == nil {
			f.t.Fatalf("subscribe %s answered %#v", orgs[i].id, resp.Result)
		}
		subscriptionID[orgs[i].id] = st.Subscription.ID
	}
	subscribed := time.Since(start)

	var advancing time.Duration
	canceled := map[string]bool{}
	for month := 0; f.stripe.EventCount() < events; month++ {
		var changes []soakStep
		for _, o := range orgs {
			if canceled[o.id] {
				continue
			}
			// Most months an organization changes nothing: its renewal
			// makes the events.
			switch rng.IntN(40) {
			case 0:
				changes = append(changes, soakStep{o, req("change_tier", o.id, "tier", []string{"starter", "business"}[rng.IntN(2)])})
			case 1, 2:
				changes = append(changes, soakStep{o, req("set_instance_types", o.id, "instance_types", someTypes())})
			case 3:
				if month > 1 {
					changes = append(changes, soakStep{o, req("cancel", o.id)})
					canceled[o.id] = true
				}
			}
		}
		f.soakRun(changes)
		failing := month%5 == 4
		// Payments are not the soak's subject: the explicit test control
		// pays every invoice, or leaves a month's renewals to be settled.
		f.stripe.SetPaymentMode(map[bool]string{false: stripelocal.PayEverything, true: stripelocal.PayNothing}[failing])
		t0 := time.Now()
		f.stripe.Advance(31 * 24 * time.Hour)
		advancing += time.Since(t0)
		if failing {
			for _, o := range orgs {
				if !canceled[o.id] {
					if err := f.stripe.Settle(subscriptionID[o.id], []string{"failed", "paid"}[rng.IntN(2)]); err != nil {
						f.t.Fatalf("settle %s: %v", o.id, err)
					}
				}
			}
		}
		if month > 40 {
			f.t.Fatalf("after %d months, only %d events", month, f.stripe.EventCount())
		}
	}
	f.stripe.SetPaymentMode(stripelocal.PayEverything)
	f.t.Logf("soak: drive: %s subscribing, %s advancing the clock", subscribed.Round(time.Second), advancing.Round(time.Second))
}

// soakDeliver sends the schedule to the webhook with 8 workers; a pair
// marked withNext goes at the same moment, and a 500 goes back to the
// queue, as Stripe retries.
func (f *fixture) soakDeliver(schedule []soakDelivery) soakResult {
	res := soakResult{outcomes: map[string]int{}}
	var mu sync.Mutex
	queue := make(chan []soakDelivery, len(schedule))
	for i := 0; i < len(schedule); i++ {
		batch := []soakDelivery{schedule[i]}
		if schedule[i].withNext && i+1 < len(schedule) {
			batch = append(batch, schedule[i+1])
			i++
		}
		queue <- batch
	}
	var pending sync.WaitGroup
	pending.Add(len(queue))
	f.db.Reset()
	start := time.Now()
	send := func(d soakDelivery) {
		t0 := time.Now()
		resp, _ := f.svc.HandleWebhook(context.Background(), events.APIGatewayV2HTTPRequest{Body: string(d.payload),
			Headers: map[string]string{"stripe-signature": signed(d.payload, fixtureSecret, time.Now())}})
		took := time.Since(t0)
		mu.Lock()
		defer mu.Unlock()
		res.latencies = append(res.latencies, took)
		switch resp.StatusCode {
		case http.StatusOK:
			var body struct{ Status string }
			_ = json.Unmarshal([]byte(resp.Body), &body)
			res.outcomes[body.Status]++
		case http.StatusInternalServerError:
			res.retried++
			pending.Add(1)
			queue <- []soakDelivery{d}
		default:
			res.outcomes[strconv.Itoa(resp.StatusCode)]++
		}
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
	res.took = time.Since(start)
	res.reads, res.writes = f.db.Reset()
	slices.Sort(res.latencies)
	return res
}
