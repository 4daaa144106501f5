package billing

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

// A pass (a reconcile, a price migration) walks this namespace's objects
// in Stripe with the Search API, a page at a time, across as many steps
// (invocations) as it takes. runStep is one step of either.

// passPage is what one search page of a pass found and did, or the sum of
// a step's pages.
type passPage struct {
	next        string // the next page's token; "" after the phase's last
	differences []Difference
	remaining   []Difference
	repaired    int
	moves       []PriceMove
	unchanged   int // a migration's subscriptions someone else changed first
	progress    table.Progress
}

func (p *passPage) add(o passPage) {
	p.differences = append(p.differences, o.differences...)
	p.remaining = append(p.remaining, o.remaining...)
	p.repaired += o.repaired
	p.moves = append(p.moves, o.moves...)
	p.unchanged += o.unchanged
	p.progress = p.progress.Add(o.progress)
}

// runStep runs one step of the pass of kind: it takes the pass's lease,
// starts a pass at firstPhase when none is running (calling start, once
// a pass), then reads pages with page until the step's time is up,
// moving the pass's cursor and counts after each page in one conditional
// write. It returns the pass as it left it and the sum of its pages.
func (s *Service) runStep(ctx context.Context, kind, firstPhase string, start func() error, page func(*pacer, table.Pass) (passPage, error)) (table.Pass, passPage, error) {
	var step passPage
	stepEnd := s.stepEnd(ctx)
	owner := newPassID()
	// The lease outlives the invocation: a step killed at its deadline
	// holds the pass until then, and a little longer.
	lease := time.Until(stepEnd) + cmp.Or(s.cfg.ReconcileLease, DefaultReconcileLease)
	if d, ok := ctx.Deadline(); ok {
		lease = time.Until(d) + cmp.Or(s.cfg.ReconcileLease, DefaultReconcileLease)
	}
	pass, err := s.store.TakePass(ctx, kind, owner, time.Now(), lease)
	if err != nil {
		return pass, step, fromTable("take the pass", err)
	}
	startWrites := int64(0)
	if !pass.Running() {
		startWrites = 1
		started := table.Pass{PassID: newPassID(), Phase: firstPhase, StartedAt: time.Now().Unix(), Owner: owner, LeaseUntil: pass.LeaseUntil}
		if err := start(); err != nil {
			return pass, step, err
		}
		if err := s.store.SavePass(ctx, kind, pass, started); err != nil {
			return pass, step, fromTable("start a pass", err)
		}
		pass = started
	}
	pace := s.passPacer()
	for first := true; pass.Running(); first = false {
		began := time.Now()
		requestsBefore := s.stripe.tally.requests.Load()
		pg, err := page(pace, pass)
		restart := errors.Is(err, errPageRefused)
		if restart {
			// How long Stripe keeps a next_page token is not documented
			// (FIDELITY.md, rule 17): the phase starts again from its first
			// page, whose organizations are compared, and counted, again.
			s.log.WarnContext(ctx, "Stripe refused the pass's page token; the phase starts again", "pass", kind, "pass_id", pass.PassID, "phase", pass.Phase)
			pg = passPage{}
		} else if err != nil {
			// Hand the pass on at once; a step killed mid-page cannot,
			// and its lease runs out instead.
			released := pass
			released.LeaseUntil = 0
			if rerr := s.store.SavePass(ctx, kind, pass, released); rerr == nil {
				pass = released
			}
			return pass, step, err
		}
		next := pass
		next.Page = pg.next
		if pg.next == "" && !restart {
			next.Phase = nextPhase(pass.Phase)
		}
		// The step ends when the pass does, or when another page like
		// this one would not fit: the same write then hands the pass to
		// the next step rather than at the lease's end.
		last := !pageFits(began, stepEnd)
		if next.Phase == table.PhaseDone {
			next.EndedAt = time.Now().Unix()
		}
		if last || next.Phase == table.PhaseDone {
			next.LeaseUntil = 0
		}
		pg.progress.StripeRequests = s.stripe.tally.requests.Load() - requestsBefore
		pg.progress.DynamoDBRequests++ // the cursor's write
		if first {
			pg.progress.Steps = 1
			pg.progress.DynamoDBRequests += 1 + startWrites // the lease, and the pass's start
		}
		next.Progress = pass.Progress.Add(pg.progress)
		if err := s.store.SavePass(ctx, kind, pass, next); err != nil {
			return pass, step, fromTable("move the pass", err)
		}
		pass = next
		step.add(pg)
		if last {
			break
		}
	}
	return pass, step, nil
}

// passPacer is the pacer of this process's pass steps: kept
// across invocations, so that a step's first request keeps the pace of
// the step before it (the state machine runs steps back to back, mostly
// in the same warm environment).
func (s *Service) passPacer() *pacer {
	s.paceOnce.Do(func() { s.pace = newPacer(cmp.Or(s.cfg.ReconcileRate, DefaultReconcileRate)) })
	return s.pace
}

