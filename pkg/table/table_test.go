package table_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/table"
)

var db *dynamodb.Client

func TestMain(m *testing.M) {
	testenv.Main(m, func(motoURL string) { db = dynamodb.NewFromConfig(testenv.AWSConfig(motoURL)) })
}

// newStore creates a fresh table on moto for one test.
func newStore(t *testing.T) *table.Store {
	t.Helper()
	name := testenv.UniqueName(t, "billing")
	if err := table.CreateTable(context.Background(), db, name); err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	t.Cleanup(func() { _, _ = db.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: &name}) })
	return table.New(db, name)
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

func TestSubscription_ConcurrentGuardedUpdatesHaveOneWinner(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	base, err := s.SaveSubscription(ctx, table.Subscription{OrgID: "org_1", SubscriptionID: "sub_1", Status: "active", Tier: "starter"}, 0)
	if err != nil {
		t.Fatal(err)
	}

	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	start := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			next := base
			next.Tier = []string{"starter", "business"}[i%2]
			next.Status = "past_due"
			_, errs[i] = s.SaveSubscription(ctx, next, base.Version)
		}()
	}
	close(start)
	wg.Wait()

	winners := 0
	for _, err := range errs {
		switch {
		case err == nil:
			winners++
		case !errors.Is(err, table.ErrConditionFailed):
			t.Fatalf("a loser failed with %v, want ErrConditionFailed", err)
		}
	}
	if winners != 1 {
		t.Fatalf("winners = %d, want exactly 1", winners)
	}
	got, err := s.GetSubscription(ctx, "org_1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != base.Version+1 || got.Status != "past_due" {
		t.Fatalf("stored version %d status %q, want version %d status past_due", got.Version, got.Status, base.Version+1)
	}
}

func TestSubscription_SecondInitialSaveIsConflict(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if _, err := s.SaveSubscription(ctx, table.Subscription{OrgID: "org_1", SubscriptionID: "sub_1"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SaveSubscription(ctx, table.Subscription{OrgID: "org_1", SubscriptionID: "sub_2"}, 0); !errors.Is(err, table.ErrConditionFailed) {
		t.Fatalf("got %v, want ErrConditionFailed", err)
	}
}

func TestApplySubscriptionEvent_FailedHalfWritesNothing(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	newer := table.Subscription{OrgID: "org_1", SubscriptionID: "sub_1", Status: "active", SourceTime: 200}
	if _, err := s.ApplySubscriptionEvent(ctx, newer, table.Event{EventID: "evt_new", Type: "customer.subscription.updated", ExpiresAt: 1}); err != nil {
		t.Fatal(err)
	}

	// An older snapshot: the event record would succeed alone, the snapshot
	// write fails, so the transaction must leave neither behind.
	older := table.Subscription{OrgID: "org_1", SubscriptionID: "sub_1", Status: "incomplete", SourceTime: 100}
	_, err := s.ApplySubscriptionEvent(ctx, older, table.Event{EventID: "evt_old", Type: "customer.subscription.created", ExpiresAt: 1})
	if !errors.Is(err, table.ErrStaleSnapshot) || !errors.Is(err, table.ErrConditionFailed) {
		t.Fatalf("got %v, want ErrStaleSnapshot", err)
	}
	got, err := s.GetSubscription(ctx, "org_1")
	if err != nil || got.Status != "active" {
		t.Fatalf("stored status %q (%v), want active", got.Status, err)
	}

	// evt_old was not recorded: offered again with a newer snapshot, it
	// applies. Had the first half been written, it would be a duplicate.
	older.SourceTime = 300
	if _, err := s.ApplySubscriptionEvent(ctx, older, table.Event{EventID: "evt_old", Type: "customer.subscription.created", ExpiresAt: 1}); err != nil {
		t.Fatalf("evt_old after the failed transaction: %v (was it half-written?)", err)
	}
}

func TestApplySubscriptionEvent_SameSecondSnapshotIsStale(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	sub := table.Subscription{OrgID: "org_1", SubscriptionID: "sub_1", Status: "active", SourceTime: 200}
	if _, err := s.ApplySubscriptionEvent(ctx, sub, table.Event{EventID: "evt_1"}); err != nil {
		t.Fatal(err)
	}
	sub.Status = "canceled"
	if _, err := s.ApplySubscriptionEvent(ctx, sub, table.Event{EventID: "evt_2"}); !errors.Is(err, table.ErrStaleSnapshot) {
		t.Fatalf("same-second snapshot: got %v, want ErrStaleSnapshot (ties must not overwrite)", err)
	}
}

func TestApplySubscriptionEvent_DuplicateEventIsReported(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	ev := table.Event{EventID: "evt_1", Type: "customer.subscription.updated"}
	if _, err := s.ApplySubscriptionEvent(ctx, table.Subscription{OrgID: "org_1", SourceTime: 100}, ev); err != nil {
		t.Fatal(err)
	}
	_, err := s.ApplySubscriptionEvent(ctx, table.Subscription{OrgID: "org_1", SourceTime: 500}, ev)
	if !errors.Is(err, table.ErrDuplicateEvent) {
		t.Fatalf("got %v, want ErrDuplicateEvent", err)
	}
	got, _ := s.GetSubscription(ctx, "org_1")
	if got.SourceTime != 100 {
		t.Fatalf("a duplicate changed the mirror: source_time %d, want 100", got.SourceTime)
	}
}
