package stripelocal

import (
	"slices"
)

// Subscription statuses follow Stripe's lifecycle: incomplete, trialing,
// active, past_due, unpaid, canceled.

func (s *Server) createSubscription(r *request) (any, *apiError) {
	cid := r.p.str("customer")
	if cid == "" {
		return nil, missingParam("customer")
	}
	if _, aerr := s.liveCustomer(cid, "customer"); aerr != nil {
		return nil, aerr
	}
	specs := r.p.list("items")
	if len(specs) == 0 {
		return nil, missingParam("items")
	}
	behavior := r.p.str("payment_behavior")
	if behavior == "" {
		behavior = "allow_incomplete"
	}
	if !slices.Contains([]string{"allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete"}, behavior) {
		return nil, invalid("payment_behavior", "Invalid payment_behavior: %s", behavior)
	}
	trialDays, _, ok := r.p.integer("trial_period_days")
	if !ok || trialDays < 0 || trialDays > 730 {
		return nil, invalid("trial_period_days", "trial_period_days must be an integer from 0 to 730")
	}

	now := s.now()
	sub := obj{
		"id": s.newID("sub"), "object": "subscription", "customer": cid, "created": now.Unix(),
		"start_date": now.Unix(), "billing_cycle_anchor": now.Unix(), "livemode": false,
		"cancel_at_period_end": false, "cancel_at": nil, "canceled_at": nil, "ended_at": nil,
		"collection_method": "charge_automatically", "currency": nil, "metadata": obj{},
		"trial_start": nil, "trial_end": nil, "latest_invoice": nil, "pending_update": nil,
		"current_period_start": now.Unix(), "status": "incomplete",
		"application": nil, "application_fee_percent": nil, "automatic_tax": obj{"enabled": false},
		"billing_thresholds": nil, "cancellation_details": obj{"comment": nil, "feedback": nil, "reason": nil},
		"days_until_due": nil, "default_payment_method": nil, "default_source": nil, "default_tax_rates": []any{},
		"description": nil, "discount": nil, "next_pending_invoice_item_invoice": nil, "on_behalf_of": nil,
		"pause_collection": nil, "pending_invoice_item_interval": nil, "pending_setup_intent": nil, "schedule": nil,
		"test_clock": nil, "transfer_data": nil,
		"payment_settings": obj{"payment_method_options": nil, "payment_method_types": nil, "save_default_payment_method": "off"},
		"trial_settings":   obj{"end_behavior": obj{"missing_payment_method": "create_invoice"}},
	}
	var items []any
	for i, spec := range specs {
		item, aerr := s.newItem(sub, params(asMap(spec)), "items["+itoa(int64(i))+"]")
		if aerr != nil {
			return nil, aerr
		}
		items = append(items, item)
	}
	if aerr := tooManyItems(len(items)); aerr != nil {
		return nil, aerr
	}
	if aerr := sameInterval(items); aerr != nil {
		return nil, aerr
	}
	setItems(sub, items)
	sub["currency"] = itemPrice(items[0].(obj))["currency"]
	if md, given := r.p.metadata(); given {
		applyMetadata(sub, md)
	}
	if cape, given, ok := r.p.boolean("cancel_at_period_end"); !ok {
		return nil, invalid("cancel_at_period_end", "cancel_at_period_end must be true or false")
	} else if given {
		sub["cancel_at_period_end"] = cape
	}
	if pm := r.p.str("default_payment_method"); pm != "" {
		if aerr := s.ownPaymentMethod(cid, pm, "default_payment_method"); aerr != nil {
			return nil, aerr
		}
		sub["default_payment_method"] = pm
	}
	if save := r.p.obj("payment_settings").str("save_default_payment_method"); save != "" {
		sub["payment_settings"].(obj)["save_default_payment_method"] = save
	}
	if missing := r.p.obj("trial_settings").obj("end_behavior").str("missing_payment_method"); missing != "" {
		if !slices.Contains([]string{"cancel", "create_invoice", "pause"}, missing) {
			return nil, invalid("trial_settings[end_behavior][missing_payment_method]", "Invalid missing_payment_method: must be one of cancel, create_invoice, or pause")
		}
		sub["trial_settings"] = obj{"end_behavior": obj{"missing_payment_method": missing}}
	}

	amount := licensedTotal(items)
	if trialDays > 0 {
		amount = 0
	}
	// Without a payment method Stripe refuses to charge a first invoice
	// that is due, unless the subscription waits for one
	// (default_incomplete); error_if_incomplete also refuses a card that
	// does not pay at once. Decided before anything is made.
	if amount > 0 && behavior != "default_incomplete" && s.payMode == PayWithPaymentMethods {
		pm := s.defaultPaymentMethod(sub)
		switch {
		case pm == "":
			return nil, &apiError{Status: 400, Type: "invalid_request_error",
				Message: "This customer has no attached payment source or default payment method. Please consider adding a default payment method. For more information, visit https://stripe.com/docs/billing/subscriptions/payment-methods-setting#payment-method-priority."}
		case behavior == "error_if_incomplete" && s.state.cardBehavior[pm] != "succeed":
			return nil, cardDeclined("")
		}
	}

	if trialDays > 0 {
		end := now.AddDate(0, 0, int(trialDays)).Unix()
		sub["trial_start"], sub["trial_end"], sub["current_period_end"], sub["status"] = now.Unix(), end, end, "trialing"
	} else {
		sub["current_period_end"] = advance(now, interval(items)).Unix()
	}
	s.state.put("subscription", sub)
	inv := s.newInvoice(sub, "subscription_create", amount)
	switch {
	case amount == 0:
		s.markPaid(inv)
		if trialDays == 0 {
			sub["status"] = "active"
		}
	case behavior == "default_incomplete" && s.payMode != PayEverything:
		s.invoiceIntent(inv) // waits for its payment method: confirmed by the customer
	default:
		switch outcome := s.collect(inv, sub); outcome {
		case charged:
			sub["status"] = "active"
		case chargeFailed, chargeNeedsAuth:
			s.recordFailedAttempt(inv, outcome == chargeFailed)
		}
	}
	// With nothing to pay now and no card, default_incomplete leaves a
	// SetupIntent to collect one (FIDELITY.md, rule 12).
	if amount == 0 && behavior == "default_incomplete" && s.defaultPaymentMethod(sub) == "" {
		s.newSetupIntent(sub)
	}
	s.emit("customer.subscription.created", sub, nil)
	s.trialWillEnd(sub)
	return s.expandSubscription(sub, r.p.strs("expand")), nil
}

