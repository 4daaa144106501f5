package billing

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baseten/billing-functions/pkg/table"
)

// MaxUsageBatch is the most records one record_usage_batch takes.
const MaxUsageBatch = 500

// usageKeep is how long a usage record's request_id is kept: a retry
// within it counts once. Stripe keeps a meter event identifier for 24
// hours only; 35 days covers the deepest retry window among usage
// platforms (Metronome's, 34 days) and Stripe's own limit on a meter
// event's age.
const usageKeep = 35 * 24 * time.Hour

// UsageOutcome is the answer for one record of a batch: recorded, or why
// not.
type UsageOutcome struct {
	RequestID string     `json:"request_id"`
	Recorded  bool       `json:"recorded,omitempty"`
	Error     *ErrorBody `json:"error,omitempty"`
}

// UsageBatchResult answers record_usage_batch: one outcome per record, in
// the order sent, and how many were recorded.
type UsageBatchResult struct {
	Results  []UsageOutcome `json:"results"`
	Recorded int            `json:"recorded"`
	Failed   int            `json:"failed"`
}

// usageItem is one record of a batch on its way: the record_usage command
// it is, its outcome once known, and the meter event to send.
type usageItem struct {
	cmd     Command
	outcome *UsageOutcome
	event   meterEvent
	send    bool
	store   bool     // its answer is stored under its request_id
	amount  *big.Rat // what it adds to its organization's spend this period, once recorded
	dupOf   int      // the index of the first record with its request_id, or -1
}

// recordUsageBatch records each record as record_usage would, with the
// table read and written in batches and the meter events sent from a
// bounded pool, paced. One record's failure never fails the others.
func (s *Service) recordUsageBatch(ctx context.Context, cmd Command) (UsageBatchResult, error) {
	items := make([]usageItem, len(cmd.Records))
	for i, raw := range cmd.Records {
		c, err := decodeUsageRecord(raw)
		items[i] = usageItem{cmd: c, outcome: &UsageOutcome{RequestID: c.RequestID}}
		if err != nil {
			items[i].fail(err)
		}
	}
	if err := s.recordUsageItems(ctx, items); err != nil {
		return UsageBatchResult{}, err
	}
	res := UsageBatchResult{Results: make([]UsageOutcome, len(items))}
	for i, it := range items {
		res.Results[i] = *it.outcome
		if it.outcome.Recorded {
			res.Recorded++
		} else {
			res.Failed++
		}
	}
	return res, nil
}

// recordUsageAction is the record_usage action: a batch of one, so that
// a request_id answers the same alone or in a batch, in two DynamoDB
// requests (one read, one write).
func (s *Service) recordUsageAction(ctx context.Context, cmd Command) (any, error) {
	items := []usageItem{{cmd: cmd, outcome: &UsageOutcome{RequestID: cmd.RequestID}}}
	if err := s.recordUsageItems(ctx, items); err != nil {
		return nil, err
	}
	if e := items[0].outcome.Error; e != nil {
		return nil, &Error{Code: e.Code, Message: e.Message, Retryable: e.Retryable, StripeRequestID: e.StripeRequestID}
	}
	return map[string]bool{"recorded": true}, nil
}

// recordUsageItems decides and sends decoded usage records (those that
// failed to decode carry their outcome already): one batched read of the
// table, then the meter events from the pool while the answers and spend
// of the records already sent are written, a segment at a time. Only a
// failure to read the table fails them all.
func (s *Service) recordUsageItems(ctx context.Context, items []usageItem) error {
	now := time.Now()
	first := map[string]int{}
	var requestIDs, orgs, products []string
	seenOrg, seenProduct := map[string]bool{}, map[string]bool{}
	for i := range items {
		it := &items[i]
		it.dupOf = -1
		if it.outcome.Error != nil {
			continue
		}
		c := it.cmd
		if j, ok := first[c.RequestID]; ok {
			it.dupOf = j
			continue
		}
		first[c.RequestID] = i
		requestIDs = append(requestIDs, c.RequestID)
		if !seenOrg[c.OrgID] {
			seenOrg[c.OrgID] = true
			orgs = append(orgs, c.OrgID)
		}
		if !seenProduct[c.InstanceType] {
			seenProduct[c.InstanceType] = true
			products = append(products, c.InstanceType)
		}
	}
	if len(requestIDs) == 0 {
		return nil
	}
	view, err := s.store.ReadUsageView(ctx, requestIDs, orgs, products, now)
	if err != nil {
		return fromTable("read the usage records", err)
	}
	for i := range items {
		if it := &items[i]; it.outcome.Error == nil && it.dupOf < 0 {
			s.planUsage(it, view, now)
		}
	}
	stripeRequests, writes, alerts, err := s.sendAndStore(ctx, items, view, now)
	if err != nil {
		// Stripe counted them; a retry within 24 hours is still counted
		// once by the identifier, and adds its spend then.
		s.log.WarnContext(ctx, "could not store the usage records' answers and spend; a retry within 24 hours still counts each once",
			"records", len(items), "error", err.Error())
	}
	// Alerts another invocation decided and did not send go out with
	// this one's.
	for _, org := range orgs {
		alerts = append(alerts, pendingAlerts(org, view.Spends[org], now)...)
	}
	s.sendAlerts(ctx, alerts)
	recorded := 0
	for i := range items {
		it := &items[i]
		if it.dupOf >= 0 {
			it.settleDuplicate(&items[it.dupOf])
		}
		if it.outcome.Recorded {
			recorded++
		}
	}
	// One line per call, with what it cost, as the webhook logs each
	// delivery.
	s.log.InfoContext(ctx, "usage", "records", len(items), "recorded", recorded, "stripe_requests", stripeRequests,
		"dynamodb_requests", view.Sent+writes)
	return nil
}

