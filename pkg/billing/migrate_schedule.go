package billing

import (
	"context"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v76"
)

// A price migration moves an instance type's price when its period renews,
// with a subscription schedule (FIDELITY.md, rules 18 and 19); any change
// of ours to the subscription releases it first (changeSubscription).

// outcomeAlreadyScheduled is a metered move a schedule of an earlier run
// already makes at the period's end.
const outcomeAlreadyScheduled = "already scheduled"

// scheduleMoves makes sub's metered items move to their current prices
// when its period ends, with a subscription schedule: the period's usage
// is billed on the old prices by the renewal, and the new period's on the
// new ones (FIDELITY.md, rules 18 and 19). The schedule is made from the
// subscription, then given two phases: the current one, as the
// subscription is, to the period's end, and the next period on the new
// prices, after which it is released. A schedule someone else attached is
// left alone (the move fails); one of an earlier run is updated, or kept
// when it already makes these moves.
func (s *Service) scheduleMoves(ctx context.Context, pace *pacer, passID string, sub *stripe.Subscription, moves []PriceMove, current map[string]string) (string, error) {
	if s.alreadyScheduled(sub, current) {
		return outcomeAlreadyScheduled, nil
	}
	want := phaseItems(sub, current)
	sched := sub.Schedule
	if !scheduleLive(sched) {
		sched = nil
	}
	// The keys are the pass's: a step that takes a page again gets the
	// answers its schedule requests had, and a later pass, after the
	// organization's change released the schedule, makes a new one.
	parts := []string{s.cfg.Namespace, "schedule prices", passID, sub.ID, strconv.FormatInt(sub.CurrentPeriodEnd, 10)}
	for _, mv := range moves {
		parts = append(parts, mv.ItemID, mv.OldPrice, mv.NewPrice)
	}
	if !s.ownsSchedule(sched) {
		made, err := s.createSchedule(ctx, pace, sub.ID, keyHash(append(parts, "create")...))
		if outcome, refused := refusedMove(err); refused {
			return outcome, nil // attached to someone else's schedule, or changed meanwhile
		}
		if err != nil {
			return "", err
		}
		if sched != nil && made.ID != sched.ID { // a replay of ours is the same schedule
			return "failed: the subscription has a schedule the migration did not make: " + sched.ID, nil
		}
		sched = made
	}
	// Stripe may refuse an archived price in a phase (rule 19): the
	// current phase's old prices are active until the pass ends.
	if err := s.activatePrices(ctx, pace, passID, sub); err != nil {
		return "", err
	}
	p := &stripe.SubscriptionScheduleParams{Params: stripe.Params{Context: ctx}, ProrationBehavior: stripe.String("none"),
		EndBehavior: stripe.String("release"),
		Phases:      []*stripe.SubscriptionSchedulePhaseParams{currentPhase(sub, sched), {Items: want, Iterations: stripe.Int64(1)}}}
	p.AddMetadata(metaNamespace, s.cfg.Namespace)
	p.AddMetadata(metaOrg, sub.Metadata[metaOrg])
	p.SetIdempotencyKey(keyHash(append(parts, "phases", sched.ID)...))
	err := s.paced(ctx, pace, "schedule price moves", func(api *stripeAPI) error {
		_, err := api.SubscriptionSchedules.Update(sched.ID, p)
		return err
	})
	if outcome, refused := refusedMove(err); refused {
		s.log.WarnContext(ctx, "migrate prices: Stripe refused a schedule", "subscription_id", sub.ID, "error", AsError(err).Message)
		return outcome, nil
	}
	if err != nil {
		return "", err
	}
	// The mirror learns of the schedule now, so that a change the
	// organization makes next releases it first.
	fresh, err := s.readForMigration(ctx, pace, sub.ID)
	if err != nil {
		return "", err
	}
	if _, err := s.applyAnswer(ctx, sub.Metadata[metaOrg], fresh); err != nil {
		return "", err
	}
	for _, mv := range moves {
		s.log.InfoContext(ctx, "migrate prices: item move scheduled", "org_id", mv.OrgID, "subscription_id", mv.SubscriptionID,
			"item_id", mv.ItemID, "key", mv.Key, "old_price", mv.OldPrice, "new_price", mv.NewPrice, "schedule_id", sched.ID,
			"at", time.Unix(sub.CurrentPeriodEnd, 0).UTC().Format(time.RFC3339))
	}
	return "scheduled", nil
}

