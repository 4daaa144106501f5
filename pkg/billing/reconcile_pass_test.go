package billing_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

// reconcile runs a whole reconcile pass, step after step as the state
// machine does, and returns the steps' reports merged.
func (f *fixture) reconcile(opts billing.ReconcileOptions) billing.ReconcileReport {
	f.t.Helper()
	return reconcilePass(f.t, f.svc, opts)
}

func reconcilePass(t testing.TB, svc *billing.Service, opts billing.ReconcileOptions) billing.ReconcileReport {
	t.Helper()
	all := billing.ReconcileReport{Differences: []billing.Difference{}}
	for step := 0; ; step++ {
		if step > 1000 {
			t.Fatal("reconcile: the pass did not end in 1000 steps")
		}
		rep, err := svc.Reconcile(context.Background(), opts)
		if err != nil {
			t.Fatalf("reconcile step %d: %v", step, err)
		}
		if all.PassID != "" && rep.PassID != all.PassID {
			t.Fatalf("reconcile step %d ran pass %s, not %s", step, rep.PassID, all.PassID)
		}
		all.PassID, all.Phase, all.Done, all.Pass = rep.PassID, rep.Phase, rep.Done, rep.Pass
		all.Organizations += rep.Organizations
		all.Subscriptions += rep.Subscriptions
		all.Differences = append(all.Differences, rep.Differences...)
		all.Remaining = append(all.Remaining, rep.Remaining...)
		all.Repaired += rep.Repaired
		if rep.Replay != nil {
			all.Replay = rep.Replay
		}
		if rep.Done {
			return all
		}
	}
}

