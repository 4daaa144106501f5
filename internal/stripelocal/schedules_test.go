package stripelocal_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
)

// FIDELITY.md rule 19: a schedule made from a subscription has one phase,
// the current period with the subscription's items; an update keeps the
// current phase's start and may add the next period on other prices; the
// refusals Stripe documents; at the renewal the period's usage is billed
// on the old price and the item moves to the new one, keeping its ID; the
// schedule is released after its last phase.
func TestSchedules_FromASubscriptionToTheNextPeriodsPrices(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := mustCustomer(t, e)
	sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}, {Price: stripe.String(cat.gpu.ID)}}})
	if err != nil {
		t.Fatal(err)
	}
	gpuItem := sub.Items.Data[1].ID

	withMetadata := &stripe.SubscriptionScheduleParams{FromSubscription: stripe.String(sub.ID)}
	withMetadata.AddMetadata("k", "v")
	if _, err := e.sc.SubscriptionSchedules.New(withMetadata); err == nil || !strings.Contains(stripeErr(t, err).Msg, "You cannot set `metadata` if `from_subscription` is set.") {
		t.Fatalf("metadata with from_subscription: %v", err)
	}
	sched, err := e.sc.SubscriptionSchedules.New(&stripe.SubscriptionScheduleParams{FromSubscription: stripe.String(sub.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if sched.Status != "active" || sched.EndBehavior != "release" || len(sched.Phases) != 1 ||
		sched.Phases[0].StartDate != sub.CurrentPeriodStart || sched.Phases[0].EndDate != sub.CurrentPeriodEnd || len(sched.Phases[0].Items) != 2 {
		t.Fatalf("schedule from the subscription: %+v", sched)
	}
	if _, err := e.sc.SubscriptionSchedules.New(&stripe.SubscriptionScheduleParams{FromSubscription: stripe.String(sub.ID)}); err == nil ||
		!strings.Contains(stripeErr(t, err).Msg, "already attached to a schedule") {
		t.Fatalf("a second schedule: %v", err)
	}
	if _, err := e.sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)}); err == nil ||
		!strings.Contains(stripeErr(t, err).Msg, "updating any cancelation behavior directly is not allowed") {
		t.Fatalf("cancel_at_period_end on a scheduled subscription: %v", err)
	}

	dearer, err := e.sc.Prices.New(&stripe.PriceParams{Product: stripe.String("gpu"), Currency: stripe.String("usd"), UnitAmountDecimal: stripe.Float64(9),
		Recurring: &stripe.PriceRecurringParams{Interval: stripe.String("month"), UsageType: stripe.String("metered"), Meter: stripe.String(cat.gpu.Recurring.Meter)}})
	if err != nil {
		t.Fatal(err)
	}
	phases := func(start int64, gpuNext string) *stripe.SubscriptionScheduleParams {
		return &stripe.SubscriptionScheduleParams{ProrationBehavior: stripe.String("none"), Phases: []*stripe.SubscriptionSchedulePhaseParams{
			{StartDate: stripe.Int64(start), EndDate: stripe.Int64(sub.CurrentPeriodEnd),
				Items: []*stripe.SubscriptionSchedulePhaseItemParams{{Price: stripe.String(cat.business.ID), Quantity: stripe.Int64(1)}, {Price: stripe.String(cat.gpu.ID)}}},
			{Iterations: stripe.Int64(1),
				Items: []*stripe.SubscriptionSchedulePhaseItemParams{{Price: stripe.String(cat.business.ID), Quantity: stripe.Int64(1)}, {Price: stripe.String(gpuNext)}}},
		}}
	}
	if _, err := e.sc.SubscriptionSchedules.Update(sched.ID, phases(sub.CurrentPeriodStart+60, dearer.ID)); err == nil ||
		!strings.Contains(stripeErr(t, err).Msg, "You can not modify the start date of the current phase") {
		t.Fatalf("moving the current phase's start: %v", err)
	}
	both := phases(sub.CurrentPeriodStart, dearer.ID)
	both.Phases[1].EndDate = stripe.Int64(sub.CurrentPeriodEnd + 3600)
	if _, err := e.sc.SubscriptionSchedules.Update(sched.ID, both); err == nil {
		t.Fatal("end_date and iterations together must be refused")
	}
	if _, err := e.sc.Prices.Update(cat.cpu.ID, &stripe.PriceParams{Active: stripe.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sc.SubscriptionSchedules.Update(sched.ID, phases(sub.CurrentPeriodStart, cat.cpu.ID)); err == nil ||
		!strings.Contains(stripeErr(t, err).Msg, "only accepts active prices") {
		t.Fatalf("an archived price in a phase: %v", err)
	}
	sched, err = e.sc.SubscriptionSchedules.Update(sched.ID, phases(sub.CurrentPeriodStart, dearer.ID))
	if err != nil {
		t.Fatal(err)
	}
	if len(sched.Phases) != 2 || sched.Phases[1].StartDate != sub.CurrentPeriodEnd || sched.Phases[1].EndDate <= sched.Phases[1].StartDate {
		t.Fatalf("phases: %+v", sched.Phases)
	}

	if _, err := e.sc.BillingMeterEvents.New(&stripe.BillingMeterEventParams{EventName: stripe.String("ns.gpu"),
		Payload: map[string]string{"stripe_customer_id": c.ID, "value": "100"}}); err != nil {
		t.Fatal(err)
	}
	e.srv.Advance(32 * 24 * time.Hour)
	renewed, err := e.sc.Subscriptions.Get(sub.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := e.sc.Invoices.Get(renewed.LatestInvoice.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(50000 + 450); inv.AmountDue != want || inv.BillingReason != "subscription_cycle" {
		t.Fatalf("renewal invoice %d (%s), want %d: the tier and the period's 100 minutes at the old 4.5¢", inv.AmountDue, inv.BillingReason, want)
	}
	if it := renewed.Items.Data[1]; it.ID != gpuItem || it.Price.ID != dearer.ID || renewed.Schedule == nil {
		t.Fatalf("after the renewal: item %s on %s (want %s on %s), schedule %v", it.ID, it.Price.ID, gpuItem, dearer.ID, renewed.Schedule)
	}
	e.srv.Advance(32 * 24 * time.Hour)
	if s, _ := e.sc.Subscriptions.Get(sub.ID, nil); s.Schedule != nil {
		t.Fatalf("the schedule must be released after its last phase: %v", s.Schedule)
	}
	if sched, _ = e.sc.SubscriptionSchedules.Get(sched.ID, nil); sched.Status != "released" || sched.ReleasedSubscription == nil || sched.ReleasedSubscription.ID != sub.ID {
		t.Fatalf("released schedule: %+v", sched)
	}
	if _, err := e.sc.SubscriptionSchedules.Release(sched.ID, nil); err == nil || !strings.Contains(stripeErr(t, err).Msg, "currently in the `released` status") {
		t.Fatalf("releasing a released schedule: %v", err)
	}
}

// Releasing a schedule leaves the subscription as it is, with nothing to
// stop a cancellation; canceling a scheduled subscription cancels its
// schedule (an inference, rule 19).
func TestSchedules_ReleaseAndCancel(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := mustCustomer(t, e)
	business := func() *stripe.SubscriptionParams {
		return &stripe.SubscriptionParams{Customer: stripe.String(c.ID), Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}}}
	}
	sub, sched := mustScheduled(t, e, business())
	released, err := e.sc.SubscriptionSchedules.Release(sched.ID, nil)
	if err != nil || released.Status != "released" || released.Subscription != nil || released.ReleasedSubscription.ID != sub.ID {
		t.Fatalf("release: %+v %v", released, err)
	}
	if s, err := e.sc.Subscriptions.Update(sub.ID, &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)}); err != nil || !s.CancelAtPeriodEnd || s.Schedule != nil {
		t.Fatalf("cancel at the period's end once released: %+v %v", s, err)
	}

	sub, sched = mustScheduled(t, e, business())
	if _, err := e.sc.Subscriptions.Cancel(sub.ID, nil); err != nil {
		t.Fatal(err)
	}
	if sched, _ = e.sc.SubscriptionSchedules.Get(sched.ID, nil); sched.Status != "canceled" || sched.CanceledAt == 0 {
		t.Fatalf("the schedule of a canceled subscription: %+v", sched)
	}
}