// MaxSubscriptionItems is how many items a subscription may have.
const MaxSubscriptionItems = 20

func tooManyItems(n int) *apiError {
	if n <= MaxSubscriptionItems {
		return nil
	}
	return invalid("items", "A subscription can have at most %d items; this one would have %d.", MaxSubscriptionItems, n)
}

// expandSubscription returns sub with latest_invoice (and, within it,
// payment_intent), pending_setup_intent and schedule expanded when expand
// names them.
func (s *Server) expandSubscription(sub obj, expand []string) obj {
	return s.expandSubscriptionAt(sub, expand, "")
}

func (s *Server) expandSubscriptionAt(sub obj, expand []string, prefix string) obj {
	c := sub
	if si, ok := s.state.get("setup_intent", str(sub["pending_setup_intent"])); ok && slices.Contains(expand, prefix+"pending_setup_intent") {
		c = clone(sub)
		c["pending_setup_intent"] = clone(si)
	}
	if sched, ok := s.state.get("subscription_schedule", str(sub["schedule"])); ok && slices.Contains(expand, prefix+"schedule") {
		c = clone(c)
		c["schedule"] = clone(sched)
	}
	if !slices.Contains(expand, prefix+"latest_invoice") && !slices.Contains(expand, prefix+"latest_invoice.payment_intent") {
		return c
	}
	inv, ok := s.state.get("invoice", str(sub["latest_invoice"]))
	if !ok {
		return c
	}
	c = clone(c)
	ci := clone(inv)
	if slices.Contains(expand, prefix+"latest_invoice.payment_intent") {
		if pi, ok := s.state.get("payment_intent", str(inv["payment_intent"])); ok {
			ci["payment_intent"] = clone(pi)
		}
	}
	c["latest_invoice"] = ci
	return c
}