// currentPhase is the schedule's current phase as the subscription is, to
// its period's end. An update unsets what it leaves out of the current
// phase, and so of the subscription (rule 19): the phase repeats the
// subscription's payment method and its trial.
func currentPhase(sub *stripe.Subscription, sched *stripe.SubscriptionSchedule) *stripe.SubscriptionSchedulePhaseParams {
	p := &stripe.SubscriptionSchedulePhaseParams{StartDate: stripe.Int64(sched.CurrentPhase.StartDate), EndDate: stripe.Int64(sub.CurrentPeriodEnd),
		Items: phaseItems(sub, nil)}
	if pm := sub.DefaultPaymentMethod; pm != nil && pm.ID != "" {
		p.DefaultPaymentMethod = stripe.String(pm.ID)
	}
	if sub.Status == stripe.SubscriptionStatusTrialing && sub.TrialEnd > 0 {
		p.TrialEnd = stripe.Int64(sub.TrialEnd)
	}
	return p
}

func (s *Service) createSchedule(ctx context.Context, pace *pacer, subID, key string) (*stripe.SubscriptionSchedule, error) {
	var sched *stripe.SubscriptionSchedule
	err := s.paced(ctx, pace, "make a subscription schedule", func(api *stripeAPI) error {
		p := &stripe.SubscriptionScheduleParams{Params: stripe.Params{Context: ctx}, FromSubscription: stripe.String(subID)}
		p.SetIdempotencyKey(key)
		var err error
		sched, err = api.SubscriptionSchedules.New(p)
		return err
	})
	return sched, err
}

// metaReactivated marks a price the migration made active again, for its
// pass's end to archive.
const metaReactivated = "billing_reactivated"

// activatePrices makes the subscription's archived prices active again
// (marked metaReactivated): the schedule's current phase lists them. Its
// keys, like the archive's, are ours ("bf-"), so the webhook knows the
// change for the code's and flags no catalog drift.
func (s *Service) activatePrices(ctx context.Context, pace *pacer, passID string, sub *stripe.Subscription) error {
	for _, it := range sub.Items.Data {
		if it.Price == nil || it.Price.Active {
			continue
		}
		if err := s.setPriceActive(ctx, pace, passID, it.Price.ID, true); err != nil {
			return err
		}
	}
	return nil
}

// setPriceActive makes an old price active (marked metaReactivated) or
// archives it (the mark removed), with a key of the pass's.
func (s *Service) setPriceActive(ctx context.Context, pace *pacer, passID, id string, active bool) error {
	op, mark := "archive an old price", ""
	if active {
		op, mark = "activate an old price", "migrate_prices"
	}
	return s.paced(ctx, pace, op, func(api *stripeAPI) error {
		p := &stripe.PriceParams{Params: stripe.Params{Context: ctx}, Active: stripe.Bool(active)}
		p.AddMetadata(metaReactivated, mark) // "" unsets it
		p.SetIdempotencyKey(keyHash(s.cfg.Namespace, op, passID, id))
		_, err := api.Prices.Update(id, p)
		return err
	})
}