// stepEnd is when a pass's step stops taking new pages: its configured
// time (RECONCILE_STEP_TIME), else the invocation's deadline less a
// margin for the page in hand.
func (s *Service) stepEnd(ctx context.Context) time.Time {
	end := time.Now().Add(30*time.Second - reconcileStepMargin)
	if d, ok := ctx.Deadline(); ok {
		end = d.Add(-reconcileStepMargin)
	}
	if t := s.cfg.ReconcileStepTime; t > 0 && time.Now().Add(t).Before(end) {
		end = time.Now().Add(t)
	}
	return end
}

func nextPhase(phase string) string {
	if phase == table.PhaseCustomers {
		return table.PhaseSubscriptions
	}
	return table.PhaseDone
}

// newPassID names a pass, and a step as the owner of the pass's lease.
func newPassID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "rp_" + hex.EncodeToString(b[:])
}

// namespaceQuery is the Search API query for this deployment's objects.
func (s *Service) namespaceQuery() string {
	return fmt.Sprintf("metadata['%s']:'%s'", metaNamespace, s.cfg.Namespace)
}

// paced runs one Stripe request at the pass's rate (pacer.run).
func (s *Service) paced(ctx context.Context, pace *pacer, op string, fn func(api *stripeAPI) error) error {
	return pace.run(ctx, op, func() error { return s.withStripe(ctx, op, fn) })
}

// run sends a pass's request (call) in the pacer's next slot; after a 429
// it backs off and sends it again while the context allows.
func (p *pacer) run(ctx context.Context, op string, call func() error) error {
	for {
		if err := p.wait(ctx); err != nil {
			return &Error{Code: CodeUnavailable, Message: op + ": the step ran out of time", Retryable: true, Err: err}
		}
		err := call()
		if !errors.Is(err, errRateLimited) {
			p.succeeded()
			return err
		}
		p.throttled()
	}
}

// pageFits says whether another page like the one begun at began ends
// before end.
func pageFits(began, end time.Time) bool {
	return !time.Now().Add(time.Since(began)).After(end)
}

// searchCustomers reads one page of a customer search: page is the
// token of the page ("" for the first), and next that of the page after
// it ("" after the last).
func (s *Service) searchCustomers(ctx context.Context, pace *pacer, query, page string) (customers []*stripe.Customer, next string, err error) {
	err = s.paced(ctx, pace, "search customers", func(api *stripeAPI) error {
		p := &stripe.CustomerSearchParams{SearchParams: stripe.SearchParams{Context: ctx, Query: query, Limit: stripe.Int64(s.pageSize()), Single: true}}
		if page != "" {
			p.Page = stripe.String(page)
		}
		it := api.Customers.Search(p)
		customers = customers[:0]
		for it.Next() {
			customers = append(customers, it.Customer())
		}
		if res := it.CustomerSearchResult(); res != nil {
			next = nextToken(res.SearchMeta)
		}
		return it.Err()
	})
	return customers, next, pageError(page, err)
}

// searchSubscriptions is searchCustomers for subscriptions, with the
// expansions given.
func (s *Service) searchSubscriptions(ctx context.Context, pace *pacer, query, page string, expand ...string) (subs []*stripe.Subscription, next string, err error) {
	err = s.paced(ctx, pace, "search subscriptions", func(api *stripeAPI) error {
		p := &stripe.SubscriptionSearchParams{SearchParams: stripe.SearchParams{Context: ctx, Query: query, Limit: stripe.Int64(s.pageSize()), Single: true}}
		if page != "" {
			p.Page = stripe.String(page)
		}
		for _, e := range expand {
			p.AddExpand(e)
		}
		it := api.Subscriptions.Search(p)
		subs = subs[:0]
		for it.Next() {
			subs = append(subs, it.Subscription())
		}
		if res := it.SubscriptionSearchResult(); res != nil {
			next = nextToken(res.SearchMeta)
		}
		return it.Err()
	})
	return subs, next, pageError(page, err)
}

func (s *Service) pageSize() int64 {
	return int64(cmp.Or(s.cfg.ReconcilePageSize, DefaultReconcilePageSize))
}

// errPageRefused is a search Stripe refused when it carried a page token.
var errPageRefused = errors.New("stripe refused the search's page token")

func pageError(page string, err error) error {
	if page != "" && errors.Is(err, errRefused) {
		return fmt.Errorf("%w: %w", errPageRefused, err)
	}
	return err
}

func nextToken(meta stripe.SearchMeta) string {
	if !meta.HasMore || meta.NextPage == nil {
		return ""
	}
	return *meta.NextPage
}

// stripeDate is when Stripe answered, by Stripe's clock (its Date
// header), which also times its events; else now.
func stripeDate(r *stripe.APIResponse) int64 {
	if r != nil {
		if t, err := http.ParseTime(r.Header.Get("Date")); err == nil {
			return t.Unix()
		}
	}
	return time.Now().Unix()
}