// newItem builds a subscription item from {price, quantity, metadata}.
func (s *Server) newItem(sub obj, spec params, param string) (obj, *apiError) {
	priceID := spec.str("price")
	if priceID == "" {
		return nil, missingParam(param + "[price]")
	}
	price, ok := s.state.get("price", priceID)
	if !ok {
		return nil, noSuch("price", priceID, param+"[price]")
	}
	if price["active"] != true {
		return nil, invalid(param+"[price]", "The price specified is inactive. This field only accepts active prices.")
	}
	if price["type"] != "recurring" {
		return nil, invalid(param+"[price]", "The price specified is not recurring.")
	}
	item := obj{"id": s.newID("si"), "object": "subscription_item", "created": s.now().Unix(),
		"subscription": sub["id"], "price": clone(price), "metadata": obj{}, "tax_rates": []any{}}
	metered := price["recurring"].(obj)["usage_type"] == "metered"
	q, given, ok := spec.integer("quantity")
	switch {
	case !ok || (given && q < 0):
		return nil, invalid(param+"[quantity]", "quantity must be a non-negative integer")
	case metered && given:
		return nil, invalid(param+"[quantity]", "Quantity should not be specified where usage_type is `metered`. Remove quantity from `%s`.", priceID)
	case !metered && !given:
		q = 1
	}
	if !metered {
		item["quantity"] = q
	}
	if md, given := spec.metadata(); given {
		applyMetadata(item, md)
	}
	return item, nil
}

func (s *Server) liveSubscription(id, param string) (obj, *apiError) {
	sub, ok := s.state.get("subscription", id)
	if !ok {
		return nil, noSuch("subscription", id, param)
	}
	return sub, nil
}

func (s *Server) retrieveSubscription(r *request) (any, *apiError) {
	sub, aerr := s.liveSubscription(r.PathValue("id"), "id")
	if aerr != nil {
		return nil, aerr
	}
	return s.expandSubscription(sub, r.p.strs("expand")), nil
}

func (s *Server) listSubscriptions(r *request) (any, *apiError) {
	customer, status := r.p.str("customer"), r.p.str("status")
	list, aerr := s.state.list("subscription", "/v1/subscriptions", r.p, func(sub obj) bool {
		if customer != "" && sub["customer"] != customer {
			return false
		}
		switch status {
		case "", "active":
			if status == "active" {
				return sub["status"] == "active"
			}
			return sub["status"] != "canceled" && sub["status"] != "incomplete_expired"
		case "all":
			return true
		}
		return sub["status"] == status
	})
	if aerr != nil {
		return nil, aerr
	}
	data := list["data"].([]obj)
	expanded := make([]obj, len(data))
	for i, sub := range data {
		expanded[i] = s.expandSubscriptionAt(sub, r.p.strs("expand"), "data.")
	}
	list["data"] = expanded
	return list, nil
}

