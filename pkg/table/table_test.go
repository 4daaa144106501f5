package table_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/table"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// newStore creates a fresh table on moto for one test.
func newStore(t *testing.T) *table.Store {
	t.Helper()
	return table.New(testenv.DynamoDB(t), testenv.NewTable(t))
}

func TestCustomer_SecondCreateForOrgIsConflict(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	first := table.Customer{OrgID: "org_1", CustomerID: "cus_A", CreatedAt: time.Unix(1700000000, 0).UTC()}
	if err := s.CreateCustomer(ctx, first); err != nil {
		t.Fatalf("first create: %v", err)
	}
	err := s.CreateCustomer(ctx, table.Customer{OrgID: "org_1", CustomerID: "cus_B", CreatedAt: time.Now()})
	if !errors.Is(err, table.ErrConditionFailed) {
		t.Fatalf("second create: got %v, want ErrConditionFailed", err)
	}
	got, err := s.GetCustomer(ctx, "org_1")
	if err != nil {
		t.Fatal(err)
	}
	if got != first {
		t.Fatalf("stored mapping changed: got %+v, want %+v", got, first)
	}
}

func TestCustomer_MissingOrgIsNotFound(t *testing.T) {
	s := newStore(t)
	_, err := s.GetCustomer(context.Background(), "org_nobody")
	if !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
}

