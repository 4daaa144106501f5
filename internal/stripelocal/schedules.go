package stripelocal

import (
	"slices"
	"time"
)

// Subscription schedules, for the use the code makes of them: a
// subscription's items change when its period ends (FIDELITY.md, rule 19).
// A schedule is made from an existing subscription, its phases are
// replaced by an update, it moves the subscription's items when a phase
// begins (at a renewal), and it is released by hand or at its last
// phase's end.

// scheduleLive are the statuses a schedule may be updated or released in.
var scheduleLive = []string{"not_started", "active"}

func (s *Server) createSchedule(r *request) (any, *apiError) {
	sid := r.p.str("from_subscription")
	if sid == "" {
		return nil, invalid("from_subscription", "The local Stripe models schedules made from an existing subscription only (from_subscription); see MODEL.md.")
	}
	for name := range r.p {
		if name != "from_subscription" && name != "expand" {
			return nil, invalid(name, "You cannot set `%s` if `from_subscription` is set.", name)
		}
	}
	sub, aerr := s.liveSubscription(sid, "from_subscription")
	if aerr != nil {
		return nil, aerr
	}
	switch {
	case sub["status"] == "canceled" || sub["status"] == "incomplete_expired":
		return nil, invalid("from_subscription", "You cannot migrate a subscription that is `%s`.", sub["status"])
	case sub["cancel_at_period_end"] == true || sub["cancel_at"] != nil:
		return nil, invalid("from_subscription", "The local Stripe does not model a schedule made from a subscription set to cancel; see MODEL.md.")
	case sub["schedule"] != nil:
		return nil, invalid("from_subscription", "You cannot migrate a subscription that is already attached to a schedule: `%s`.", sub["schedule"])
	}
	start, end := toInt(sub["current_period_start"]), toInt(sub["current_period_end"])
	now := s.now().Unix()
	current := s.phase(start, end, phaseItemsOf(sub), "create_prorations")
	current["default_payment_method"] = sub["default_payment_method"]
	if sub["status"] == "trialing" {
		current["trial_end"] = sub["trial_end"]
	}
	sched := obj{
		"id": s.newID("sub_sched"), "object": "subscription_schedule", "created": now, "livemode": false,
		"customer": sub["customer"], "subscription": sid, "status": "active", "end_behavior": "release",
		"phases":        []any{current},
		"current_phase": obj{"start_date": start, "end_date": end},
		"metadata":      obj{}, "released_at": nil, "released_subscription": nil, "canceled_at": nil, "completed_at": nil,
		"application": nil, "test_clock": nil,
		"default_settings": obj{"billing_cycle_anchor": "automatic", "collection_method": "charge_automatically",
			"application_fee_percent": nil, "automatic_tax": obj{"enabled": false}, "billing_thresholds": nil,
			"default_payment_method": nil, "description": nil, "invoice_settings": obj{"issuer": obj{"type": "self"}},
			"on_behalf_of": nil, "transfer_data": nil},
	}
	s.state.put("subscription_schedule", sched)
	s.emit("subscription_schedule.created", sched, nil)
	before := clone(sub)
	sub["schedule"] = sched["id"]
	s.emit("customer.subscription.updated", sub, diff(before, sub))
	return sched, nil
}

func (s *Server) phase(start, end int64, items []any, proration string) obj {
	return obj{"start_date": start, "end_date": end, "items": items, "proration_behavior": proration,
		"add_invoice_items": []any{}, "application_fee_percent": nil, "automatic_tax": obj{"enabled": false},
		"billing_cycle_anchor": nil, "billing_thresholds": nil, "collection_method": nil, "coupon": nil,
		"currency": "usd", "default_payment_method": nil, "default_tax_rates": []any{}, "description": nil,
		"invoice_settings": nil, "metadata": obj{}, "on_behalf_of": nil, "transfer_data": nil, "trial_end": nil}
}

// phaseItemsOf is a subscription's items as a phase lists them.
func phaseItemsOf(sub obj) []any {
	var items []any
	for _, it := range itemList(sub) {
		items = append(items, phaseItem(it.(obj)))
	}
	return items
}

func phaseItem(item obj) obj {
	pi := obj{"price": itemPrice(item)["id"], "metadata": obj{}, "billing_thresholds": nil, "tax_rates": []any{}}
	if q, ok := item["quantity"]; ok {
		pi["quantity"] = q
	}
	return pi
}

func (s *Server) retrieveSchedule(r *request) (any, *apiError) {
	sched, ok := s.state.get("subscription_schedule", r.PathValue("id"))
	if !ok {
		return nil, noSuch("subscription_schedule", r.PathValue("id"), "schedule")
	}
	return sched, nil
}