// decodeUsageRecord reads one record of a batch as the record_usage
// command it is, with record_usage's checks.
func decodeUsageRecord(raw json.RawMessage) (Command, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return Command{}, Errorf(CodeInvalidRequest, "a usage record must be a JSON object")
	}
	var c Command
	if err := json.Unmarshal(fields["request_id"], &c.RequestID); err != nil {
		c.RequestID = ""
	}
	if _, ok := fields["action"]; ok {
		return c, Errorf(CodeInvalidRequest, "action: not a field of a usage record")
	}
	fields["action"] = json.RawMessage(`"record_usage"`)
	whole, _ := json.Marshal(fields)
	d, err := DecodeCommand(whole)
	if err != nil {
		return c, err
	}
	return d, nil
}

// planUsage decides a record from the table's view: replayed from its
// request record, refused, or to be sent.
func (s *Service) planUsage(it *usageItem, view table.UsageView, now time.Time) {
	c := it.cmd
	if prev, ok := view.Requests[c.RequestID]; ok {
		switch {
		case prev.Fingerprint != c.fingerprint():
			it.fail(Errorf(CodeConflict, "request_id: already used with other fields"))
			return
		case prev.Done:
			it.replay(prev.Result)
			return
		case prev.Held:
			it.fail(&Error{Code: CodeUnavailable, Message: "request_id: the same request is in progress; retry shortly", Retryable: true})
			return
		}
	}
	m, found := view.Products[c.InstanceType]
	if err := checkProduct("instance_type", c.InstanceType, KindInstanceType, m, found); err != nil {
		it.fail(err)
		it.store = true
		return
	}
	sub, ok := view.Subscriptions[c.OrgID]
	if !ok || !live(&sub) {
		it.fail(Errorf(CodeNotFound, "the organization has no active subscription"))
		it.store = true
		return
	}
	ev, err := s.usageEvent(c, m, &sub, now)
	if err != nil {
		it.fail(err)
		it.store = true
		return
	}
	it.event, it.send = ev, true
	// It adds to this period's spend when it falls in the period; usage
	// of the period just closed (the hour Stripe still takes it) does not.
	if price, ok := view.Terms.Prices[c.InstanceType]; ok && ev.at >= sub.CurrentPeriodStart {
		it.amount, _ = usageAmount(*c.Minutes, price)
	}
}

func (it *usageItem) fail(err error) {
	it.outcome.Recorded = false
	it.outcome.Error = Failure(err).Error
}

// answer is the record's answer as record_usage gives it, to store.
func (it *usageItem) answer() Response {
	if it.outcome.Recorded {
		return Success(map[string]bool{"recorded": true})
	}
	return Response{Error: it.outcome.Error}
}

// replay gives a record the answer stored for its request_id.
func (it *usageItem) replay(stored string) {
	var r struct {
		OK    bool       `json:"ok"`
		Error *ErrorBody `json:"error"`
	}
	if json.Unmarshal([]byte(stored), &r) != nil {
		it.fail(Errorf(CodeInternal, "request_id: its stored answer cannot be read"))
		return
	}
	it.outcome.Recorded, it.outcome.Error = r.OK, r.Error
}

// settleDuplicate answers a record whose request_id came earlier in the
// batch: as that one, when they ask the same.
func (it *usageItem) settleDuplicate(first *usageItem) {
	if it.cmd.fingerprint() != first.cmd.fingerprint() {
		it.fail(Errorf(CodeConflict, "request_id: already used with other fields"))
		return
	}
	*it.outcome = *first.outcome
}

// usageSegment is how many records of a batch, in order, are stored
// together once all of them are sent: a segment's answers and spend are
// written while the next segments' meter events are sent, so that the
// writes wait on Stripe's pace instead of coming after it, and only the
// last segment's come after. 50 records of as many organizations, each
// with its spend record, make one transaction of 100 actions.
const usageSegment = table.MaxUsageActions / 2