func (s *Server) updateSubscription(r *request) (any, *apiError) {
	sub, aerr := s.liveSubscription(r.PathValue("id"), "id")
	if aerr != nil {
		return nil, aerr
	}
	switch sub["status"] {
	case "canceled", "incomplete_expired":
		return nil, invalid("", "You cannot update a subscription that is `canceled` or `incomplete_expired`.")
	case "incomplete":
		for name := range r.p {
			if name != "metadata" && name != "default_source" && name != "expand" {
				return nil, &apiError{Status: 400, Type: "invalid_request_error", Param: name,
					Message: "A subscription whose status is `incomplete` can only have its metadata and default_source updated until its first invoice is paid."}
			}
		}
	}
	if r.p.has("cancel_at_period_end") && sub["schedule"] != nil { // rule 19
		return nil, invalid("cancel_at_period_end", "The subscription is managed by the subscription schedule `%s`, and updating any cancelation behavior directly is not allowed. Please update the schedule instead.", sub["schedule"])
	}
	proration, aerr := prorationBehavior(r.p)
	if aerr != nil {
		return nil, aerr
	}
	before := clone(sub)
	items := itemList(sub)
	for i, spec := range r.p.list("items") {
		p := params(asMap(spec))
		param := "items[" + itoa(int64(i)) + "]"
		id := p.str("id")
		if id == "" {
			item, aerr := s.newItem(sub, p, param)
			if aerr != nil {
				return nil, aerr
			}
			items = append(items, item)
			continue
		}
		idx := slices.IndexFunc(items, func(it any) bool { return it.(obj)["id"] == id })
		if idx < 0 {
			return nil, noSuch("subscription item", id, param+"[id]")
		}
		if del, _, _ := p.boolean("deleted"); del {
			items = slices.Delete(items, idx, idx+1)
			continue
		}
		if p.has("price") || p.has("quantity") || p.has("metadata") {
			merged := params{"price": itemPrice(items[idx].(obj))["id"]}
			if q, ok := items[idx].(obj)["quantity"]; ok && !p.has("price") {
				merged["quantity"] = itoa(toInt(q))
			}
			for k, v := range p {
				merged[k] = v
			}
			item, aerr := s.newItem(sub, merged, param)
			if aerr != nil {
				return nil, aerr
			}
			item["id"], item["created"] = id, items[idx].(obj)["created"]
			if itemPrice(item)["id"] != itemPrice(items[idx].(obj))["id"] && itemPrice(item)["recurring"].(obj)["usage_type"] == "metered" {
				s.state.meteredSince[id] = s.now().Unix() // rule 18: the usage so far goes unbilled
			}
			items[idx] = item
		}
	}
	if len(items) == 0 {
		return nil, invalid("items", "A subscription must have at least one item.")
	}
	if aerr := tooManyItems(len(items)); aerr != nil {
		return nil, aerr
	}
	if aerr := sameInterval(items); aerr != nil {
		return nil, aerr
	}
	if pm := r.p.str("default_payment_method"); pm != "" {
		if aerr := s.ownPaymentMethod(sub["customer"], pm, "default_payment_method"); aerr != nil {
			return nil, aerr
		}
		sub["default_payment_method"] = pm
	}
	if cape, given, ok := r.p.boolean("cancel_at_period_end"); !ok {
		return nil, invalid("cancel_at_period_end", "cancel_at_period_end must be true or false")
	} else if given {
		sub["cancel_at_period_end"] = cape
		sub["cancel_at"] = nil
		if cape {
			sub["cancel_at"] = sub["current_period_end"]
		}
	}
	if md, given := r.p.metadata(); given {
		applyMetadata(sub, md)
	}
	s.changeItems(sub, before, items, proration)
	return s.expandSubscription(sub, r.p.strs("expand")), nil
}

// changeItems stores the new items, invoices a proration when asked, and
// emits customer.subscription.updated if anything changed.
func (s *Server) changeItems(sub, before obj, items []any, proration string) {
	oldTotal := licensedTotal(itemList(before))
	setItems(sub, items)
	if proration == "always_invoice" {
		if delta := licensedTotal(items) - oldTotal; delta > 0 {
			s.bill(sub, s.newInvoice(sub, "subscription_update", s.prorate(sub, delta)))
		}
	}
	if prev := diff(before, sub); len(prev) > 0 {
		s.emit("customer.subscription.updated", sub, prev)
	}
}

// prorate scales amount by the share of the current period still ahead.
func (s *Server) prorate(sub obj, amount int64) int64 {
	start, end, now := toInt(sub["current_period_start"]), toInt(sub["current_period_end"]), s.now().Unix()
	if end <= start || now >= end {
		return 0
	}
	if now < start {
		now = start
	}
	return amount * (end - now) / (end - start)
}

func prorationBehavior(p params) (string, *apiError) {
	b := p.str("proration_behavior")
	if b == "" {
		return "create_prorations", nil
	}
	if !slices.Contains([]string{"create_prorations", "none", "always_invoice"}, b) {
		return "", invalid("proration_behavior", "Invalid proration_behavior: %s", b)
	}
	return b, nil
}

// cancelSubscription cancels at once (DELETE). With invoice_now a final
// invoice bills the metered usage not yet invoiced (and, with prorate, a
// credit for the unused part of the licensed items); without it, that
// usage is never billed (FIDELITY.md, rule 7).
func (s *Server) cancelSubscription(r *request) (any, *apiError) {
	sub, aerr := s.liveSubscription(r.PathValue("id"), "id")
	if aerr != nil {
		return nil, aerr
	}
	if sub["status"] == "canceled" || sub["status"] == "incomplete_expired" {
		return nil, invalid("", "This subscription has already been canceled.")
	}
	invoiceNow, _, ok1 := r.p.boolean("invoice_now")
	prorate, _, ok2 := r.p.boolean("prorate")
	if !ok1 || !ok2 {
		return nil, invalid("invoice_now", "invoice_now and prorate must be true or false")
	}
	if invoiceNow && sub["status"] != "incomplete" {
		now := s.now().Unix()
		amount := s.meteredTotal(sub, toInt(sub["current_period_start"]), now+1)
		if prorate {
			amount -= s.prorate(sub, licensedTotal(itemList(sub)))
		}
		inv := s.newInvoice(sub, "subscription_cycle", max(amount, 0))
		inv["period_end"] = now
		s.cancelNow(sub)
		s.bill(sub, inv)
		return sub, nil
	}
	s.cancelNow(sub)
	return sub, nil
}

