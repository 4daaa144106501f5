package stripelocal

import (
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"time"
)

// newInvoice creates and finalizes an open invoice for sub and makes it the
// subscription's latest, with its number and its hosted page. Callers hold
// s.mu.
func (s *Server) newInvoice(sub obj, reason string, amount int64) obj {
	inv := s.invoiceShape(sub, reason, amount)
	id := inv["id"].(string)
	if c, ok := s.state.get("customer", str(sub["customer"])); ok {
		s.state.invoiceCount[c["id"].(string)]++
		inv["number"] = fmt.Sprintf("%s-%04d", c["invoice_prefix"], s.state.invoiceCount[c["id"].(string)])
		inv["customer_email"], inv["customer_name"] = c["email"], c["name"]
	}
	inv["hosted_invoice_url"] = s.base + "/_local/invoices/" + id
	inv["invoice_pdf"] = s.base + "/_local/invoices/" + id + "/pdf"
	s.state.put("invoice", inv)
	sub["latest_invoice"] = id
	s.emit("invoice.created", inv, nil)
	s.emit("invoice.finalized", inv, nil)
	return inv
}

// invoiceShape is an invoice of sub as Stripe shows one, before it is
// kept.
func (s *Server) invoiceShape(sub obj, reason string, amount int64) obj {
	now := s.now().Unix()
	return obj{
		"id": s.newID("in"), "object": "invoice", "customer": sub["customer"], "subscription": sub["id"],
		"status": "open", "amount_due": amount, "amount_paid": 0, "amount_remaining": amount,
		"attempt_count": 0, "attempted": false, "paid": false, "currency": sub["currency"],
		"created": now, "period_start": sub["current_period_start"], "period_end": sub["current_period_end"],
		"billing_reason": reason, "collection_method": "charge_automatically", "livemode": false,
		"metadata": obj{}, "next_payment_attempt": nil, "hosted_invoice_url": nil, "invoice_pdf": nil, "number": nil,
		"amount_shipping": 0, "automatic_tax": obj{"enabled": false, "status": nil}, "default_tax_rates": []any{},
		"issuer": obj{"type": "self"}, "paid_out_of_band": false, "starting_balance": 0, "ending_balance": nil,
		"payment_settings":                 obj{"default_mandate": nil, "payment_method_options": nil, "payment_method_types": nil},
		"status_transitions":               obj{"finalized_at": now, "marked_uncollectible_at": nil, "paid_at": nil, "voided_at": nil},
		"post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0,
		"subtotal": amount, "subtotal_excluding_tax": amount, "total": amount, "total_excluding_tax": amount,
		"tax": nil, "total_tax_amounts": []any{}, "total_discount_amounts": []any{}, "discount": nil, "discounts": []any{},
		"payment_intent": nil, "charge": nil, "account_country": "US", "account_name": "Local Stripe",
		"customer_email": nil, "customer_name": nil, "description": nil, "due_date": nil, "effective_at": now,
		"application": nil, "application_fee_amount": nil, "auto_advance": true,
		"subscription_details": obj{"metadata": clone(sub["metadata"].(obj))},
		"lines":                obj{"object": "list", "data": []any{}, "has_more": false, "url": "/v1/invoices/lines"},
	}
}

// meteredAmount prices minutes of a metered price in the currency's minor
// unit, exactly (the unit amount is a decimal of up to 12 places), rounded
// half away from zero.
func (s *Server) meteredAmount(price obj, minutes float64) int64 {
	unit, ok := new(big.Rat).SetString(str(price["unit_amount_decimal"]))
	if !ok {
		return 0
	}
	total := new(big.Rat).Mul(unit, new(big.Rat).SetFloat64(minutes))
	return roundRat(total)
}

func roundRat(r *big.Rat) int64 {
	q, m := new(big.Int).QuoRem(r.Num(), r.Denom(), new(big.Int))
	if new(big.Int).Mul(new(big.Int).Abs(m), big.NewInt(2)).Cmp(r.Denom()) >= 0 {
		q.Add(q, big.NewInt(int64(r.Sign())))
	}
	return q.Int64()
}

// markPaid marks inv paid and emits what Stripe emits; the subscription's
// status is the caller's to change.
func (s *Server) markPaid(inv obj) {
	before := clone(inv)
	inv["status"], inv["paid"], inv["attempted"] = "paid", true, true
	inv["attempt_count"] = toInt(inv["attempt_count"]) + 1
	inv["amount_paid"], inv["amount_remaining"] = inv["amount_due"], 0
	inv["next_payment_attempt"] = nil
	inv["status_transitions"].(obj)["paid_at"] = s.now().Unix()
	s.emit("invoice.paid", inv, diff(before, inv))
	s.emit("invoice.payment_succeeded", inv, diff(before, inv))
}