// An update passes the current phase whole: what it leaves out is unset,
// on the subscription too (rule 19). A payment method left out is gone
// from the subscription; a trial left out is refused (not modelled).
func TestSchedules_AnUpdateUnsetsWhatTheCurrentPhaseLeavesOut(t *testing.T) {
	e := newEnv(t)
	cat := mustCatalog(t, e)
	c := mustCustomer(t, e)
	pm := c.InvoiceSettings.DefaultPaymentMethod.ID
	sub, sched := mustScheduled(t, e, &stripe.SubscriptionParams{Customer: stripe.String(c.ID), DefaultPaymentMethod: stripe.String(pm),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}}})
	if got := sched.Phases[0].DefaultPaymentMethod; got == nil || got.ID != pm {
		t.Fatalf("the current phase's payment method %v, want the subscription's %s", got, pm)
	}
	update := func(pm string) {
		t.Helper()
		phase := &stripe.SubscriptionSchedulePhaseParams{StartDate: stripe.Int64(sub.CurrentPeriodStart), EndDate: stripe.Int64(sub.CurrentPeriodEnd),
			Items: []*stripe.SubscriptionSchedulePhaseItemParams{{Price: stripe.String(cat.business.ID), Quantity: stripe.Int64(1)}}}
		if pm != "" {
			phase.DefaultPaymentMethod = stripe.String(pm)
		}
		if _, err := e.sc.SubscriptionSchedules.Update(sched.ID, &stripe.SubscriptionScheduleParams{Phases: []*stripe.SubscriptionSchedulePhaseParams{phase}}); err != nil {
			t.Fatal(err)
		}
	}
	update("")
	if s, _ := e.sc.Subscriptions.Get(sub.ID, nil); s.DefaultPaymentMethod != nil {
		t.Fatalf("a current phase without the payment method must unset it on the subscription: %v", s.DefaultPaymentMethod)
	}
	update(pm)
	if s, _ := e.sc.Subscriptions.Get(sub.ID, nil); s.DefaultPaymentMethod == nil || s.DefaultPaymentMethod.ID != pm {
		t.Fatalf("the payment method passed again: %v", s.DefaultPaymentMethod)
	}

	trial, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), TrialPeriodDays: stripe.Int64(7),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(cat.business.ID)}}})
	if err != nil {
		t.Fatal(err)
	}
	tsched, err := e.sc.SubscriptionSchedules.New(&stripe.SubscriptionScheduleParams{FromSubscription: stripe.String(trial.ID)})
	if err != nil || tsched.Phases[0].TrialEnd != trial.TrialEnd {
		t.Fatalf("the trial's schedule: %+v %v", tsched, err)
	}
	phase := func(trialEnd int64) *stripe.SubscriptionScheduleParams {
		ph := &stripe.SubscriptionSchedulePhaseParams{StartDate: stripe.Int64(trial.CurrentPeriodStart), EndDate: stripe.Int64(trial.CurrentPeriodEnd),
			Items: []*stripe.SubscriptionSchedulePhaseItemParams{{Price: stripe.String(cat.business.ID), Quantity: stripe.Int64(1)}}}
		if trialEnd > 0 {
			ph.TrialEnd = stripe.Int64(trialEnd)
		}
		return &stripe.SubscriptionScheduleParams{Phases: []*stripe.SubscriptionSchedulePhaseParams{ph}}
	}
	if _, err := e.sc.SubscriptionSchedules.Update(tsched.ID, phase(0)); err == nil {
		t.Fatal("a current phase without its trial must be refused here")
	}
	if _, err := e.sc.SubscriptionSchedules.Update(tsched.ID, phase(trial.TrialEnd)); err != nil {
		t.Fatalf("the trial passed as it is: %v", err)
	}
}

// mustScheduled makes a subscription with p and a schedule from it.
func mustScheduled(t *testing.T, e *env, p *stripe.SubscriptionParams) (*stripe.Subscription, *stripe.SubscriptionSchedule) {
	t.Helper()
	sub, err := e.sc.Subscriptions.New(p)
	if err != nil {
		t.Fatal(err)
	}
	sched, err := e.sc.SubscriptionSchedules.New(&stripe.SubscriptionScheduleParams{FromSubscription: stripe.String(sub.ID)})
	if err != nil {
		t.Fatal(err)
	}
	return sub, sched
}