func (s *Server) cancelNow(sub obj) {
	if sched, ok := s.scheduleOf(sub); ok {
		s.endSchedule(sched, "canceled") // rule 19: an inference
	}
	now := s.now().Unix()
	sub["status"], sub["canceled_at"], sub["ended_at"] = "canceled", now, now
	s.emit("customer.subscription.deleted", sub, nil)
}

// Subscription items, through their own endpoints.

func (s *Server) createSubscriptionItem(r *request) (any, *apiError) {
	sid := r.p.str("subscription")
	if sid == "" {
		return nil, missingParam("subscription")
	}
	sub, aerr := s.liveSubscription(sid, "subscription")
	if aerr != nil {
		return nil, aerr
	}
	proration, aerr := prorationBehavior(r.p)
	if aerr != nil {
		return nil, aerr
	}
	item, aerr := s.newItem(sub, r.p, "")
	if aerr != nil {
		return nil, aerr
	}
	items := append(itemList(sub), item)
	if aerr := sameInterval(items); aerr != nil {
		return nil, aerr
	}
	s.changeItems(sub, clone(sub), items, proration)
	return item, nil
}

// findItem returns the subscription holding item id, and its index.
func (s *Server) findItem(id string) (obj, int, *apiError) {
	for _, sub := range s.state.objects["subscription"] {
		for i, it := range itemList(sub) {
			if it.(obj)["id"] == id {
				return sub, i, nil
			}
		}
	}
	return nil, 0, noSuch("subscription item", id, "id")
}

func (s *Server) retrieveSubscriptionItem(r *request) (any, *apiError) {
	sub, i, aerr := s.findItem(r.PathValue("id"))
	if aerr != nil {
		return nil, aerr
	}
	return itemList(sub)[i], nil
}

func (s *Server) updateSubscriptionItem(r *request) (any, *apiError) {
	sub, i, aerr := s.findItem(r.PathValue("id"))
	if aerr != nil {
		return nil, aerr
	}
	proration, aerr := prorationBehavior(r.p)
	if aerr != nil {
		return nil, aerr
	}
	items := itemList(sub)
	old := items[i].(obj)
	spec := params{"price": itemPrice(old)["id"]}
	if q, ok := old["quantity"]; ok && !r.p.has("price") {
		spec["quantity"] = itoa(toInt(q))
	}
	for k, v := range r.p {
		spec[k] = v
	}
	item, aerr := s.newItem(sub, spec, "")
	if aerr != nil {
		return nil, aerr
	}
	item["id"], item["created"] = old["id"], old["created"]
	items[i] = item
	if aerr := sameInterval(items); aerr != nil {
		return nil, aerr
	}
	if itemPrice(item)["id"] != itemPrice(old)["id"] && itemPrice(item)["recurring"].(obj)["usage_type"] == "metered" {
		s.state.meteredSince[old["id"].(string)] = s.now().Unix() // rule 18: the usage so far goes unbilled
	}
	s.changeItems(sub, clone(sub), items, proration)
	return item, nil
}

func (s *Server) deleteSubscriptionItem(r *request) (any, *apiError) {
	sub, i, aerr := s.findItem(r.PathValue("id"))
	if aerr != nil {
		return nil, aerr
	}
	items := itemList(sub)
	if len(items) == 1 {
		return nil, invalid("", "A subscription must have at least one active plan. To cancel a subscription, please use the cancel API endpoint on /v1/subscriptions.")
	}
	before := clone(sub)
	id := items[i].(obj)["id"]
	s.changeItems(sub, before, slices.Delete(items, i, i+1), "create_prorations")
	return obj{"id": id, "object": "subscription_item", "deleted": true}, nil
}