func TestCustomer_ReverseLookupByStripeID(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.CreateCustomer(ctx, table.Customer{OrgID: "org_7", CustomerID: "cus_7"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.OrgForStripeID(ctx, "cus_7")
	if err != nil || got != "org_7" {
		t.Fatalf("OrgForStripeID(cus_7) = %q, %v; want org_7", got, err)
	}
	if _, err := s.OrgForStripeID(ctx, "cus_unknown"); !errors.Is(err, table.ErrNotFound) {
		t.Fatalf("unknown customer: got %v, want ErrNotFound", err)
	}
}

// TestApplyEvent_ConcurrentSnapshotsLeaveTheNewest delivers eight snapshots
// of one subscription at once, each of another second: whatever order they
// land in, the newest is what stays, and each other one either applied
// before it or was refused as stale.
func TestApplyEvent_ConcurrentSnapshotsLeaveTheNewest(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	start := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for {
				errs[i] = s.ApplyEvent(ctx, ev(fmt.Sprintf("evt_%d", i)), sub("org_1", "sub_1", int64(100+i), fmt.Sprintf("status_%d", i)), false)
				if !errors.Is(errs[i], table.ErrTransactionConflict) {
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil && !errors.Is(err, table.ErrStale) {
			t.Fatalf("snapshot %d: %v, want applied or ErrStale", i, err)
		}
	}
	m, err := s.GetMirror(ctx, "org_1")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Subscription; got == nil || got.Status != "status_7" || got.SourceTime != 107 {
		t.Fatalf("stored %+v, want the newest snapshot (status_7 at 107)", got)
	}
}

func sub(org, id string, t int64, status string) table.Change {
	return table.Change{Subscription: &table.SubscriptionSnapshot{OrgID: org, SubscriptionID: id, Status: status, Created: 1, SourceTime: t}}
}

func ev(id string) table.Event {
	return table.Event{EventID: id, Type: "customer.subscription.updated", ExpiresAt: 1}
}

func TestApplyEvent_FailedHalfWritesNothing(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.ApplyEvent(ctx, ev("evt_new"), sub("org_1", "sub_1", 200, "active"), false); err != nil {
		t.Fatal(err)
	}
	// An older snapshot: the event record alone would succeed, the snapshot
	// fails, so the transaction must leave neither behind.
	err := s.ApplyEvent(ctx, ev("evt_old"), sub("org_1", "sub_1", 100, "incomplete"), false)
	if !errors.Is(err, table.ErrStale) {
		t.Fatalf("got %v, want ErrStale", err)
	}
	m, _ := s.GetMirror(ctx, "org_1")
	if m.Subscription.Status != "active" {
		t.Fatalf("stored status %q, want active", m.Subscription.Status)
	}
	// evt_old was not recorded: offered again with a newer snapshot, it
	// applies. Had the first half been written, it would be a duplicate.
	if err := s.ApplyEvent(ctx, ev("evt_old"), sub("org_1", "sub_1", 300, "canceled"), false); err != nil {
		t.Fatalf("evt_old after the failed transaction: %v (was it half-written?)", err)
	}
}

func TestApplyEvent_SameSecondIsATieAndAllowEqualApplies(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.ApplyEvent(ctx, ev("evt_1"), sub("org_1", "sub_1", 200, "active"), false); err != nil {
		t.Fatal(err)
	}
	err := s.ApplyEvent(ctx, ev("evt_2"), sub("org_1", "sub_1", 200, "past_due"), false)
	var tie *table.TieError
	if !errors.As(err, &tie) || tie.SourceTime != 200 {
		t.Fatalf("same-second snapshot: got %v, want a tie at 200", err)
	}
	if err := s.ApplyEvent(ctx, ev("evt_2"), sub("org_1", "sub_1", 200, "past_due"), true); err != nil {
		t.Fatalf("re-fetched snapshot at the tie: %v", err)
	}
	m, _ := s.GetMirror(ctx, "org_1")
	if m.Subscription.Status != "past_due" {
		t.Fatalf("status %q", m.Subscription.Status)
	}
}

func TestApplyEvent_DuplicateEventIsReported(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.ApplyEvent(ctx, ev("evt_1"), sub("org_1", "sub_1", 100, "active"), false); err != nil {
		t.Fatal(err)
	}
	err := s.ApplyEvent(ctx, ev("evt_1"), sub("org_1", "sub_1", 500, "canceled"), false)
	if !errors.Is(err, table.ErrDuplicateEvent) {
		t.Fatalf("got %v, want ErrDuplicateEvent", err)
	}
	m, _ := s.GetMirror(ctx, "org_1")
	if m.Subscription.SourceTime != 100 {
		t.Fatalf("a duplicate changed the mirror: source_time %d", m.Subscription.SourceTime)
	}
}

func TestApplyEvent_OlderSubscriptionDoesNotReplaceANewerOne(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	newer := table.Change{Subscription: &table.SubscriptionSnapshot{OrgID: "org_1", SubscriptionID: "sub_new", Status: "active", Created: 2000, SourceTime: 2000}}
	if err := s.ApplyEvent(ctx, ev("evt_a"), newer, false); err != nil {
		t.Fatal(err)
	}
	late := table.Change{Subscription: &table.SubscriptionSnapshot{OrgID: "org_1", SubscriptionID: "sub_old", Status: "canceled", Created: 1000, SourceTime: 3000}}
	if err := s.ApplyEvent(ctx, ev("evt_b"), late, false); !errors.Is(err, table.ErrStale) {
		t.Fatalf("a late event of the org's old subscription: %v, want ErrStale", err)
	}
}

func TestGetMirror_ReadsCustomerAndSubscriptionInOneQuery(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.CreateCustomer(ctx, table.Customer{OrgID: "org_1", CustomerID: "cus_1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyEvent(ctx, ev("evt_1"), sub("org_1", "sub_1", 10, "past_due"), false); err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMirror(ctx, "org_1")
	if err != nil || m.Customer.CustomerID != "cus_1" || m.Subscription.SubscriptionID != "sub_1" || !m.Subscription.Delinquent() {
		t.Fatalf("mirror %+v %+v %v", m.Customer, m.Subscription, err)
	}
	empty, err := s.GetMirror(ctx, "org_nobody")
	if err != nil || empty.Customer != nil || empty.Subscription != nil {
		t.Fatalf("unknown org: %+v %v", empty, err)
	}
}

func TestApplyEvent_SameSecondEqualSnapshotIsStaleNotATie(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.ApplyEvent(ctx, ev("evt_1"), sub("org_1", "sub_1", 200, "active"), false); err != nil {
		t.Fatal(err)
	}
	// The same state in the same second tells nothing new: no re-fetch.
	if err := s.ApplyEvent(ctx, ev("evt_2"), sub("org_1", "sub_1", 200, "active"), false); !errors.Is(err, table.ErrStale) {
		t.Fatalf("got %v, want ErrStale", err)
	}
}

func TestApplyEvent_AnInvoiceOfAnOlderSubscriptionDoesNotReplaceTheCurrentOnes(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	current := table.Change{Subscription: &table.SubscriptionSnapshot{OrgID: "org_1", SubscriptionID: "sub_new", Status: "active", Created: 500, SourceTime: 500}}
	if err := s.ApplyEvent(ctx, ev("evt_sub"), current, false); err != nil {
		t.Fatal(err)
	}
	invoice := func(sub, id string, created, at int64) table.Change {
		return table.Change{Invoice: &table.InvoiceSnapshot{OrgID: "org_1", SubscriptionID: sub, InvoiceID: id, Status: "paid", Created: created, SourceTime: at}}
	}
	if err := s.ApplyEvent(ctx, ev("evt_inv_new"), invoice("sub_new", "in_new", 500, 510), false); err != nil {
		t.Fatal(err)
	}
	// The old subscription's final invoice, made before the current one
	// began, arrives late with a newer event time.
	if err := s.ApplyEvent(ctx, ev("evt_inv_old"), invoice("sub_old", "in_old", 400, 600), false); !errors.Is(err, table.ErrStale) {
		t.Fatalf("an older subscription's invoice: %v, want ErrStale", err)
	}
	// A newer subscription's invoice, ahead of its subscription's event,
	// still lands.
	if err := s.ApplyEvent(ctx, ev("evt_inv_next"), invoice("sub_next", "in_next", 700, 700), false); err != nil {
		t.Fatalf("a newer subscription's invoice: %v", err)
	}
	m, _ := s.GetMirror(ctx, "org_1")
	if m.Subscription.LatestInvoiceID != "in_next" {
		t.Fatalf("latest invoice %s, want in_next", m.Subscription.LatestInvoiceID)
	}
}

func TestFinishRequest_DoesNotMakeAGoneRecordAgain(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.FinishRequest(ctx, "req_gone", `{"ok":true}`); !errors.Is(err, table.ErrConditionFailed) {
		t.Fatalf("finishing a request that has no record: %v, want ErrConditionFailed", err)
	}
	out, err := testenv.DynamoDB(t).GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.Name()),
		Key: map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "REQ#req_gone"}, "sk": &types.AttributeValueMemberS{Value: "REQUEST"}}})
	if err != nil || out.Item != nil {
		t.Fatalf("a record without a TTL was made: %v %v", out.Item, err)
	}
}

