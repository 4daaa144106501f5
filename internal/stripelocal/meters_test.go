package stripelocal_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stripe/stripe-go/v76"
)

func mustMeter(t *testing.T, e *env, eventName string) *stripe.BillingMeter {
	t.Helper()
	m, err := e.sc.BillingMeters.New(&stripe.BillingMeterParams{
		DisplayName: stripe.String(eventName), EventName: stripe.String(eventName),
		DefaultAggregation: &stripe.BillingMeterDefaultAggregationParams{Formula: stripe.String("sum")},
		CustomerMapping:    &stripe.BillingMeterCustomerMappingParams{EventPayloadKey: stripe.String("stripe_customer_id"), Type: stripe.String("by_id")},
		ValueSettings:      &stripe.BillingMeterValueSettingsParams{EventPayloadKey: stripe.String("value")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMeters_EventIdentifierCountsOnce(t *testing.T) {
	e := newEnv(t)
	m := mustMeter(t, e, "ns.gpu_minutes")
	send := func(identifier, value string) error {
		t.Helper()
		_, err := e.sc.BillingMeterEvents.New(&stripe.BillingMeterEventParams{
			EventName: stripe.String("ns.gpu_minutes"), Identifier: stripe.String(identifier),
			Payload: map[string]string{"stripe_customer_id": "cus_1", "value": value},
		})
		return err
	}
	if err := send("req-1", "30"); err != nil {
		t.Fatal(err)
	}
	for range 2 { // retries: Stripe refuses a known identifier
		var se *stripe.Error
		if err := send("req-1", "30"); !errors.As(err, &se) || se.HTTPStatusCode != 400 || !strings.Contains(se.Msg, "already exists with identifier req-1") {
			t.Fatalf("a repeated identifier: %v, want Stripe's 400", err)
		}
	}
	if err := send("req-2", "12"); err != nil {
		t.Fatal(err)
	}
	now := e.srv.Now().Unix()
	it := e.sc.BillingMeterEventSummaries.List(&stripe.BillingMeterEventSummaryListParams{
		ID: stripe.String(m.ID), Customer: stripe.String("cus_1"), StartTime: stripe.Int64(now/60*60 - 3600), EndTime: stripe.Int64(now/60*60 + 120),
	})
	if !it.Next() {
		t.Fatalf("no summary: %v", it.Err())
	}
	if got := it.BillingMeterEventSummary().AggregatedValue; got != 42 {
		t.Fatalf("aggregated usage = %v, want 42 (30 once + 12)", got)
	}
	// FIDELITY.md: a summary's times are minute boundaries.
	for _, times := range [][2]int64{{now/60*60 - 3599, now/60*60 + 120}, {now/60*60 - 3600, now/60*60 + 121}} {
		it := e.sc.BillingMeterEventSummaries.List(&stripe.BillingMeterEventSummaryListParams{
			ID: stripe.String(m.ID), Customer: stripe.String("cus_1"), StartTime: stripe.Int64(times[0]), EndTime: stripe.Int64(times[1]),
		})
		var se *stripe.Error
		if it.Next() || !errors.As(it.Err(), &se) || se.HTTPStatusCode != 400 || !strings.Contains(se.Msg, "aligned with minute boundaries") {
			t.Fatalf("a summary from %d to %d: %v, want a 400", times[0], times[1], it.Err())
		}
	}
}

func TestMeters_RetrieveListAndDeactivate(t *testing.T) {
	e := newEnv(t)
	m := mustMeter(t, e, "ns.cpu")
	if _, err := e.sc.BillingMeters.New(&stripe.BillingMeterParams{DisplayName: stripe.String("dup"), EventName: stripe.String("ns.cpu"),
		DefaultAggregation: &stripe.BillingMeterDefaultAggregationParams{Formula: stripe.String("sum")}}); err == nil {
		t.Fatal("a second active meter with the same event_name was accepted")
	}
	got, err := e.sc.BillingMeters.Get(m.ID, nil)
	if err != nil || got.EventName != "ns.cpu" || got.Status != "active" {
		t.Fatalf("retrieve %+v %v", got, err)
	}
	off, err := e.sc.BillingMeters.Deactivate(m.ID, nil)
	if err != nil || off.Status != "inactive" {
		t.Fatalf("deactivate %+v %v", off, err)
	}
	it := e.sc.BillingMeters.List(&stripe.BillingMeterListParams{Status: stripe.String("inactive")})
	n := 0
	for it.Next() {
		n++
	}
	if n != 1 {
		t.Fatalf("inactive meters = %d, want 1", n)
	}
}