// sendAndStore sends the planned meter events and stores the records'
// answers with the spend they add, a segment at a time as each segment's
// sends are settled. The writes run in one goroutine, one segment after
// another, and end at most usageStoreTimeout after the last send, even
// when the caller's deadline has passed, as Run stores one request's
// answer. It returns the Stripe and DynamoDB requests it made and the
// alerts it claimed.
func (s *Service) sendAndStore(ctx context.Context, items []usageItem, view table.UsageView, now time.Time) (stripeRequests, writes int, alerts []Alert, err error) {
	segments := (len(items) + usageSegment - 1) / usageSegment
	unsent := make([]atomic.Int32, segments)
	ready := make(chan int, segments)
	for i := range items {
		if items[i].send {
			unsent[i/usageSegment].Add(1)
		}
	}
	for seg := range unsent {
		if unsent[seg].Load() == 0 {
			ready <- seg
		}
	}
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	stored := make(chan struct{})
	go func() {
		defer close(stored)
		for seg := range ready {
			w, a, e := s.storeUsage(wctx, usageParts(items[seg*usageSegment:min((seg+1)*usageSegment, len(items))], view), view, now)
			writes, alerts, err = writes+w, append(alerts, a...), errors.Join(err, e)
		}
	}()
	stripeRequests = s.sendUsageBatch(ctx, items, func(i int) {
		if unsent[i/usageSegment].Add(-1) == 0 {
			ready <- i / usageSegment
		}
	})
	close(ready)
	deadline := time.AfterFunc(usageStoreTimeout, stop)
	defer deadline.Stop()
	<-stored
	return stripeRequests, writes, alerts, err
}

// usageParts are the answers of items to store, by organization in the
// order each first appears, with the spend each record adds.
func usageParts(items []usageItem, view table.UsageView) []*orgUsage {
	parts := map[string]*orgUsage{}
	var order []*orgUsage
	for i := range items {
		it := &items[i]
		if !it.store {
			continue
		}
		p := parts[it.cmd.OrgID]
		if p == nil {
			p = &orgUsage{org: it.cmd.OrgID, amounts: map[string]*big.Rat{}}
			if sub, ok := view.Subscriptions[it.cmd.OrgID]; ok {
				p.sub = &sub
			}
			parts[it.cmd.OrgID] = p
			order = append(order, p)
		}
		raw, _ := json.Marshal(it.answer())
		p.records = append(p.records, table.FinishedRequest{RequestID: it.cmd.RequestID, Fingerprint: it.cmd.fingerprint(), Result: string(raw)})
		if it.outcome.Recorded && it.amount != nil {
			p.amounts[it.cmd.RequestID] = it.amount
		}
	}
	return order
}

// sendUsageBatch sends the planned meter events from a pool of
// cfg.UsageConcurrency workers, at most cfg.UsageRate a second, until the
// invocation's deadline nears: what it cannot send answers unavailable.
// settled(i) is called once items[i] has its outcome. It returns the
// Stripe requests it made.
func (s *Service) sendUsageBatch(ctx context.Context, items []usageItem, settled func(i int)) int {
	work, cancel := withAnswerTime(ctx)
	defer cancel()
	p := newPacer(cmp.Or(s.cfg.UsageRate, DefaultUsageRate))
	jobs := make(chan int)
	var wg sync.WaitGroup
	var sent atomic.Int64
	for range cmp.Or(s.cfg.UsageConcurrency, DefaultUsageConcurrency) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				sent.Add(int64(s.sendOne(work, p, &items[i])))
				settled(i)
			}
		}()
	}
	for i := range items {
		if items[i].send {
			jobs <- i
		}
	}
	close(jobs)
	wg.Wait()
	return int(sent.Load())
}

// usageAttempts bounds the tries of one meter event that Stripe answers
// 429 (rate limited).
const usageAttempts = 4

// sendOne sends one record's meter event, paced, backing off on 429, and
// returns the requests it made.
func (s *Service) sendOne(ctx context.Context, p *pacer, it *usageItem) (sent int) {
	var err error
	for range usageAttempts {
		if err = p.wait(ctx); err != nil {
			it.fail(&Error{Code: CodeUnavailable, Message: "not sent before the invocation's deadline; retry it", Retryable: true})
			return sent
		}
		sent++
		err = s.sendUsage(ctx, it.event)
		if !errors.Is(err, errRateLimited) {
			break
		}
		p.throttled()
	}
	if err != nil {
		it.fail(err)
		it.store = !AsError(err).Retryable
		return sent
	}
	p.succeeded()
	it.outcome.Recorded, it.outcome.Error, it.store = true, nil, true
	return sent
}

// pacer spaces requests at most rate a second across workers, and pauses
// them all after a 429, for a wait that doubles with each one in a row.
type pacer struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
	backoff  time.Duration
}

const (
	firstBackoff = 250 * time.Millisecond
	maxBackoff   = 4 * time.Second
)

func newPacer(rate float64) *pacer {
	return &pacer{interval: time.Duration(float64(time.Second) / rate)}
}

// wait takes the next slot and sleeps until it; it fails when the slot
// comes after ctx's deadline.
func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	slot := later(p.next, now)
	p.next = slot.Add(p.interval)
	p.mu.Unlock()
	if d, ok := ctx.Deadline(); ok && slot.After(d) {
		return context.DeadlineExceeded
	}
	return sleepCtx(ctx, time.Until(slot))
}

func (p *pacer) throttled() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backoff = min(max(p.backoff*2, firstBackoff), maxBackoff)
	p.next = later(p.next, time.Now().Add(p.backoff))
}

func (p *pacer) succeeded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backoff = 0
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