// tinySteps is a Service on f's Stripe and table whose reconcile steps
// each read one search page of size pages, at rate requests a second.
func (f *fixture) tinySteps(size int, rate string, lease time.Duration) *billing.Service {
	f.t.Helper()
	env := map[string]string{
		"STAGE": "dev", "BILLING_NAMESPACE": ns, "TABLE_NAME": f.store.Name(),
		"STRIPE_API_KEY": "sk_test_fixture", "STRIPE_PUBLISHABLE_KEY": "pk_test_fixture",
		"STRIPE_ENDPOINT_SECRET": "whsec_fixture", "STRIPE_API_BASE": f.url,
		"RECONCILE_PAGE_SIZE": fmt.Sprint(size), "RECONCILE_STEP_TIME": "1ms", "RECONCILE_RATE": rate,
	}
	cfg, err := billing.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		f.t.Fatal(err)
	}
	cfg.ReconcileLease = lease
	svc := billing.NewService(cfg, billing.NewKeySource(cfg, nil), table.New(f.db, f.store.Name()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	svc.SetMetricsOutput(io.Discard)
	return svc
}

func (f *fixture) deleteMirrorItem(org, sk string) {
	f.t.Helper()
	if _, err := testenv.DynamoDB(f.t).DeleteItem(context.Background(), &dynamodb.DeleteItemInput{TableName: aws.String(f.store.Name()), Key: map[string]ddbtypes.AttributeValue{
		"pk": &ddbtypes.AttributeValueMemberS{Value: "ORG#" + org}, "sk": &ddbtypes.AttributeValueMemberS{Value: sk}}}); err != nil {
		f.t.Fatal(err)
	}
}

// A pass crosses many steps (one search page of two each), one of them
// killed in the middle of a page, and still compares each organization of
// this namespace exactly once, and none of another's: the cursor and the
// counts move together after a page, and only the lease's holder moves
// them.
func TestReconcile_APassCrossesManyStepsAndComparesEachOrganizationOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	var orgs []string
	for i := range 5 {
		orgs = append(orgs, fmt.Sprintf("org_p%d", i))
	}
	f.mirrored(5, "org_p", "business")
	f.seed(3, "org_p", "someone-else", true, "business") // the same organization IDs, another deployment's
	// Every organization's mirror lost its subscription: each must show
	// exactly one difference, once.
	for _, org := range orgs {
		f.deleteMirrorItem(org, "SUBSCRIPTION")
	}
	svc := f.tinySteps(2, "50", 300*time.Millisecond)

	// Steps until the subscriptions phase, then one killed mid-page: the
	// second confirming read of its page hangs past the invocation's end.
	var all []billing.Difference
	var steps int
	var pass string
	for {
		rep, err := svc.Reconcile(context.Background(), billing.ReconcileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		steps++
		pass = rep.PassID
		all = append(all, rep.Differences...)
		if rep.Phase == "subscriptions" && rep.Pass.Subscriptions == 2 {
			break
		}
	}
	f.stripe.InjectFault(stripelocal.Fault{Kind: "delay", DelayMS: 3000, Skip: 1, Count: 1, Path: "GET /v1/subscriptions/{id}"})
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	_, err := svc.Reconcile(ctx, billing.ReconcileOptions{})
	cancel()
	if err == nil {
		t.Fatal("the killed step succeeded")
	}
	// Its lease holds the pass: another step now is refused, and no
	// second pass starts.
	rep, err := svc.Reconcile(context.Background(), billing.ReconcileOptions{})
	if billing.ErrorCode(err) != billing.CodeConflict || !billing.AsError(err).Retryable {
		t.Fatalf("a step during another's lease: %+v, %v; want a retryable conflict", rep, err)
	}
	time.Sleep(400 * time.Millisecond)
	for {
		rep, err := svc.Reconcile(context.Background(), billing.ReconcileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		steps++
		if rep.PassID != pass {
			t.Fatalf("step %d ran pass %s, not %s: a second pass started", steps, rep.PassID, pass)
		}
		all = append(all, rep.Differences...)
		if rep.Done {
			if rep.Pass.Customers != 5 || rep.Pass.Subscriptions != 5 || rep.Pass.Steps != int64(steps) || rep.Pass.Differences != 5 {
				t.Fatalf("the pass counted %+v over %d steps; want 5 customers, 5 subscriptions, 5 differences", rep.Pass, steps)
			}
			if rep.Pass.StripeRequests < 6 || rep.Pass.DynamoDBRequests < int64(steps) {
				t.Fatalf("the pass counted %d Stripe and %d DynamoDB requests", rep.Pass.StripeRequests, rep.Pass.DynamoDBRequests)
			}
			break
		}
	}
	if steps < 6 {
		t.Fatalf("the pass took %d steps; pages of 2 need at least 6", steps)
	}
	seen := map[string]int{}
	for _, d := range all {
		if d.Field != "subscription" || d.Mirror != "" {
			t.Errorf("unexpected difference %+v", d)
		}
		seen[d.OrgID]++
	}
	for _, org := range orgs {
		if seen[org] != 1 {
			t.Errorf("%s reported %d times, want once", org, seen[org])
		}
	}
	if len(seen) != len(orgs) {
		t.Errorf("differences for %v; another deployment's organizations must not be compared", seen)
	}

	// The next run is a new pass, and finds nothing left after a repair.
	rep = reconcilePass(t, svc, billing.ReconcileOptions{Repair: true})
	if rep.PassID == pass || rep.Repaired != 5 || len(rep.Remaining) != 0 {
		t.Fatalf("repair pass %s: repaired %d, remaining %+v", rep.PassID, rep.Repaired, rep.Remaining)
	}
	if rep := reconcilePass(t, svc, billing.ReconcileOptions{}); len(rep.Differences) != 0 {
		t.Fatalf("after repair: %+v", rep.Differences)
	}
}

// A pass paces its Stripe requests, and waits out Stripe's 429s rather
// than failing: every page is still compared, and the 429s count in the
// pass's requests. A page token Stripe refuses starts its phase again.
func TestReconcile_PacesBacksOffOn429AndOutlivesARefusedPageToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	f.mirrored(3, "org_r", "business")
	svc := f.tinySteps(1, "5", time.Second)
	f.stripe.ResetCounts()
	f.stripe.InjectFault(stripelocal.Fault{Kind: "429", Count: 2, Path: "GET /v1/subscriptions/search"})
	began := time.Now()
	rep := reconcilePass(t, svc, billing.ReconcileOptions{})
	took := time.Since(began)
	if rep.Pass.Customers != 3 || rep.Pass.Subscriptions != 3 || len(rep.Differences) != 0 {
		t.Fatalf("pass %+v, differences %+v", rep.Pass, rep.Differences)
	}
	// Three pages each, plus the empty last page Stripe never needs: 6
	// searches answered, 2 refused.
	searches := f.stripe.Counts()["GET /v1/customers/search"] + f.stripe.Counts()["GET /v1/subscriptions/search"]
	if rep.Pass.StripeRequests != int64(searches) || searches != 8 {
		t.Fatalf("the pass counted %d Stripe requests; the local Stripe answered %d searches (want 8: 6 pages, 2 refused)", rep.Pass.StripeRequests, searches)
	}
	// At 5 a second, 8 requests span at least 7 intervals of 200 ms; the
	// two 429s in a row put the next request 250 and then 500 ms after
	// them, 50 and 300 ms past its slot.
	if floor := 7*200*time.Millisecond + 350*time.Millisecond; took < floor {
		t.Fatalf("the pass took %v, under the paced floor %v", took, floor)
	}

	// How long Stripe keeps a next_page token is not documented
	// (FIDELITY.md, rule 17): a refused token starts its phase again
	// rather than stopping the pass for good, and the pass still ends.
	f.deleteMirrorItem("org_r2", "SUBSCRIPTION")
	fast := f.tinySteps(2, "50", time.Second)
	// The second subscriptions page, the first sent with a token, is refused.
	f.stripe.InjectFault(stripelocal.Fault{Kind: "400", Count: 1, Skip: 1, Path: "GET /v1/subscriptions/search"})
	rep = reconcilePass(t, fast, billing.ReconcileOptions{})
	if rep.Pass.Customers != 3 || rep.Pass.Subscriptions != 5 {
		t.Fatalf("pass %+v: want 3 customers, and the 2 subscriptions of the first page compared again (5)", rep.Pass)
	}
	if d := fields(rep.Differences, "org_r2"); d["subscription"].Stripe == "" {
		t.Fatalf("differences %+v: want org_r2's missing subscription", rep.Differences)
	}
}

// Search lags writes (FIDELITY.md, rule 17): an organization made in the
// last minute is not yet in the pages, which is no difference (the next
// pass compares it), and a customer deleted in the last minute is still in
// them, as a live one, which the confirming read sets right.
func TestReconcile_SearchLagNeverReportsADifferenceThatIsNotThere(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	f.mirrored(1, "org_old", "business")
	f.stripe.SetSearchLag(time.Minute)
	f.stripe.Advance(2 * time.Minute)
	f.mirrored(1, "org_new", "business")
	rep := f.reconcile(billing.ReconcileOptions{})
	if rep.Pass.Customers != 1 || len(rep.Differences) != 0 {
		t.Fatalf("under lag: %+v, differences %+v; want org_old alone and no difference", rep.Pass, rep.Differences)
	}
	f.stripe.Advance(2 * time.Minute)
	if rep := f.reconcile(billing.ReconcileOptions{}); rep.Pass.Customers != 2 || len(rep.Differences) != 0 {
		t.Fatalf("once indexed: %+v, differences %+v", rep.Pass, rep.Differences)
	}
	// org_old's customer is deleted, and the webhook mirrors it; the
	// search still shows the customer as live for a while. The read that
	// confirms a proposed difference finds it deleted: nothing to report.
	f.gatewayFor()
	if _, err := f.sc().Customers.Del(f.mirror("org_old0").Customer.CustomerID, nil); err != nil {
		t.Fatal(err)
	}
	f.stripe.WaitDeliveries()
	if m := f.mirror("org_old0"); !m.Customer.Deleted {
		t.Fatalf("the webhook did not mirror the deletion: %+v", m.Customer)
	}
	f.stripe.ResetCounts()
	rep = f.reconcile(billing.ReconcileOptions{})
	if rep.Pass.Customers != 2 || len(rep.Differences) != 0 || f.stripe.Counts()["GET /v1/customers/{id}"] != 1 {
		t.Fatalf("a deleted customer the index still shows: %+v, differences %+v, %d customer reads (want the one confirming read)",
			rep.Pass, rep.Differences, f.stripe.Counts()["GET /v1/customers/{id}"])
	}
}
