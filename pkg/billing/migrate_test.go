package billing_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

// businessItems maps each of subs to its business item's price now.
func (f *fixture) businessPrices(subs []*stripe.Subscription) map[string]string {
	f.t.Helper()
	out := map[string]string{}
	for _, s := range subs {
		for _, it := range f.stripeSub(s.ID).Items.Data {
			if it.Price.Metadata["billing_key"] == "business" {
				out[s.ID] = it.Price.ID
			}
		}
	}
	return out
}

// A price change through upsert-products leaves 50 subscriptions on the
// old price. The dry run lists each move and writes nothing; the
// migration, in steps of a page of 10, loses an answer mid-run (the move
// made, the answer dropped through every retry) and its step fails; the
// step after it takes the page again, finds that subscription moved, and
// every subscription ends on the new price after exactly one change each,
// mirrored.
func TestMigratePrices_MovesFiftySubscriptionsOnceThroughAFaultAndARerun(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	subs := f.liveSubscriptions(50)
	old, _ := f.store.GetProductMapping(context.Background(), "business")
	cat := withEntry(billing.DefaultCatalog(), "business", func(e *billing.Entry) { e.UnitAmountDecimal = "59900" })
	f.upsert(billing.UpsertRequest{Catalog: &cat})
	current, _ := f.store.GetProductMapping(context.Background(), "business")
	if current.PriceID == old.PriceID {
		t.Fatal("upsert-products did not replace the price")
	}
	svc := f.tinySteps(10, "100", 300*time.Millisecond)

	// The dry run: every move, no write anywhere.
	f.db.Reset()
	f.stripe.ResetCounts()
	var plan []billing.PriceMove
	for page := ""; ; {
		rep, err := svc.MigratePrices(context.Background(), billing.MigrateRequest{DryRun: true, Page: page})
		if err != nil {
			t.Fatal(err)
		}
		plan = append(plan, rep.Moves...)
		if rep.Done {
			break
		}
		page = rep.NextPage
	}
	if _, writes := f.db.Reset(); writes != 0 {
		t.Fatalf("the dry run wrote %d times to DynamoDB", writes)
	}
	for route, n := range f.stripe.Counts() {
		if route != "GET /v1/subscriptions/search" && n > 0 {
			t.Fatalf("the dry run sent %s %d times", route, n)
		}
	}
	planned := map[string]bool{}
	for _, mv := range plan {
		if mv.Key != "business" || mv.OldPrice != old.PriceID || mv.NewPrice != current.PriceID || mv.OrgID == "" || mv.Outcome != "planned" {
			t.Fatalf("planned move %+v", mv)
		}
		planned[mv.SubscriptionID] = true
	}
	if len(plan) != 50 || len(planned) != 50 {
		t.Fatalf("the plan has %d moves for %d subscriptions, want 50", len(plan), len(planned))
	}

	// From here the webhook mirrors what changes (the 50 subscriptions'
	// making is left out: it costs the suite time and proves nothing here).
	f.gatewayFor()
	before := f.updateEvents()
	// The migration, with the 15th move made and its answer lost through
	// every retry.
	f.stripe.InjectFault(stripelocal.Fault{Kind: "drop", After: true, Skip: 14, Count: 10, Method: "POST", Path: "POST /v1/subscriptions/{id}"})
	var moved, failures, unchanged int
	var pass string
	for step := 0; ; step++ {
		if step > 100 {
			t.Fatal("the migration did not end in 100 steps")
		}
		rep, err := svc.MigratePrices(context.Background(), billing.MigrateRequest{})
		if err != nil {
			failures++
			if failures > 1 || billing.ErrorCode(err) != billing.CodeUnavailable {
				t.Fatalf("step %d: %v", step, err)
			}
			if f.stripe.ClearFaults() == 0 {
				t.Fatal("the fault was used up by the retries; it must outlast them")
			}
			continue
		}
		if pass != "" && rep.PassID != pass {
			t.Fatalf("step %d ran pass %s, not %s", step, rep.PassID, pass)
		}
		pass = rep.PassID
		for _, mv := range rep.Moves {
			if mv.Outcome != "moved" {
				t.Fatalf("move %+v", mv)
			}
		}
		moved += len(rep.Moves)
		unchanged += rep.Unchanged
		if rep.Done {
			if rep.Pass.Repaired != int64(moved) || rep.Pass.Differences != int64(moved) || rep.Pass.Subscriptions != 50 || rep.Pass.Steps != 5 {
				t.Fatalf("the pass counted %+v; the steps reported %d moves", rep.Pass, moved)
			}
			break
		}
	}
	// The failed step's moves (up to the lost answer) were made but not
	// counted: the step after it read those subscriptions on the new price
	// already, and moved the rest.
	if failures != 1 || moved >= 50 || unchanged != 0 {
		t.Fatalf("%d failed steps, %d moves, %d unchanged; want 1, fewer than 50 (the failed step's were made), 0", failures, moved, unchanged)
	}
	f.stripe.WaitDeliveries()
	for id, price := range f.businessPrices(subs) {
		if price != current.PriceID {
			t.Errorf("%s is on %s, not the current price", id, price)
		}
	}
	// One change each: one customer.subscription.updated per subscription.
	updated := map[string]int{}
	for ev, sub := range f.updateEvents() {
		if _, old := before[ev]; !old {
			updated[sub]++
		}
	}
	for _, s := range subs {
		if updated[s.ID] != 1 {
			t.Errorf("%s changed %d times, want once", s.ID, updated[s.ID])
		}
		if m := f.mirror(s.Metadata["org_id"]); m.Subscription == nil || !hasPrice(m.Subscription.Items, current.PriceID) {
			t.Errorf("the mirror of %s: %+v", s.Metadata["org_id"], m.Subscription)
		}
	}
	// A re-run after the pass: nothing left to move, nothing sent.
	f.stripe.ResetCounts()
	rep, err := svc.MigratePrices(context.Background(), billing.MigrateRequest{})
	for !rep.Done && err == nil {
		rep, err = svc.MigratePrices(context.Background(), billing.MigrateRequest{})
	}
	if err != nil || rep.Pass.Repaired != 0 || f.stripe.Counts()["POST /v1/subscriptions/{id}"] != 0 {
		t.Fatalf("the re-run: %+v %v", rep, err)
	}
}