// recordFailedAttempt counts a failed payment attempt of inv. failed says
// the payment was attempted and refused (or there was nothing to charge),
// which Stripe reports as invoice.payment_failed; a payment waiting for
// authentication is reported by invoice.payment_action_required instead.
func (s *Server) recordFailedAttempt(inv obj, failed bool) {
	before := clone(inv)
	inv["attempted"] = true
	inv["attempt_count"] = toInt(inv["attempt_count"]) + 1
	inv["next_payment_attempt"] = s.now().Add(72 * time.Hour).Unix()
	if failed {
		s.emit("invoice.payment_failed", inv, diff(before, inv))
	}
}

// pastDue moves a subscription whose invoice could not be paid: active or
// trialing becomes past_due; after four failed attempts, unpaid (a model
// of Stripe's retry settings, which each account chooses).
func (s *Server) pastDue(sub, inv obj) {
	switch {
	case toInt(inv["attempt_count"]) >= 4 && (sub["status"] == "past_due" || sub["status"] == "active"):
		s.setStatus(sub, "unpaid")
	case sub["status"] == "active" || sub["status"] == "trialing":
		s.setStatus(sub, "past_due")
	}
}

// bill collects an invoice of a subscription that is under way (a renewal
// or a proration) and moves the subscription as Stripe does: paid makes it
// active again; a refused payment, one waiting for authentication, or no
// payment method at all makes it past_due.
func (s *Server) bill(sub, inv obj) {
	if toInt(inv["amount_due"]) == 0 {
		s.markPaid(inv)
		return
	}
	switch outcome := s.collect(inv, sub); outcome {
	case charged:
		if sub["status"] == "past_due" || sub["status"] == "unpaid" {
			s.setStatus(sub, "active")
		}
	case chargeHeldByTest:
	default:
		s.recordFailedAttempt(inv, outcome != chargeNeedsAuth)
		s.pastDue(sub, inv)
	}
}

func (s *Server) setStatus(sub obj, status string) {
	before := clone(sub)
	sub["status"] = status
	s.emit("customer.subscription.updated", sub, diff(before, sub))
}

// settle pays or fails the subscription's latest invoice, which must be
// open. It is a test control, not a Stripe API.
func (s *Server) settle(subID, outcome string) *apiError {
	sub, aerr := s.liveSubscription(subID, "subscription")
	if aerr != nil {
		return aerr
	}
	invID, _ := sub["latest_invoice"].(string)
	inv, ok := s.state.get("invoice", invID)
	if !ok || inv["status"] != "open" {
		return invalid("subscription", "the latest invoice of %s is not open (set the payment mode to never, then advance the clock to a renewal)", subID)
	}
	switch outcome {
	case "paid":
		s.succeed(s.invoiceIntent(inv), inv, "")
		if slices.Contains([]any{"incomplete", "past_due", "unpaid"}, sub["status"]) {
			s.setStatus(sub, "active")
		}
	case "failed":
		s.invoiceIntent(inv) // a finalized invoice has its PaymentIntent, which the customer can pay
		s.recordFailedAttempt(inv, true)
		s.pastDue(sub, inv)
	default:
		return invalid("outcome", "outcome must be paid or failed")
	}
	return nil
}

// advanceClock moves time forward and runs what falls due: an incomplete
// subscription expires 23 hours after it was made, trials end, periods
// renew (with an invoice), and subscriptions set to cancel at the period
// end are canceled.
func (s *Server) advanceClock(d time.Duration) {
	s.clockOffset += d
	now := s.now()
	for _, id := range s.state.order["checkout.session"] {
		if cs := s.state.objects["checkout.session"][id]; cs["status"] == "open" && now.Unix() >= toInt(cs["expires_at"]) {
			s.expireCheckout(cs)
		}
	}
	for _, id := range s.state.order["subscription"] {
		sub := s.state.objects["subscription"][id]
		if sub["status"] == "incomplete" && now.Unix() >= toInt(sub["created"])+int64(IncompleteLifetime/time.Second) {
			s.expire(sub)
			continue
		}
		s.trialWillEnd(sub)
		for {
			status := sub["status"]
			if status == "canceled" || status == "incomplete" || status == "incomplete_expired" || status == "paused" ||
				toInt(sub["current_period_end"]) > now.Unix() {
				break
			}
			if sub["cancel_at_period_end"] == true {
				s.cancelNow(sub)
				break
			}
			if status == "trialing" && !s.endTrial(sub) {
				break
			}
			s.renew(sub)
		}
	}
}

// IncompleteLifetime is how long a subscription waits in incomplete for
// its first payment before it becomes incomplete_expired.
const IncompleteLifetime = 23 * time.Hour

