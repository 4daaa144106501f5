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
	// Outcome is planned (a dry run), moved, deferred (a metered item,
	// never moved) or failed, each with the reason.
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

// MigratePrices moves every licensed item (a tier) of this namespace's
// subscriptions that is on a price no longer its catalog key's current one
// (after upsert-products replaced it) to the current price. A metered item
// (an instance type) on an old price is listed as deferred and never
// moved: Stripe would leave its usage so far this period unbilled
// (FIDELITY.md, rule 18). It runs as steps of a
// pass, like reconcile: paced, resumable, one pass at a time. Each
// subscription with something to move is read again just before its
// update, so a change someone made since the search is kept, not
// overwritten; the update's idempotency key is derived from the move, so a
// re-run that meets a move already made within Stripe's 24 hours gets the
// same answer, and one after that finds nothing to move. Each move is
// mirrored through the webhook's ordering guard. A dry run reads the same
// pages and writes nothing.
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
			return s.migratePage(ctx, pace, pass.Page, current, proration)
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
		subs, next, err := s.searchSubscriptions(ctx, pace, s.migrationQuery(), page)
		if err != nil {
			return rep, err
		}
		rep.Step.StripeRequests++
		for _, sub := range subs {
			rep.Step.Subscriptions++
			moves, deferred := movesOf(sub, current)
			for _, mv := range moves {
				mv.Outcome = "planned"
				rep.Moves = append(rep.Moves, mv)
			}
			rep.Moves = append(rep.Moves, deferred...)
			rep.Step.Differences += int64(len(moves) + len(deferred))
		}
		page, rep.NextPage, rep.Done = next, next, next == ""
		if rep.Done || !pageFits(began, end) {
			return rep, nil
		}
	}
}

// migratePage moves what one search page's subscriptions have on old
// prices. A subscription whose move Stripe refused is listed as failed
// and the pass goes on; one that Stripe could not answer stops the step,
// and the next takes the page again.
func (s *Service) migratePage(ctx context.Context, pace *pacer, page string, current map[string]string, proration string) (passPage, error) {
	var pg passPage
	subs, next, err := s.searchSubscriptions(ctx, pace, s.migrationQuery(), page)
	if err != nil {
		return pg, err
	}
	pg.next = next
	for _, sub := range subs {
		pg.progress.Subscriptions++
		moves, deferred := movesOf(sub, current)
		pg.moves = append(pg.moves, deferred...)
		pg.progress.Differences += int64(len(deferred))
		if len(moves) == 0 {
			continue
		}
		// Read it again: someone may have changed it since the page.
		var fresh *stripe.Subscription
		err := s.paced(ctx, pace, "read a subscription", func(api *stripeAPI) error {
			var err error
			fresh, err = api.Subscriptions.Get(sub.ID, &stripe.SubscriptionParams{Params: stripe.Params{Context: ctx}})
			return err
		})
		if err != nil {
			return pg, err
		}
		moves, _ = movesOf(fresh, current)
		pg.progress.Differences += int64(len(moves))
		if len(moves) == 0 {
			pg.unchanged++ // moved by someone else (or by a run whose answer was lost)
			continue
		}
		outcome, err := s.moveItems(ctx, pace, fresh, moves, proration)
		if err != nil {
			return pg, err
		}
		for _, mv := range moves {
			mv.Outcome = outcome
			pg.moves = append(pg.moves, mv)
			if outcome == "moved" {
				pg.progress.Repaired++
			}
		}
	}
	return pg, nil
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
		_, err := s.changeSubscription(ctx, sub.Metadata[metaOrg], func(api *stripeAPI) (*stripe.Subscription, error) {
			return api.Subscriptions.Update(sub.ID, p)
		})
		return err
	})
	switch {
	case err == nil:
		for _, mv := range moves {
			s.log.InfoContext(ctx, "migrate prices: item moved", "org_id", mv.OrgID, "subscription_id", mv.SubscriptionID,
				"item_id", mv.ItemID, "key", mv.Key, "old_price", mv.OldPrice, "new_price", mv.NewPrice)
		}
		return "moved", nil
	case !AsError(err).Retryable && AsError(err).StripeRequestID != "":
		s.log.WarnContext(ctx, "migrate prices: Stripe refused a move", "subscription_id", sub.ID, "error", AsError(err).Message)
		return "failed: " + AsError(err).Message, nil
	}
	return "", err
}

// deferredMetered is the outcome of a metered item on an old price: the
// migration never moves one (FIDELITY.md, rule 18).
const deferredMetered = "deferred: a meter price switched mid-period bills none of the period's usage so far"

// movesOf lists sub's items on a price that is not their catalog key's
// current one: licensed items to move, metered ones deferred. Items of
// keys the catalog no longer has stay.
func movesOf(sub *stripe.Subscription, current map[string]string) (moves, deferred []PriceMove) {
	if sub.Items == nil {
		return nil, nil
	}
	for _, it := range sub.Items.Data {
		if it.Price == nil {
			continue
		}
		key := it.Price.Metadata[metaKey]
		now, ok := current[key]
		if !ok || now == "" || now == it.Price.ID {
			continue
		}
		mv := PriceMove{OrgID: sub.Metadata[metaOrg], SubscriptionID: sub.ID, ItemID: it.ID, Key: key, OldPrice: it.Price.ID, NewPrice: now}
		if it.Price.Recurring != nil && it.Price.Recurring.UsageType == stripe.PriceRecurringUsageTypeMetered {
			mv.Outcome = deferredMetered
			deferred = append(deferred, mv)
			continue
		}
		moves = append(moves, mv)
	}
	return moves, deferred
}