func TestRequest_AttemptsGoUpOnlyWhenReleasedForNewKeys(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	now := time.Now()
	r, err := s.BeginRequest(ctx, "req_a", "fp", now, time.Minute, time.Hour)
	if err != nil || r.Attempt != 1 || r.Retry {
		t.Fatalf("first: %+v %v", r, err)
	}
	if err := s.ReleaseRequest(ctx, "req_a", false); err != nil {
		t.Fatal(err)
	}
	if r, err = s.BeginRequest(ctx, "req_a", "fp", now, time.Minute, time.Hour); err != nil || r.Attempt != 1 || !r.Retry {
		t.Fatalf("after a release with the same keys: %+v %v", r, err)
	}
	if err := s.ReleaseRequest(ctx, "req_a", true); err != nil {
		t.Fatal(err)
	}
	if r, err = s.BeginRequest(ctx, "req_a", "fp", now, time.Minute, time.Hour); err != nil || r.Attempt != 2 || !r.Retry {
		t.Fatalf("after a release for new keys: %+v %v", r, err)
	}
	if _, err := s.BeginRequest(ctx, "req_a", "fp", now, time.Minute, time.Hour); !errors.Is(err, table.ErrRequestInProgress) {
		t.Fatalf("while leased: %v", err)
	}
}