// expire ends an incomplete subscription whose first invoice went unpaid:
// the invoice is voided and its PaymentIntent canceled.
func (s *Server) expire(sub obj) {
	if inv, ok := s.state.get("invoice", str(sub["latest_invoice"])); ok && inv["status"] == "open" {
		before := clone(inv)
		inv["status"], inv["amount_remaining"] = "void", 0
		inv["status_transitions"].(obj)["voided_at"] = s.now().Unix()
		if pi, ok := s.state.get("payment_intent", str(inv["payment_intent"])); ok {
			pi["status"], pi["cancellation_reason"], pi["canceled_at"] = "canceled", "void_invoice", s.now().Unix()
		}
		s.emit("invoice.voided", inv, diff(before, inv))
	}
	before := clone(sub)
	now := s.now().Unix()
	sub["status"], sub["ended_at"] = "incomplete_expired", now
	s.emit("customer.subscription.updated", sub, diff(before, sub))
}

// renew starts the next period and invoices it, metered usage of the ended
// period included, priced by the items it had. A schedule's phase that
// begins then sets the new period's items.
func (s *Server) renew(sub obj) {
	before := clone(sub)
	start := time.Unix(toInt(sub["current_period_end"]), 0)
	usage := s.meteredTotal(sub, toInt(sub["current_period_start"]), start.Unix())
	s.enterPhase(sub, start.Unix()) // after the ended period's usage is priced by its items
	items := itemList(sub)
	sub["current_period_start"], sub["current_period_end"] = start.Unix(), advance(start, interval(items)).Unix()
	if sub["status"] == "trialing" {
		sub["status"] = "active"
	}
	inv := s.newInvoice(sub, "subscription_cycle", licensedTotal(items)+usage)
	s.emit("customer.subscription.updated", sub, diff(before, sub))
	s.bill(sub, inv)
}

// meteredTotal prices the usage of sub's metered items in [from, to).
func (s *Server) meteredTotal(sub obj, from, to int64) int64 {
	total := int64(0)
	for _, it := range itemList(sub) {
		price := itemPrice(it.(obj))
		if meter, _ := price["recurring"].(obj)["meter"].(string); meter != "" {
			total += s.meteredAmount(price, s.usageOf(it.(obj), sub, from, to))
		}
	}
	return total
}

func (s *Server) retrieveInvoice(r *request) (any, *apiError) {
	inv, ok := s.state.get("invoice", r.PathValue("id"))
	if !ok {
		return nil, noSuch("invoice", r.PathValue("id"), "id")
	}
	return inv, nil
}

func (s *Server) listInvoices(r *request) (any, *apiError) {
	customer, sub, status := r.p.str("customer"), r.p.str("subscription"), r.p.str("status")
	return s.state.list("invoice", "/v1/invoices", r.p, func(inv obj) bool {
		return (customer == "" || inv["customer"] == customer) && (sub == "" || inv["subscription"] == sub) &&
			(status == "" || inv["status"] == status)
	})
}

// helpers over subscription objects

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// itemList returns a copy of the subscription's item list.
func itemList(sub obj) []any {
	items, _ := sub["items"].(obj)["data"].([]any)
	return append([]any(nil), items...)
}

func setItems(sub obj, items []any) {
	sub["items"] = obj{"object": "list", "data": items, "has_more": false, "total_count": len(items),
		"url": "/v1/subscription_items?subscription=" + sub["id"].(string)}
}

func itemPrice(item obj) obj { return item["price"].(obj) }

func licensedTotal(items []any) int64 {
	total := 0.0
	for _, it := range items {
		price := itemPrice(it.(obj))
		if price["recurring"].(obj)["usage_type"] != "licensed" {
			continue
		}
		unit, _ := strconv.ParseFloat(price["unit_amount_decimal"].(string), 64)
		total += unit * float64(toInt(it.(obj)["quantity"]))
	}
	return int64(math.Round(total))
}

type period struct {
	unit  string
	count int64
}

func interval(items []any) period {
	rec := itemPrice(items[0].(obj))["recurring"].(obj)
	return period{rec["interval"].(string), toInt(rec["interval_count"])}
}

func sameInterval(items []any) *apiError {
	first := interval(items)
	for _, it := range items[1:] {
		if interval([]any{it}) != first {
			return invalid("items", "All prices on a subscription must have the same `recurring.interval` and `recurring.interval_count`.")
		}
	}
	return nil
}

func advance(t time.Time, p period) time.Time {
	n := int(p.count)
	switch p.unit {
	case "day":
		return t.AddDate(0, 0, n)
	case "week":
		return t.AddDate(0, 0, 7*n)
	case "year":
		return t.AddDate(n, 0, 0)
	}
	return t.AddDate(0, n, 0)
}

// toInt reads a number stored either by this server (int64) or by JSON
// (float64).
func toInt(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int:
		return int64(n)
	case float64:
		return int64(n)
	}
	return 0
}
