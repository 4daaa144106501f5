package billing

import (
	"cmp"
	"context"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

// MigrateRequest is the migrate_prices action's request.
type MigrateRequest struct {
	// DryRun lists the moves without making any, and writes nothing: not
	// even the pass's cursor, so Page carries it instead.
	DryRun bool
	// Proration is the moves' proration_behavior: none (the default),
	// create_prorations or always_invoice.
	Proration string
	// Page is where a dry run goes on: the next_page of the answer before.
	Page string
}

// PriceMove is one subscription item to move to its catalog key's
// current price, and what became of it.
type PriceMove struct {
	OrgID          string `json:"org_id"`
	SubscriptionID string `json:"subscription_id"`
	ItemID         string `json:"item_id"`
	Key            string `json:"key"`
	OldPrice       string `json:"old_price"`
	NewPrice       string `json:"new_price"`
	// When is "now" for a licensed item (a tier) and "period_end" for a
	// metered one (an instance type), moved by a subscription schedule
	// when the period renews.
	When string `json:"when"`
	// Outcome is planned (a dry run), moved, scheduled (at the period's
	// end) or failed, with the reason.
	Outcome string `json:"outcome"`
}

// MigrateReport is what one migrate_prices step (or a dry run's page)
// planned or did, and where its pass stands.
type MigrateReport struct {
	DryRun bool   `json:"dry_run"`
	PassID string `json:"pass_id,omitempty"`
	Done   bool   `json:"done"`
	// NextPage is where a dry run goes on ("" when Done).
	NextPage string      `json:"next_page,omitempty"`
	Moves    []PriceMove `json:"moves"`
	// Unchanged counts the subscriptions of the plan that someone else
	// changed before their move: read again, they had nothing to move.
	Unchanged int `json:"unchanged"`
	// Step and Pass count subscriptions read, items on an old price
	// (differences) and items moved (repaired).
	Step table.Progress `json:"step"`
	Pass table.Progress `json:"pass"`
}

// MigratePrices moves every item of this namespace's subscriptions that
// is on a price no longer its catalog key's current one (after
// upsert-products replaced it) to the current price. A licensed item (a
// tier) moves at once. A metered item (an instance type) moves when the
// period renews, by a subscription schedule: moved mid-period, its usage
// so far would go unbilled (FIDELITY.md, rules 18 and 19). It runs as
// steps of a pass, like reconcile: paced, resumable, one pass at a time.
// Each subscription with something to move is read again just before its
// change, so a change someone made since the search is kept, not
// overwritten; each request's idempotency key is derived from the move,
// so a re-run that meets a move already made within Stripe's 24 hours
// gets the same answer, and one after that finds nothing to move (or the
// schedule already made). Each change is mirrored through the webhook's
// ordering guard. A dry run reads the same pages and writes nothing.
func (s *Service) MigratePrices(ctx context.Context, req MigrateRequest) (MigrateReport, error) {
	rep := MigrateReport{DryRun: req.DryRun, Moves: []PriceMove{}}
	proration := cmp.Or(req.Proration, "none") // checked by the action's decoder (Command.validate)
	if _, err := s.enabledKeys(ctx); err != nil {
		return rep, err
	}
	current, err := s.currentPrices(ctx)
	if err != nil {
		return rep, err
	}
	if req.DryRun {
		return s.planMoves(ctx, current, req.Page, rep)
	}
	pass, step, err := s.runStep(ctx, table.PassMigratePrices, table.PhaseSubscriptions, func() error { return nil },
		func(pace *pacer, pass table.Pass) (passPage, error) {
			return s.migratePage(ctx, pace, pass, current, proration)
		})
	rep.PassID, rep.Done, rep.Pass, rep.Step = pass.PassID, pass.Phase == table.PhaseDone, pass.Progress, step.progress
	rep.Moves = append(rep.Moves, step.moves...)
	rep.Unchanged = step.unchanged
	return rep, err
}

// migrateRun is the migrate_prices action: one step, with a log line of
// the pass's progress (each move has its own, when it is made).
func (s *Service) migrateRun(ctx context.Context, req MigrateRequest) (MigrateReport, error) {
	rep, err := s.MigratePrices(ctx, req)
	if err != nil || req.DryRun {
		return rep, err
	}
	p := rep.Pass
	s.log.InfoContext(ctx, "migrate prices step", "pass_id", rep.PassID, "done", rep.Done, "moves", len(rep.Moves), "unchanged", rep.Unchanged,
		"pass_subscriptions", p.Subscriptions, "pass_old_price_items", p.Differences, "pass_moved", p.Repaired,
		"pass_stripe_requests", p.StripeRequests, "pass_dynamodb_requests", p.DynamoDBRequests, "pass_steps", p.Steps)
	return rep, nil
}

// currentPrices are the mapping's current price by catalog key.
func (s *Service) currentPrices(ctx context.Context) (map[string]string, error) {
	mappings, err := s.store.ListProductMappings(ctx)
	if err != nil {
		return nil, fromTable("read product mappings", err)
	}
	if len(mappings) == 0 {
		return nil, Errorf(CodeNotFound, "no product mapping: run upsert-products first")
	}
	current := map[string]string{}
	for _, m := range mappings {
		current[m.Key] = m.PriceID
	}
	return current, nil
}

// migrationQuery finds this namespace's subscriptions that bill or will:
// a canceled or expired one has nothing to move, and an incomplete one
// takes only metadata until its first invoice is paid (FIDELITY.md).
func (s *Service) migrationQuery() string {
	return s.namespaceQuery() + " AND -status:'canceled' AND -status:'incomplete_expired' AND -status:'incomplete'"
}

// planMoves is the dry run: it reads pages from page until the step's time
// is up and lists their moves.
func (s *Service) planMoves(ctx context.Context, current map[string]string, page string, rep MigrateReport) (MigrateReport, error) {
	end := s.stepEnd(ctx)
	pace := s.passPacer()
	for {
		began := time.Now()
		subs, next, err := s.searchSubscriptions(ctx, pace, s.migrationQuery(), page, "data.schedule")
		if err != nil {
			return rep, err
		}
		rep.Step.StripeRequests++
		for _, sub := range subs {
			rep.Step.Subscriptions++
			now, atEnd := movesOf(sub, current)
			if len(now) == 0 && s.alreadyScheduled(sub, current) {
				continue // scheduled by an earlier run
			}
			for _, mv := range append(now, atEnd...) {
				mv.Outcome = "planned"
				rep.Moves = append(rep.Moves, mv)
			}
			rep.Step.Differences += int64(len(now) + len(atEnd))
		}
		page, rep.NextPage, rep.Done = next, next, next == ""
		if rep.Done || !pageFits(began, end) {
			return rep, nil
		}
	}
}

// migratePage moves what one search page's subscriptions have on old
// prices: tier items now, instance types at the period's end. A
// subscription whose move Stripe refused is listed as failed and the pass
// goes on; one that Stripe could not answer stops the step, and the next
// takes the page again. After the last page, the old prices a schedule
// needed active are archived again.
func (s *Service) migratePage(ctx context.Context, pace *pacer, pass table.Pass, current map[string]string, proration string) (passPage, error) {
	var pg passPage
	subs, next, err := s.searchSubscriptions(ctx, pace, s.migrationQuery(), pass.Page, "data.schedule")
	if err != nil {
		return pg, err
	}
	pg.next = next
	for _, sub := range subs {
		pg.progress.Subscriptions++
		now, atEnd := movesOf(sub, current)
		if len(now)+len(atEnd) == 0 {
			continue
		}
		if len(now) == 0 && s.alreadyScheduled(sub, current) {
			pg.unchanged++ // scheduled by an earlier run
			continue
		}
		moved, err := s.migrateSubscription(ctx, pace, pass.PassID, sub.ID, current, proration)
		if err != nil {
			return pg, err
		}
		pg.add(moved)
	}
	if next == "" {
		err = s.archiveOldPrices(ctx, pace, pass.PassID, current)
	}
	return pg, err
}

// migrateSubscription reads one subscription again (someone may have
// changed it since the page), moves its tier item now and schedules its
// instance types' moves for the period's end.
func (s *Service) migrateSubscription(ctx context.Context, pace *pacer, passID, id string, current map[string]string, proration string) (passPage, error) {
	var pg passPage
	fresh, err := s.readForMigration(ctx, pace, id)
	if err != nil {
		return pg, err
	}
	now, atEnd := movesOf(fresh, current)
	pg.progress.Differences += int64(len(now) + len(atEnd))
	if len(now) > 0 {
		outcome, err := s.moveItems(ctx, pace, fresh, now, proration)
		if err != nil {
			return pg, err
		}
		pg.record(now, outcome)
		if outcome != "moved" || len(atEnd) == 0 {
			return pg, nil
		}
		// The move released any schedule: read what it left.
		if fresh, err = s.readForMigration(ctx, pace, id); err != nil {
			return pg, err
		}
	}
	if len(atEnd) == 0 {
		if len(now) == 0 {
			pg.unchanged++ // moved by someone else (or by a run whose answer was lost)
		}
		return pg, nil
	}
	outcome, err := s.scheduleMoves(ctx, pace, passID, fresh, atEnd, current)
	if err != nil {
		return pg, err
	}
	if outcome == outcomeAlreadyScheduled {
		pg.unchanged++ // scheduled by an earlier run
		return pg, nil
	}
	pg.record(atEnd, outcome)
	return pg, nil
}

// record lists moves with their outcome; a move made or scheduled counts
// as repaired.
func (p *passPage) record(moves []PriceMove, outcome string) {
	for _, mv := range moves {
		mv.Outcome = outcome
		p.moves = append(p.moves, mv)
		if outcome == "moved" || outcome == "scheduled" {
			p.progress.Repaired++
		}
	}
}

// readForMigration reads a subscription with its schedule.
func (s *Service) readForMigration(ctx context.Context, pace *pacer, id string) (*stripe.Subscription, error) {
	var sub *stripe.Subscription
	err := s.paced(ctx, pace, "read a subscription", func(api *stripeAPI) error {
		p := &stripe.SubscriptionParams{Params: stripe.Params{Context: ctx}}
		p.AddExpand("schedule")
		var err error
		sub, err = api.Subscriptions.Get(id, p)
		return err
	})
	return sub, err
}

// moveItems updates one subscription's items to their current prices and
// mirrors the answer. It answers "moved", or "failed: …" when Stripe
// refused the change; an error is for the step to stop on.
func (s *Service) moveItems(ctx context.Context, pace *pacer, sub *stripe.Subscription, moves []PriceMove, proration string) (string, error) {
	p := &stripe.SubscriptionParams{Params: stripe.Params{Context: ctx}, ProrationBehavior: stripe.String(proration)}
	parts := []string{s.cfg.Namespace, "migrate prices", sub.ID, proration}
	for _, mv := range moves {
		p.Items = append(p.Items, &stripe.SubscriptionItemsParams{ID: stripe.String(mv.ItemID), Price: stripe.String(mv.NewPrice)})
		parts = append(parts, mv.ItemID, mv.OldPrice, mv.NewPrice)
	}
	p.SetIdempotencyKey(keyHash(parts...))
	err := pace.run(ctx, "move prices", func() error {
		_, err := s.changeSubscription(ctx, sub.Metadata[metaOrg], s.ownSchedule(sub), func(api *stripeAPI) (*stripe.Subscription, error) {
			return api.Subscriptions.Update(sub.ID, p)
		})
		return err
	})
	if outcome, refused := refusedMove(err); refused {
		s.log.WarnContext(ctx, "migrate prices: Stripe refused a move", "subscription_id", sub.ID, "error", AsError(err).Message)
		return outcome, nil
	}
	if err != nil {
		return "", err
	}
	for _, mv := range moves {
		s.log.InfoContext(ctx, "migrate prices: item moved", "org_id", mv.OrgID, "subscription_id", mv.SubscriptionID,
			"item_id", mv.ItemID, "key", mv.Key, "old_price", mv.OldPrice, "new_price", mv.NewPrice)
	}
	return "moved", nil
}

// refusedMove tells a refusal of Stripe's (a move that will never be
// made as asked, "failed: …") from an error to stop the step on.
func refusedMove(err error) (string, bool) {
	if e := AsError(err); err != nil && !e.Retryable && e.StripeRequestID != "" {
		return "failed: " + e.Message, true
	}
	return "", false
}

// movesOf lists sub's items on a price that is not their catalog key's
// current one: licensed items (a tier) move now, metered ones (instance
// types) at the period's end (FIDELITY.md, rule 18), unless the
// subscription ends then (a schedule would carry it on). Items of keys
// the catalog no longer has stay.
func movesOf(sub *stripe.Subscription, current map[string]string) (now, atEnd []PriceMove) {
	if sub.Items == nil {
		return nil, nil
	}
	ending := sub.CancelAtPeriodEnd || sub.CancelAt != 0
	for _, it := range sub.Items.Data {
		if it.Price == nil {
			continue
		}
		key := it.Price.Metadata[metaKey]
		price, ok := current[key]
		if !ok || price == "" || price == it.Price.ID {
			continue
		}
		mv := PriceMove{OrgID: sub.Metadata[metaOrg], SubscriptionID: sub.ID, ItemID: it.ID, Key: key, OldPrice: it.Price.ID, NewPrice: price, When: "now"}
		if it.Price.Recurring != nil && it.Price.Recurring.UsageType == stripe.PriceRecurringUsageTypeMetered {
			if !ending {
				mv.When = "period_end"
				atEnd = append(atEnd, mv)
			}
			continue
		}
		now = append(now, mv)
	}
	return now, atEnd
}