func TestListProductMappings_SkipsTheCatalogsOtherRecords(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.PutProductMapping(ctx, table.ProductMapping{Key: "starter", Kind: "tier", ProductID: "prod_1", PriceID: "price_1", Active: true}); err != nil {
		t.Fatal(err)
	}
	drift := table.Change{Drift: &table.Drift{Key: "starter", ObjectID: "prod_1", EventType: "product.updated", At: 1}}
	if err := s.ApplyEvent(ctx, ev("evt_drift"), drift, false); err != nil {
		t.Fatal(err)
	}
	if err := s.NextCatalogKeys(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListProductMappings(ctx)
	if err != nil || len(got) != 1 || got[0].Key != "starter" {
		t.Fatalf("mappings %+v %v, want the one product mapping", got, err)
	}
	if gen, err := s.CatalogKeys(ctx); err != nil || gen != 1 {
		t.Fatalf("key generation %d %v, want 1", gen, err)
	}
}

func TestApplySubscriptionAnswer_OneWriteOrEachPartOnItsOwn(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	sub := func(status string, at int64) *table.SubscriptionSnapshot {
		return &table.SubscriptionSnapshot{OrgID: "org_1", SubscriptionID: "sub_1", Status: status, Created: 100, SourceTime: at}
	}
	inv := func(id, status string, at int64) *table.InvoiceSnapshot {
		return &table.InvoiceSnapshot{OrgID: "org_1", SubscriptionID: "sub_1", InvoiceID: id, Status: status, Created: 100, SourceTime: at,
			Payment: table.Payment{Status: "requires_payment_method", ClientSecret: "pi_1_secret"}}
	}
	// Both parts new: one write, returned as stored.
	got, err := s.ApplySubscriptionAnswer(ctx, sub("incomplete", 100), inv("in_1", "open", 100), time.Now())
	if err != nil || got == nil || got.Status != "incomplete" || got.LatestInvoiceID != "in_1" || got.Payment.ClientSecret != "pi_1_secret" || got.Version != 1 {
		t.Fatalf("first answer: %+v %v", got, err)
	}
	// A webhook already brought a newer invoice: the subscription part
	// still lands, the invoice part does not replace the newer one.
	if _, err := s.ApplyChange(ctx, table.Change{Invoice: inv("in_1", "paid", 300)}, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	got, err = s.ApplySubscriptionAnswer(ctx, sub("active", 200), inv("in_1", "open", 200), time.Now())
	if err != nil || got == nil || got.Status != "active" || got.LatestInvoiceStatus != "paid" {
		t.Fatalf("with a newer invoice stored: %+v %v", got, err)
	}
	// A newer subscription state stored: stale, and the stored record back.
	got, err = s.ApplySubscriptionAnswer(ctx, sub("past_due", 150), nil, time.Now())
	if !errors.Is(err, table.ErrStale) || got == nil || got.Status != "active" {
		t.Fatalf("an older answer: %+v %v, want ErrStale and the stored record", got, err)
	}
	m, _ := s.GetMirror(ctx, "org_1")
	if m.Subscription.Status != "active" || m.Subscription.LatestInvoiceStatus != "paid" {
		t.Fatalf("stored: %+v", m.Subscription)
	}
}

func TestBeginClaimedRequest_TakesTheRequestAndTheClaimTogetherOrNeither(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	now := time.Now()
	if _, err := s.BeginClaimedRequest(ctx, "req_a", "fp", "org_1", now, time.Minute, time.Hour); err != nil {
		t.Fatalf("first: %v", err)
	}
	_, _, r, err := s.ReadClaimed(ctx, "org_1", "req_a", nil)
	if err != nil || r.Attempt != 1 || r.Retry {
		t.Fatalf("read after the first begin: %+v %v", r, err)
	}
	// Another request for the organization meets the claim; it is not
	// begun, so it can begin once the claim is released.
	if _, err := s.BeginClaimedRequest(ctx, "req_b", "fp", "org_1", now, time.Minute, time.Hour); !errors.Is(err, table.ErrClaimed) {
		t.Fatalf("a second request while the first holds the claim: %v, want ErrClaimed", err)
	}
	if err := s.FinishClaimedRequest(ctx, "req_a", "org_1", `{"ok":true}`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginClaimedRequest(ctx, "req_b", "fp", "org_1", now, time.Minute, time.Hour); err != nil {
		t.Fatalf("the second after the first finished: %v", err)
	}
	// The finished one replays; its claim is gone with its answer.
	r, err = s.BeginClaimedRequest(ctx, "req_a", "fp", "org_1", now, time.Minute, time.Hour)
	if err != nil || !r.Done || r.Result != `{"ok":true}` {
		t.Fatalf("the first again: %+v %v, want its answer to replay", r, err)
	}
	// An invocation that died: its lease lapses, the retry begins again
	// and reads that it is one.
	later := now.Add(2 * time.Minute)
	if _, err := s.BeginClaimedRequest(ctx, "req_b", "fp", "org_1", later, time.Minute, time.Hour); err != nil {
		t.Fatalf("a retry after the lease lapsed: %v", err)
	}
	if _, _, r, _ := s.ReadClaimed(ctx, "org_1", "req_b", nil); r.Attempt != 1 || !r.Retry {
		t.Fatalf("the retry reads %+v, want attempt 1 and Retry", r)
	}
	if _, err := s.BeginClaimedRequest(ctx, "req_b", "other", "org_1", later.Add(2*time.Minute), time.Minute, time.Hour); !errors.Is(err, table.ErrRequestMismatch) {
		t.Fatalf("other fields: %v, want ErrRequestMismatch", err)
	}
}

func TestWriteUsage_AnAdditionKeepsTheStoredTermsUnlessItSetsThem(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	now := time.Now()
	write := func(add table.SpendAdd) (table.UsageConflict, error) {
		return s.WriteUsage(ctx, []table.UsageWrite{{OrgID: "org_1", Add: &add}}, now, time.Hour)
	}
	spend := func() table.Spend {
		t.Helper()
		sp, err := s.GetSpend(ctx, "org_1")
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	if _, err := write(table.SpendAdd{PeriodStart: 1000, PeriodEnd: 2000, Amount: "1.5", Currency: "usd", TierCap: 100, Rollover: true}); err != nil {
		t.Fatal(err)
	}
	// Terms not set: the amount grows, the stored terms stay.
	if _, err := write(table.SpendAdd{PeriodStart: 1000, PeriodEnd: 3000, Amount: "2", Currency: "eur", TierCap: 999}); err != nil {
		t.Fatal(err)
	}
	if sp := spend(); sp.Amount != "3.5" || sp.PeriodEnd != 2000 || sp.Currency != "usd" || sp.TierCap != 100 {
		t.Fatalf("after an addition alone: %+v", sp)
	}
	if _, err := write(table.SpendAdd{PeriodStart: 1000, PeriodEnd: 2000, Amount: "0.25", Currency: "usd", TierCap: 500, SetTerms: true}); err != nil {
		t.Fatal(err)
	}
	if sp := spend(); sp.Amount != "3.75" || sp.TierCap != 500 {
		t.Fatalf("after an addition with the terms: %+v", sp)
	}
	// Either way the addition holds only for the record's period.
	for _, setTerms := range []bool{false, true} {
		conflict, err := write(table.SpendAdd{PeriodStart: 900, PeriodEnd: 1000, Amount: "1", Currency: "usd", TierCap: 500, SetTerms: setTerms})
		if !errors.Is(err, table.ErrConditionFailed) || !conflict.SpendMoved["org_1"] || conflict.Spends["org_1"].Amount != "3.75" {
			t.Fatalf("an addition to another period (terms %v): %v, %+v", setTerms, err, conflict)
		}
	}
}