// updateEvents maps each customer.subscription.updated event to its
// subscription.
func (f *fixture) updateEvents() map[string]string {
	f.t.Helper()
	out := map[string]string{}
	it := f.sc().Events.List(&stripe.EventListParams{Type: stripe.String("customer.subscription.updated")})
	for it.Next() {
		var sub stripe.Subscription
		if err := json.Unmarshal(it.Event().Data.Raw, &sub); err != nil {
			f.t.Fatal(err)
		}
		out[it.Event().ID] = sub.ID
	}
	if err := it.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func hasPrice(items []table.Item, price string) bool {
	for _, it := range items {
		if it.PriceID == price {
			return true
		}
	}
	return false
}

// A subscription someone changes between the migration's search page and
// its move is read again and kept as they left it: here its tier moved to
// starter while the migration's read of it was on its way.
func TestMigratePrices_ASubscriptionChangedMidRunIsReadAgainNotOverwritten(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	subs := f.liveSubscriptions(3)
	cat := withEntry(billing.DefaultCatalog(), "business", func(e *billing.Entry) { e.UnitAmountDecimal = "59900" })
	f.upsert(billing.UpsertRequest{Catalog: &cat})
	starter, _ := f.store.GetProductMapping(context.Background(), "starter")
	current, _ := f.store.GetProductMapping(context.Background(), "business")
	svc := f.tinySteps(10, "100", time.Second)
	// The first read again (of the newest subscription) waits a second.
	f.stripe.InjectFault(stripelocal.Fault{Kind: "delay", DelayMS: 1000, Count: 1, Method: "GET", Path: "GET /v1/subscriptions/{id}"})
	done := make(chan billing.MigrateReport)
	go func() {
		rep, err := svc.MigratePrices(context.Background(), billing.MigrateRequest{})
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	for f.stripe.Counts()["GET /v1/subscriptions/{id}"] == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	newest := f.stripeSub(subs[2].ID)
	if _, err := f.sc().Subscriptions.Update(newest.ID, &stripe.SubscriptionParams{ProrationBehavior: stripe.String("none"),
		Items: []*stripe.SubscriptionItemsParams{{ID: stripe.String(newest.Items.Data[0].ID), Price: stripe.String(starter.PriceID)}}}); err != nil {
		t.Fatal(err)
	}
	rep := <-done
	if !rep.Done || rep.Unchanged != 1 || len(rep.Moves) != 2 {
		t.Fatalf("report %+v: want 2 moves and the changed subscription left alone", rep)
	}
	prices := f.businessPrices(subs)
	if _, onBusiness := prices[newest.ID]; onBusiness || prices[subs[0].ID] != current.PriceID || prices[subs[1].ID] != current.PriceID {
		t.Fatalf("business prices after the migration %v: the changed subscription must stay on starter", prices)
	}
}

// itemPrices maps an organization's subscription items in Stripe by
// catalog key to their item and price IDs.
func (f *fixture) itemPrices(org string) map[string][2]string {
	f.t.Helper()
	out := map[string][2]string{}
	for _, it := range f.stripeSub(f.mirror(org).Subscription.SubscriptionID).Items.Data {
		out[it.Price.Metadata["billing_key"]] = [2]string{it.ID, it.Price.ID}
	}
	return out
}

// FIDELITY.md rules 18 and 19: Stripe bills none of a period's usage so
// far when a meter price is switched mid-period, so a migration moves the
// tier now and the metered item when the period renews, by a schedule.
// The period's 100 minutes are billed at the price they were recorded
// under; the next period runs on the new price; a re-run schedules
// nothing twice; the old price, active while the schedule was made, is
// archived again; and the schedule is released after the next period.
func TestMigratePrices_AMeteredItemMovesWhenItsPeriodRenews(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.gatewayFor() // the renewal reaches the mirror by its webhook
	f.upsert(billing.UpsertRequest{})
	f.mirrored(1, "org_m", "starter", "gpu-a10g")
	f.ok(req("record_usage", "org_m0", "instance_type", "gpu-a10g", "minutes", 100))
	before := f.itemPrices("org_m0")
	cat := withEntry(withEntry(billing.DefaultCatalog(), "starter", func(e *billing.Entry) { e.UnitAmountDecimal = "5900" }),
		"gpu-a10g", func(e *billing.Entry) { e.UnitAmountDecimal = "2.5000" })
	f.upsert(billing.UpsertRequest{Catalog: &cat})
	f.stripe.WaitDeliveries()
	starter, _ := f.store.GetProductMapping(context.Background(), "starter")
	a10g, _ := f.store.GetProductMapping(context.Background(), "gpu-a10g")

	rep, err := f.svc.MigratePrices(context.Background(), billing.MigrateRequest{})
	if err != nil || !rep.Done || len(rep.Moves) != 2 {
		t.Fatalf("migration: %+v %v", rep, err)
	}
	outcomes := map[string]string{}
	for _, mv := range rep.Moves {
		outcomes[mv.Key] = mv.When + " " + mv.Outcome
	}
	if outcomes["starter"] != "now moved" || outcomes["gpu-a10g"] != "period_end scheduled" {
		t.Fatalf("outcomes %v: want the tier moved now and the metered item scheduled for the period's end", outcomes)
	}
	after := f.itemPrices("org_m0")
	if after["starter"][1] != starter.PriceID || after["gpu-a10g"] != before["gpu-a10g"] {
		t.Fatalf("items after the migration %v (before %v): the tier on %s, the metered item unchanged until the period ends", after, before, starter.PriceID)
	}
	sub := f.stripeSub(f.mirror("org_m0").Subscription.SubscriptionID)
	if sub.Schedule == nil || f.mirror("org_m0").Subscription.ScheduleID != sub.Schedule.ID {
		t.Fatalf("the mirror must know the schedule at once: Stripe %v, mirror %q", sub.Schedule, f.mirror("org_m0").Subscription.ScheduleID)
	}
	if old, err := f.sc().Prices.Get(before["gpu-a10g"][1], nil); err != nil || old.Active || old.Metadata["billing_reactivated"] != "" {
		t.Fatalf("the old price must be archived again when the pass ends: %+v %v", old, err)
	}
	f.stripe.WaitDeliveries()
	if n := f.driftRecords(); n != 0 {
		t.Fatalf("%d catalog drift records: the migration's own price changes are not drift", n)
	}
	if minutes := f.upcomingMinutes("org_m0", before["gpu-a10g"][1]); minutes != 100 {
		t.Fatalf("the upcoming invoice bills %d minutes of gpu-a10g at its old price, want 100", minutes)
	}
	again, err := f.svc.MigratePrices(context.Background(), billing.MigrateRequest{})
	if err != nil || len(again.Moves) != 0 || again.Unchanged != 1 {
		t.Fatalf("a re-run must find the move scheduled: %+v %v", again, err)
	}

	// The period renews: its usage is billed at the old price, the new
	// period runs on the new one, on the same item.
	f.stripe.Advance(32 * 24 * time.Hour)
	f.stripe.WaitDeliveries()
	renewed := f.stripeSub(sub.ID)
	inv := renewed.LatestInvoice
	if inv == nil {
		t.Fatal("no renewal invoice")
	}
	inv, _ = f.sc().Invoices.Get(inv.ID, nil)
	if want := int64(5900 + 201); inv.BillingReason != "subscription_cycle" || inv.AmountDue != want { // 100 × 2.0117 cents
		t.Fatalf("renewal invoice %s %d, want subscription_cycle %d: the new tier price and the period's usage at the old meter price", inv.BillingReason, inv.AmountDue, want)
	}
	if got := f.itemPrices("org_m0")["gpu-a10g"]; got != [2]string{before["gpu-a10g"][0], a10g.PriceID} {
		t.Fatalf("gpu-a10g after the renewal %v, want item %s on %s", got, before["gpu-a10g"][0], a10g.PriceID)
	}
	if f.mirror("org_m0").Subscription.Items == nil || !slices.ContainsFunc(f.mirror("org_m0").Subscription.Items, func(it table.Item) bool { return it.PriceID == a10g.PriceID }) {
		t.Fatalf("the mirror's items %+v must show the new price", f.mirror("org_m0").Subscription.Items)
	}
	// After the next period the schedule is released.
	f.stripe.Advance(32 * 24 * time.Hour)
	f.stripe.WaitDeliveries()
	if s := f.stripeSub(sub.ID); s.Schedule != nil || f.mirror("org_m0").Subscription.ScheduleID != "" {
		t.Fatalf("the schedule must be released after its last phase: Stripe %v, mirror %q", s.Schedule, f.mirror("org_m0").Subscription.ScheduleID)
	}
}

// The answer to a schedule's making is lost through every retry, so that
// step fails with the schedule made but not yet given its phases. The
// step after it takes the page again: the same pass's key replays the
// making, so the schedule is known for the migration's own and finished,
// not refused as someone else's nor made twice. Each subscription ends
// with one schedule that moves gpu-a10g at its period's end.
func TestMigratePrices_ALostScheduleAnswerIsFinishedByTheNextStep(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	subs := f.mirrored(3, "org_f", "starter", "gpu-a10g")
	cat := withEntry(billing.DefaultCatalog(), "gpu-a10g", func(e *billing.Entry) { e.UnitAmountDecimal = "2.5000" })
	f.upsert(billing.UpsertRequest{Catalog: &cat})
	a10g, _ := f.store.GetProductMapping(context.Background(), "gpu-a10g")
	svc := f.tinySteps(10, "100", 300*time.Millisecond)

	f.stripe.InjectFault(stripelocal.Fault{Kind: "drop", After: true, Skip: 1, Count: 10, Method: "POST", Path: "POST /v1/subscription_schedules"})
	failures, scheduled, unchanged := 0, 0, 0
	for step := 0; ; step++ {
		if step > 20 {
			t.Fatal("the migration did not end in 20 steps")
		}
		rep, err := svc.MigratePrices(context.Background(), billing.MigrateRequest{})
		if err != nil {
			failures++
			if failures > 1 || billing.ErrorCode(err) != billing.CodeUnavailable || f.stripe.ClearFaults() == 0 {
				t.Fatalf("step %d: %v (the fault must outlast the retries)", step, err)
			}
			continue
		}
		for _, mv := range rep.Moves {
			if mv.Outcome != "scheduled" {
				t.Fatalf("move %+v", mv)
			}
		}
		scheduled += len(rep.Moves)
		unchanged += rep.Unchanged
		if rep.Done {
			break
		}
	}
	// The failed step scheduled the first subscription before the lost
	// answer: the step after it finds that one scheduled already.
	if failures != 1 || scheduled != 2 || unchanged != 1 {
		t.Fatalf("%d failed steps, %d moves scheduled, %d unchanged; want 1, 2 and 1", failures, scheduled, unchanged)
	}
	made := map[string]int{}
	for it := f.sc().Events.List(&stripe.EventListParams{Type: stripe.String("subscription_schedule.created")}); it.Next(); {
		var sched stripe.SubscriptionSchedule
		if err := json.Unmarshal(it.Event().Data.Raw, &sched); err != nil {
			t.Fatal(err)
		}
		made[sched.Subscription.ID]++
	}
	for _, sub := range subs {
		p := &stripe.SubscriptionParams{}
		p.AddExpand("schedule")
		got, err := f.sc().Subscriptions.Get(sub.ID, p)
		if err != nil {
			t.Fatal(err)
		}
		sched := got.Schedule
		if made[sub.ID] != 1 || sched == nil || sched.Metadata["billing_namespace"] != ns || len(sched.Phases) != 2 ||
			!slices.ContainsFunc(sched.Phases[1].Items, func(it *stripe.SubscriptionSchedulePhaseItem) bool { return it.Price.ID == a10g.PriceID }) {
			t.Fatalf("%s: %d schedules made, the schedule %+v", sub.ID, made[sub.ID], sched)
		}
	}
}

// A schedule's update unsets what it leaves out of the current phase, on
// the subscription too (rule 19): the migration's current phase repeats
// the subscription's payment method and its trial, so a paying
// subscription keeps its card and a trialing one its trial, whose end is
// where the new prices begin.
func TestMigratePrices_KeepsTheSubscriptionsPaymentMethodAndTrial(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	paying := f.mirrored(1, "org_p", "starter", "gpu-a10g")[0]
	c, err := f.sc().Customers.Get(paying.Customer.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	pm := c.InvoiceSettings.DefaultPaymentMethod.ID
	if _, err := f.sc().Subscriptions.Update(paying.ID, &stripe.SubscriptionParams{DefaultPaymentMethod: stripe.String(pm)}); err != nil {
		t.Fatal(err)
	}
	f.ok(req("subscribe", "org_t", "tier", "starter", "email", "t@example.com", "instance_types", []string{"gpu-a10g"}, "trial_days", 14))
	trialing := f.stripeSub(f.mirror("org_t").Subscription.SubscriptionID)
	if trialing.Status != "trialing" {
		t.Fatalf("org_t: %s", trialing.Status)
	}
	cat := withEntry(billing.DefaultCatalog(), "gpu-a10g", func(e *billing.Entry) { e.UnitAmountDecimal = "2.5000" })
	f.upsert(billing.UpsertRequest{Catalog: &cat})

	rep, err := f.svc.MigratePrices(context.Background(), billing.MigrateRequest{})
	if err != nil || len(rep.Moves) != 2 || rep.Moves[0].Outcome != "scheduled" || rep.Moves[1].Outcome != "scheduled" {
		t.Fatalf("migration: %+v %v", rep, err)
	}
	if got := f.stripeSub(paying.ID).DefaultPaymentMethod; got == nil || got.ID != pm {
		t.Fatalf("the paying subscription's payment method after the migration: %v, want %s", got, pm)
	}
	p := &stripe.SubscriptionParams{}
	p.AddExpand("schedule")
	after, err := f.sc().Subscriptions.Get(trialing.ID, p)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != "trialing" || after.TrialEnd != trialing.TrialEnd || after.Schedule == nil || after.Schedule.Phases[1].StartDate != trialing.TrialEnd {
		t.Fatalf("the trialing subscription after the migration: %s, trial end %d (was %d), schedule %+v", after.Status, after.TrialEnd, trialing.TrialEnd, after.Schedule)
	}
}

// A change the organization makes to a subscription whose instance type
// is scheduled to move releases the migration's schedule first: its next
// phase would undo the change, and Stripe refuses a cancellation on a
// scheduled subscription (rule 19). A subscription set to cancel has
// nothing to move at its period's end; once resumed, the next migration
// schedules again.
func TestMigratePrices_AChangeReleasesTheScheduleAndTheNextRunSchedulesAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	f.mirrored(1, "org_r", "starter", "gpu-a10g")
	cat := withEntry(billing.DefaultCatalog(), "gpu-a10g", func(e *billing.Entry) { e.UnitAmountDecimal = "2.5000" })
	f.upsert(billing.UpsertRequest{Catalog: &cat})
	if rep, err := f.svc.MigratePrices(context.Background(), billing.MigrateRequest{}); err != nil || len(rep.Moves) != 1 || rep.Moves[0].Outcome != "scheduled" {
		t.Fatalf("migration: %+v %v", rep, err)
	}
	first := f.mirror("org_r0").Subscription.ScheduleID

	f.ok(req("cancel", "org_r0"))
	sub := f.stripeSub(f.mirror("org_r0").Subscription.SubscriptionID)
	if !sub.CancelAtPeriodEnd || sub.Schedule != nil {
		t.Fatalf("cancel at the period's end on a scheduled subscription: cancel_at_period_end %v, schedule %v", sub.CancelAtPeriodEnd, sub.Schedule)
	}
	if sched, err := f.sc().SubscriptionSchedules.Get(first, nil); err != nil || sched.Status != stripe.SubscriptionScheduleStatusReleased {
		t.Fatalf("the migration's schedule must be released: %+v %v", sched, err)
	}
	// While it ends at the period's end there is nothing to move: a
	// schedule would carry it on.
	if rep, err := f.svc.MigratePrices(context.Background(), billing.MigrateRequest{}); err != nil || len(rep.Moves) != 0 {
		t.Fatalf("a migration of a subscription set to cancel: %+v %v", rep, err)
	}
	f.ok(req("resume", "org_r0"))
	rep, err := f.svc.MigratePrices(context.Background(), billing.MigrateRequest{})
	if err != nil || len(rep.Moves) != 1 || rep.Moves[0].Outcome != "scheduled" {
		t.Fatalf("the next migration must schedule the move again: %+v %v", rep, err)
	}
	if again := f.mirror("org_r0").Subscription.ScheduleID; again == "" || again == first {
		t.Fatalf("a new schedule: %q (the first was %q)", again, first)
	}
}

// driftRecords counts the catalog drift the webhook flagged.
func (f *fixture) driftRecords() int {
	f.t.Helper()
	out, err := testenv.DynamoDB(f.t).Query(context.Background(), &dynamodb.QueryInput{TableName: aws.String(f.store.Name()),
		KeyConditionExpression:    aws.String("pk = :pk AND begins_with(sk, :d)"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":pk": &ddbtypes.AttributeValueMemberS{Value: "CATALOG"}, ":d": &ddbtypes.AttributeValueMemberS{Value: "DRIFT#"}}})
	if err != nil {
		f.t.Fatal(err)
	}
	return len(out.Items)
}

// upcomingMinutes is the quantity the organization's upcoming invoice
// bills at price.
func (f *fixture) upcomingMinutes(org, price string) int64 {
	f.t.Helper()
	inv, err := f.sc().Invoices.Upcoming(&stripe.InvoiceUpcomingParams{Customer: stripe.String(f.mirror(org).Customer.CustomerID)})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, l := range inv.Lines.Data {
		if l.Price != nil && l.Price.ID == price {
			return l.Quantity
		}
	}
	return -1
}

// A type set_instance_types keeps stays on its price after
// upsert-products replaced it (rule 18); a type it adds takes the current
// price.
func TestSetInstanceTypes_KeepsAKeptTypeOnItsPrice(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	f.mirrored(1, "org_k", "starter", "gpu-a10g")
	before := f.itemPrices("org_k0")
	cat := withEntry(billing.DefaultCatalog(), "gpu-a10g", func(e *billing.Entry) { e.UnitAmountDecimal = "2.5000" })
	f.upsert(billing.UpsertRequest{Catalog: &cat})
	t4, _ := f.store.GetProductMapping(context.Background(), "gpu-t4")
	f.ok(req("set_instance_types", "org_k0", "instance_types", []string{"gpu-a10g", "gpu-t4"}))
	after := f.itemPrices("org_k0")
	if after["gpu-a10g"] != before["gpu-a10g"] || after["gpu-t4"][1] != t4.PriceID {
		t.Fatalf("items %v (before %v): gpu-a10g must keep its item and price, gpu-t4 take %s", after, before, t4.PriceID)
	}
}