func (s *Server) liveSchedule(id, verb string) (obj, *apiError) {
	sched, ok := s.state.get("subscription_schedule", id)
	if !ok {
		return nil, noSuch("subscription_schedule", id, "schedule")
	}
	if !slices.Contains(scheduleLive, str(sched["status"])) {
		return nil, invalid("", "You cannot %s a subscription schedule that is currently in the `%s` status. It must be in `not_started`, `active` status to be %sd.",
			verb, sched["status"], verb)
	}
	return sched, nil
}

// updateSchedule replaces the phases from the current one on. The current
// phase keeps its start and, in this model, the subscription's items and
// trial: only the phases ahead change them. What the update leaves out of
// the current phase is unset, on the subscription too: its default
// payment method (FIDELITY.md, rule 19).
func (s *Server) updateSchedule(r *request) (any, *apiError) {
	sched, aerr := s.liveSchedule(r.PathValue("id"), "update")
	if aerr != nil {
		return nil, aerr
	}
	sub, _ := s.state.get("subscription", str(sched["subscription"]))
	before := clone(sched)
	if r.p.has("phases") {
		phases, aerr := s.schedulePhases(sched, sub, r.p.list("phases"))
		if aerr != nil {
			return nil, aerr
		}
		sched["phases"] = phases
		// "Updating the active phase updates the underlying subscription
		// as well", and what the update leaves out of it is unset.
		if pm := phases[0].(obj)["default_payment_method"]; pm != sub["default_payment_method"] {
			prev := clone(sub)
			sub["default_payment_method"] = pm
			s.emit("customer.subscription.updated", sub, diff(prev, sub))
		}
	}
	if eb := r.p.str("end_behavior"); eb != "" {
		if eb != "release" {
			return nil, invalid("end_behavior", "The local Stripe models end_behavior `release` only; see MODEL.md.")
		}
		sched["end_behavior"] = eb
	}
	if md, given := r.p.metadata(); given {
		applyMetadata(sched, md)
	}
	if prev := diff(before, sched); len(prev) > 0 {
		s.emit("subscription_schedule.updated", sched, prev)
	}
	return sched, nil
}

// maxPhases is how many phases a schedule holds.
const maxPhases = 10

// schedulePhases checks an update's phases and works out when each
// begins and ends: the first is the current phase, from its start; each
// next one begins where the one before ends.
func (s *Server) schedulePhases(sched, sub obj, specs []any) ([]any, *apiError) {
	if len(specs) == 0 {
		return nil, missingParam("phases")
	}
	if len(specs) > maxPhases {
		return nil, invalid("phases", "A subscription schedule can have at most %d phases.", maxPhases)
	}
	cur := sched["current_phase"].(obj)
	start := toInt(cur["start_date"])
	var trialEnd any // the current phase's trial, which an update may not move here
	for _, ph := range sched["phases"].([]any) {
		if toInt(ph.(obj)["start_date"]) == start {
			trialEnd = ph.(obj)["trial_end"]
		}
	}
	var phases []any
	for i, spec := range specs {
		p := params(asMap(spec))
		param := "phases[" + itoa(int64(i)) + "]"
		if at, given, _ := p.integer("start_date"); i == 0 && !given {
			return nil, missingParam(param + "[start_date]") // "Must be set on the first phase."
		} else if given && at != start && i == 0 {
			return nil, invalid(param+"[start_date]", "You can not modify the start date of the current phase.")
		} else if given && at != start {
			return nil, invalid(param+"[start_date]", "The start date of a phase must be the end date of the phase before it.")
		}
		var items []any
		for j, is := range p.list("items") {
			// newItem checks the price (exists, active, recurring) and the
			// quantity as a subscription item would have them.
			item, aerr := s.newItem(obj{"id": sched["subscription"]}, params(asMap(is)), param+"[items]["+itoa(int64(j))+"]")
			if aerr != nil {
				return nil, aerr
			}
			items = append(items, item)
		}
		if len(items) == 0 {
			return nil, missingParam(param + "[items]")
		}
		if aerr := sameInterval(items); aerr != nil {
			return nil, aerr
		}
		if aerr := tooManyItems(len(items)); aerr != nil {
			return nil, aerr
		}
		end, given, ok := p.integer("end_date")
		iterations, iterGiven, ok2 := p.integer("iterations")
		switch {
		case !ok || !ok2 || (iterGiven && iterations < 1):
			return nil, invalid(param, "end_date must be a timestamp and iterations a positive integer")
		case given && iterGiven:
			return nil, invalid(param+"[iterations]", "You may only specify one of `end_date` and `iterations`.")
		case given:
		case iterGiven || i == len(specs)-1:
			end = start
			for range max(iterations, 1) {
				end = advance(time.Unix(end, 0), interval(items)).Unix()
			}
		default:
			return nil, invalid(param+"[end_date]", "Every phase but the last needs an `end_date` or `iterations`.")
		}
		if end <= start {
			return nil, invalid(param+"[end_date]", "The end date of a phase must be after its start date.")
		}
		proration, aerr := prorationBehavior(p)
		if aerr != nil {
			return nil, aerr
		}
		var listed []any
		for _, it := range items {
			listed = append(listed, phaseItem(it.(obj)))
		}
		if i == 0 && !samePhaseItems(listed, phaseItemsOf(sub)) {
			return nil, invalid(param+"[items]", "The local Stripe does not model changing the current phase's items: change the subscription itself; see MODEL.md.")
		}
		ph := s.phase(start, end, listed, proration)
		if pm := p.str("default_payment_method"); pm != "" {
			if aerr := s.ownPaymentMethod(sub["customer"], pm, param+"[default_payment_method]"); aerr != nil {
				return nil, aerr
			}
			ph["default_payment_method"] = pm
		}
		if te, given, _ := p.integer("trial_end"); (i == 0 && trialEnd != nil && (!given || te != toInt(trialEnd))) || (given && (i > 0 || trialEnd == nil)) {
			return nil, invalid(param+"[trial_end]", "The local Stripe does not model a schedule that ends, moves or adds a trial; pass the current phase's trial_end as it is; see MODEL.md.")
		} else if given {
			ph["trial_end"] = te
		}
		phases = append(phases, ph)
		start = end
	}
	return phases, nil
}

