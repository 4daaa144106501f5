package billing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

// TestReconcile_AtScale seeds organizations in the local Stripe (a tenth
// of them another deployment's) and this namespace's in the mirror, drifts
// a few, and runs one reconcile pass at the default rate, step after step
// of the default page size. It finds exactly the drifted organizations
// and compares every one of this namespace's once, and logs its cost:
// make bench runs it with RECONCILE_SCALE_ORGS=20000 and projects a
// million from it; make test runs 200.
func TestReconcile_AtScale(t *testing.T) {
	t.Parallel()
	total := 200
	if v := os.Getenv("RECONCILE_SCALE_ORGS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			t.Fatalf("RECONCILE_SCALE_ORGS=%q: want an integer of at least 100", v)
		}
		total = n
	}
	foreign := total / 10
	ours := total - foreign
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	business, _ := f.store.GetProductMapping(context.Background(), "business")

	seeded := time.Now()
	subs := make([]*stripe.Subscription, ours)
	for i := range total {
		meta := map[string]string{"org_id": fmt.Sprintf("org_s%05d", i), "billing_namespace": ns}
		if i >= ours {
			meta["billing_namespace"] = "someone-else"
		}
		raw, err := f.stripe.SeedOrganization(meta, false, business.PriceID)
		if err != nil {
			t.Fatal(err)
		}
		if i < ours {
			b, _ := json.Marshal(raw)
			if err := json.Unmarshal(b, &subs[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The first ten organizations' mirrors are written as the webhook
	// writes them, the rest in batches of the same records: the pass must
	// find both alike.
	for i := range min(10, ours) {
		if err := billing.MirrorFromStripe(context.Background(), f.store, fmt.Sprintf("org_s%05d", i), subs[i]); err != nil {
			t.Fatal(err)
		}
	}
	var items []map[string]ddbtypes.AttributeValue
	for i := 10; i < ours; i++ {
		org := fmt.Sprintf("org_s%05d", i)
		key := func(sk string) map[string]ddbtypes.AttributeValue {
			return map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "ORG#" + org}, "sk": &ddbtypes.AttributeValueMemberS{Value: sk}}
		}
		c, _ := attributevalue.MarshalMap(table.Customer{OrgID: org, CustomerID: subs[i].Customer.ID, CreatedAt: time.Now().UTC()})
		rec, _ := attributevalue.MarshalMap(billing.MirrorRecord(org, subs[i]))
		maps.Copy(c, key("CUSTOMER"))
		c["stripe_id"] = &ddbtypes.AttributeValueMemberS{Value: subs[i].Customer.ID}
		maps.Copy(rec, key("SUBSCRIPTION"))
		items = append(items, c, rec)
	}
	db := testenv.DynamoDB(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for start := w * 25; start < len(items); start += 4 * 25 {
				var reqs []ddbtypes.WriteRequest
				for _, it := range items[start:min(start+25, len(items))] {
					reqs = append(reqs, ddbtypes.WriteRequest{PutRequest: &ddbtypes.PutRequest{Item: it}})
				}
				out, err := db.BatchWriteItem(context.Background(), &dynamodb.BatchWriteItemInput{RequestItems: map[string][]ddbtypes.WriteRequest{f.store.Name(): reqs}})
				if err == nil && len(out.UnprocessedItems) > 0 {
					err = fmt.Errorf("moto left %d items unprocessed", len(out.UnprocessedItems))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	// Drift: one organization in a hundred lost its subscription's mirror.
	drifted := map[string]bool{}
	for i := 0; i < ours; i += 100 {
		org := fmt.Sprintf("org_s%05d", i)
		f.deleteMirrorItem(org, "SUBSCRIPTION")
		drifted[org] = true
	}
	t.Logf("reconcile at scale: seeded %d organizations in %s", total, time.Since(seeded).Round(time.Second))

	f.db.Reset()
	f.stripe.ResetCounts()
	began := time.Now()
	rep := f.reconcile(billing.ReconcileOptions{})
	took := time.Since(began)
	reads, writes := f.db.Reset()
	stripeReqs := 0
	for _, n := range f.stripe.Counts() {
		stripeReqs += n
	}
	if rep.Pass.Customers != int64(ours) || rep.Pass.Subscriptions != int64(ours) {
		t.Fatalf("the pass compared %d customers and %d subscriptions; this namespace has %d of each", rep.Pass.Customers, rep.Pass.Subscriptions, ours)
	}
	found := map[string]int{}
	for _, d := range rep.Differences {
		found[d.OrgID]++
		if !drifted[d.OrgID] || d.Field != "subscription" {
			t.Errorf("unexpected difference %+v", d)
		}
	}
	for org := range drifted {
		if found[org] != 1 {
			t.Errorf("%s: reported %d times, want once", org, found[org])
		}
	}
	if rep.Pass.StripeRequests != int64(stripeReqs) || rep.Pass.DynamoDBRequests != int64(reads+writes) {
		t.Errorf("the pass counted %d Stripe and %d DynamoDB requests; the servers saw %d and %d",
			rep.Pass.StripeRequests, rep.Pass.DynamoDBRequests, stripeReqs, reads+writes)
	}
	rate := float64(billing.DefaultReconcileRate)
	perOrg, ddbPerOrg := float64(stripeReqs)/float64(ours), float64(reads+writes)/float64(ours)
	msPerOrg := float64(took.Microseconds()) / 1000 / float64(ours)
	t.Logf("reconcile at scale: %d organizations (%d of another namespace) in %d steps in %s: %d differences; "+
		"%.4f Stripe and %.4f DynamoDB requests and %.3f ms per organization at %.0f requests/s; "+
		"a million: %.0f Stripe and %.0f DynamoDB requests, %.1f min at the rate, %.1f min at the measured pace",
		total, foreign, rep.Pass.Steps, took.Round(time.Millisecond), len(rep.Differences),
		perOrg, ddbPerOrg, msPerOrg, rate, perOrg*1e6, ddbPerOrg*1e6, perOrg*1e6/rate/60, msPerOrg*1e6/1000/60)
}