// archiveOldPrices archives again the prices of the catalog's products
// that the migration made active (metaReactivated) and are not current,
// so that a product keeps one active price, as upsert-products leaves it.
// A price upsert-products is making at the same moment carries no mark.
func (s *Service) archiveOldPrices(ctx context.Context, pace *pacer, passID string, current map[string]string) error {
	mappings, err := s.store.ListProductMappings(ctx)
	if err != nil {
		return fromTable("read product mappings", err)
	}
	for _, m := range mappings {
		var stale []string
		err := s.paced(ctx, pace, "list a product's prices", func(api *stripeAPI) error {
			stale = stale[:0]
			it := api.Prices.List(&stripe.PriceListParams{ListParams: stripe.ListParams{Context: ctx}, Product: stripe.String(m.ProductID), Active: stripe.Bool(true)})
			for it.Next() {
				if p := it.Price(); p.ID != current[m.Key] && p.Metadata[metaReactivated] != "" {
					stale = append(stale, p.ID)
				}
			}
			return it.Err()
		})
		if err != nil {
			return err
		}
		for _, id := range stale {
			if err := s.setPriceActive(ctx, pace, passID, id, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// scheduleLive reports whether a schedule (expanded) can still change its
// subscription.
func scheduleLive(sc *stripe.SubscriptionSchedule) bool {
	return sc != nil && (sc.Status == stripe.SubscriptionScheduleStatusActive || sc.Status == stripe.SubscriptionScheduleStatusNotStarted)
}

// ownsSchedule reports whether sc is this namespace's price migration's.
func (s *Service) ownsSchedule(sc *stripe.SubscriptionSchedule) bool {
	return sc != nil && sc.Metadata[metaNamespace] == s.cfg.Namespace
}

// ownSchedule is the ID of the price migration's live schedule on sub (its
// schedule expanded), if it has one: the one a change releases first.
func (s *Service) ownSchedule(sub *stripe.Subscription) string {
	if scheduleLive(sub.Schedule) && s.ownsSchedule(sub.Schedule) {
		return sub.Schedule.ID
	}
	return ""
}

// schedules reports whether sched's last phase begins at the period's end
// with want.
func schedules(sched *stripe.SubscriptionSchedule, periodEnd int64, want []*stripe.SubscriptionSchedulePhaseItemParams) bool {
	if len(sched.Phases) < 2 {
		return false
	}
	last := sched.Phases[len(sched.Phases)-1]
	if last.StartDate != periodEnd || len(last.Items) != len(want) {
		return false
	}
	for i, it := range last.Items {
		if it.Price == nil || it.Price.ID != *want[i].Price || it.Quantity != stripe.Int64Value(want[i].Quantity) {
			return false
		}
	}
	return true
}

// alreadyScheduled reports whether sub's schedule (expanded) is the
// migration's and moves it to the current prices when its period ends.
func (s *Service) alreadyScheduled(sub *stripe.Subscription, current map[string]string) bool {
	return s.ownSchedule(sub) != "" && schedules(sub.Schedule, sub.CurrentPeriodEnd, phaseItems(sub, current))
}

// releaseSchedule releases the price migration's schedule id, so that a
// change to its subscription stands; a schedule someone else made is left
// alone, and one no longer live needs nothing.
func (s *Service) releaseSchedule(ctx context.Context, id string) error {
	return s.withStripe(ctx, "release a subscription schedule", func(api *stripeAPI) error {
		sched, err := api.SubscriptionSchedules.Get(id, &stripe.SubscriptionScheduleParams{Params: stripe.Params{Context: ctx}})
		if err != nil {
			return err
		}
		if !s.ownsSchedule(sched) || !scheduleLive(sched) {
			return nil
		}
		p := &stripe.SubscriptionScheduleReleaseParams{Params: stripe.Params{Context: ctx}}
		p.SetIdempotencyKey(keyHash(s.cfg.Namespace, "release schedule", id))
		if _, err := api.SubscriptionSchedules.Release(id, p); err != nil {
			return err
		}
		s.log.InfoContext(ctx, "migrate prices: schedule released for a change", "schedule_id", id,
			"subscription_id", sched.Subscription.ID)
		return nil
	})
}

// phaseItems lists sub's items as a phase takes them, each on its key's
// price in current when it has one (nil: as they are).
func phaseItems(sub *stripe.Subscription, current map[string]string) []*stripe.SubscriptionSchedulePhaseItemParams {
	var items []*stripe.SubscriptionSchedulePhaseItemParams
	for _, it := range sub.Items.Data {
		price := it.Price.ID
		if now := current[it.Price.Metadata[metaKey]]; now != "" {
			price = now
		}
		pi := &stripe.SubscriptionSchedulePhaseItemParams{Price: stripe.String(price)}
		if it.Price.Recurring == nil || it.Price.Recurring.UsageType != stripe.PriceRecurringUsageTypeMetered {
			pi.Quantity = stripe.Int64(it.Quantity)
		}
		items = append(items, pi)
	}
	return items
}