func samePhaseItems(a, b []any) bool {
	key := func(items []any) []string {
		var out []string
		for _, it := range items {
			out = append(out, str(it.(obj)["price"])+"×"+itoa(toInt(it.(obj)["quantity"])))
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}

// releaseSchedule ends the schedule and leaves the subscription as it is.
func (s *Server) releaseSchedule(r *request) (any, *apiError) {
	sched, aerr := s.liveSchedule(r.PathValue("id"), "release")
	if aerr != nil {
		return nil, aerr
	}
	s.endSchedule(sched, "released")
	return sched, nil
}

// endSchedule detaches sched from its subscription: released by hand or
// at its end, or canceled with the subscription.
func (s *Server) endSchedule(sched obj, status string) {
	before := clone(sched)
	now := s.now().Unix()
	subID := str(sched["subscription"])
	sched["status"] = status
	switch status {
	case "released":
		sched["released_at"], sched["released_subscription"], sched["subscription"] = now, subID, nil
	case "canceled":
		sched["canceled_at"] = now
	}
	s.emit("subscription_schedule."+status, sched, diff(before, sched))
	if sub, ok := s.state.get("subscription", subID); ok && status == "released" {
		prev := clone(sub)
		sub["schedule"] = nil
		s.emit("customer.subscription.updated", sub, diff(prev, sub))
	}
}

// scheduleOf is the live schedule attached to sub, if any.
func (s *Server) scheduleOf(sub obj) (obj, bool) {
	sched, ok := s.state.get("subscription_schedule", str(sub["schedule"]))
	if !ok || !slices.Contains(scheduleLive, str(sched["status"])) {
		return nil, false
	}
	return sched, true
}

// enterPhase runs sub's schedule at a renewal that begins at: a schedule
// whose last phase ends then is released, and the phase that begins then
// sets the subscription's items (an item whose price changes keeps its ID
// and counts its usage from then).
func (s *Server) enterPhase(sub obj, at int64) {
	sched, ok := s.scheduleOf(sub)
	if !ok {
		return
	}
	phases := sched["phases"].([]any)
	if toInt(phases[len(phases)-1].(obj)["end_date"]) <= at {
		s.endSchedule(sched, "released")
		return
	}
	for _, ph := range phases {
		if ph := ph.(obj); toInt(ph["start_date"]) == at {
			sched["current_phase"] = obj{"start_date": ph["start_date"], "end_date": ph["end_date"]}
			setItems(sub, s.phaseSubscriptionItems(sub, ph["items"].([]any), at))
			if pm := ph["default_payment_method"]; pm != nil { // "all attributes set on the phase are also set on the subscription"
				sub["default_payment_method"] = pm
			}
		}
	}
}

// phaseSubscriptionItems turns a phase's items into sub's: an item of the
// same product keeps its ID.
func (s *Server) phaseSubscriptionItems(sub obj, phaseItems []any, at int64) []any {
	have := map[string]obj{}
	for _, it := range itemList(sub) {
		have[str(itemPrice(it.(obj))["product"])] = it.(obj)
	}
	var items []any
	for _, pi := range phaseItems {
		pi := pi.(obj)
		price, _ := s.state.get("price", str(pi["price"]))
		item := obj{"id": s.newID("si"), "object": "subscription_item", "created": at, "subscription": sub["id"],
			"price": clone(price), "metadata": obj{}, "tax_rates": []any{}}
		if old, ok := have[str(price["product"])]; ok {
			item["id"], item["created"], item["metadata"] = old["id"], old["created"], old["metadata"]
		}
		if q, ok := pi["quantity"]; ok {
			item["quantity"] = q
		}
		if price["recurring"].(obj)["usage_type"] == "metered" {
			s.state.meteredSince[str(item["id"])] = at // the new price counts from the phase's start
		}
		items = append(items, item)
	}
	return items
}
