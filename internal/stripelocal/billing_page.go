package stripelocal

import (
	"sort"
	"strings"
	"time"
)

// What a billing page reads and what trials need: the upcoming invoice, the
// SetupIntent of a trial, its end, and the portal's configurations.

// upcomingInvoice previews the customer's next invoice: the licensed items
// of the next period and the metered usage of the current one so far, as
// Stripe's upcoming invoice does (GET /v1/invoices/upcoming). It has no ID.
func (s *Server) upcomingInvoice(r *request) (any, *apiError) {
	cid := r.p.str("customer")
	if cid == "" {
		return nil, missingParam("customer")
	}
	if _, aerr := s.liveCustomer(cid, "customer"); aerr != nil {
		return nil, aerr
	}
	var sub obj
	for _, id := range s.state.order["subscription"] {
		cand := s.state.objects["subscription"][id]
		if cand["customer"] == cid && (r.p.str("subscription") == "" || r.p.str("subscription") == id) &&
			!strings.HasPrefix(str(cand["status"]), "incomplete") && cand["status"] != "canceled" && cand["status"] != "paused" {
			sub = cand
		}
	}
	if sub == nil {
		return nil, &apiError{Status: 404, Type: "invalid_request_error", Code: "invoice_upcoming_none",
			Message: "No upcoming invoices for customer: " + cid}
	}
	start, end := toInt(sub["current_period_start"]), toInt(sub["current_period_end"])
	next := advance(time.Unix(end, 0), interval(itemList(sub))).Unix()
	var lines []any
	total := int64(0)
	for _, it := range itemList(sub) {
		item := it.(obj)
		price := itemPrice(item)
		line := obj{"id": "il_tmp_" + randomHex(8), "object": "line_item", "currency": sub["currency"], "discountable": true,
			"livemode": false, "metadata": obj{}, "proration": false, "type": "subscription", "price": clone(price),
			"subscription": sub["id"], "subscription_item": item["id"], "discount_amounts": []any{},
			"discounts": []any{}, "tax_amounts": []any{}, "tax_rates": []any{}, "plan": nil, "proration_details": nil,
			"amount_excluding_tax": 0, "unit_amount_excluding_tax": nil}
		if price["recurring"].(obj)["usage_type"] == "metered" {
			minutes := s.usageOf(item, sub, start, end)
			amount := s.meteredAmount(price, minutes)
			line["quantity"], line["amount"], line["period"] = int64(minutes), amount, obj{"start": start, "end": end}
			line["description"] = itoa(int64(minutes)) + " minutes"
			total += amount
		} else {
			amount := licensedTotal([]any{item})
			line["quantity"], line["amount"], line["period"] = toInt(item["quantity"]), amount, obj{"start": end, "end": next}
			line["description"] = "the next period"
			total += amount
		}
		line["amount_excluding_tax"] = line["amount"]
		lines = append(lines, line)
	}
	sort.SliceStable(lines, func(i, j int) bool {
		return lines[i].(obj)["subscription_item"].(string) < lines[j].(obj)["subscription_item"].(string)
	})
	inv := s.invoiceShape(sub, "upcoming", total)
	delete(inv, "id")
	inv["status"], inv["number"], inv["hosted_invoice_url"], inv["invoice_pdf"] = "draft", nil, nil, nil
	inv["period_start"], inv["period_end"], inv["next_payment_attempt"] = start, end, end
	inv["status_transitions"] = obj{"finalized_at": nil, "marked_uncollectible_at": nil, "paid_at": nil, "voided_at": nil}
	inv["lines"] = obj{"object": "list", "data": lines, "has_more": false, "url": "/v1/invoices/upcoming/lines", "total_count": len(lines)}
	return inv, nil
}

// usageOf is the minutes a metered price's meter counted for the
// subscription's customer in [from, to).
func (s *Server) usageOf(item, sub obj, from, to int64) float64 {
	price := itemPrice(item)
	meter, _ := price["recurring"].(obj)["meter"].(string)
	// Only the usage since the item's price last changed (rule 18).
	from = max(from, s.state.meteredSince[item["id"].(string)])
	total := 0.0
	for _, u := range s.state.usage {
		if u.meterID == meter && u.customer == sub["customer"] && u.timestamp >= from && u.timestamp < to {
			total += u.value
		}
	}
	return total
}

// newSetupIntent makes the SetupIntent that collects a card for a
// subscription with nothing to pay now (a trial): pending_setup_intent.
func (s *Server) newSetupIntent(sub obj) obj {
	id := s.newID("seti")
	si := obj{"id": id, "object": "setup_intent", "client_secret": id + "_secret_" + randomHex(12), "created": s.now().Unix(),
		"customer": sub["customer"], "livemode": false, "metadata": obj{}, "payment_method": nil, "payment_method_types": []any{"card"},
		"status": "requires_payment_method", "usage": "off_session", "next_action": nil, "last_setup_error": nil, "description": nil,
		"application": nil, "cancellation_reason": nil, "flow_directions": nil, "latest_attempt": nil,
		"mandate": nil, "on_behalf_of": nil, "payment_method_configuration_details": nil, "payment_method_options": obj{},
		"single_use_mandate": nil, "automatic_payment_methods": nil}
	s.state.put("setup_intent", si)
	s.state.setupFor[id] = sub["id"].(string)
	sub["pending_setup_intent"] = id
	s.emit("setup_intent.created", si, nil)
	return si
}

func (s *Server) retrieveSetupIntent(r *request) (any, *apiError) {
	si, ok := s.state.get("setup_intent", r.PathValue("id"))
	if !ok {
		return nil, noSuch("setup_intent", r.PathValue("id"), "intent")
	}
	return si, nil
}

// confirmSetupIntent saves a card: attached to the customer and, for a
// subscription's pending SetupIntent, made the subscription's default
// payment method. A card that needs authentication is asked once here, and
// the control Authenticate is not modelled for SetupIntents: it succeeds.
func (s *Server) confirmSetupIntent(r *request) (any, *apiError) {
	si, ok := s.state.get("setup_intent", r.PathValue("id"))
	if !ok {
		return nil, noSuch("setup_intent", r.PathValue("id"), "intent")
	}
	if si["status"] != "requires_payment_method" && si["status"] != "requires_confirmation" {
		return nil, &apiError{Status: 400, Type: "invalid_request_error", Code: "setup_intent_unexpected_state",
			Message: "This SetupIntent's status is " + str(si["status"]) + ", so it cannot be confirmed."}
	}
	pm, aerr := s.paymentMethod(r.p.str("payment_method"), "payment_method")
	if aerr != nil {
		return nil, aerr
	}
	c, aerr := s.liveCustomer(str(si["customer"]), "customer")
	if aerr != nil {
		return nil, aerr
	}
	s.attach(pm, c)
	before := clone(si)
	si["status"], si["payment_method"] = "succeeded", pm["id"]
	s.emit("setup_intent.succeeded", si, diff(before, si))
	if sub, ok := s.state.get("subscription", s.state.setupFor[si["id"].(string)]); ok {
		sb := clone(sub)
		sub["default_payment_method"], sub["pending_setup_intent"] = pm["id"], nil
		s.emit("customer.subscription.updated", sub, diff(sb, sub))
	}
	return si, nil
}

// endTrial runs a trial's end: with a payment method the renewal bills as
// usual; without one, trial_settings.end_behavior.missing_payment_method
// says what happens: cancel, pause, or (the default) create_invoice, which
// makes the invoice that cannot be paid and the subscription past_due.
// It reports whether the renewal is to go on.
func (s *Server) endTrial(sub obj) bool {
	if s.defaultPaymentMethod(sub) != "" || s.payMode != PayWithPaymentMethods {
		return true
	}
	behavior := "create_invoice"
	if ts, ok := sub["trial_settings"].(obj); ok {
		if eb, ok := ts["end_behavior"].(obj); ok {
			if b, _ := eb["missing_payment_method"].(string); b != "" {
				behavior = b
			}
		}
	}
	switch behavior {
	case "cancel":
		s.cancelNow(sub)
		return false
	case "pause":
		before := clone(sub)
		sub["status"], sub["pause_collection"] = "paused", nil
		s.emit("customer.subscription.paused", sub, diff(before, sub))
		return false
	}
	return true
}

// trialWillEnd emits customer.subscription.trial_will_end three days
// before a trial ends (at once for a shorter trial), once.
func (s *Server) trialWillEnd(sub obj) {
	end := toInt(sub["trial_end"])
	if sub["status"] != "trialing" || end == 0 || s.state.trialWarned[sub["id"].(string)] || s.now().Unix() < end-3*24*3600 {
		return
	}
	s.state.trialWarned[sub["id"].(string)] = true
	s.emit("customer.subscription.trial_will_end", sub, nil)
}

// Billing portal configurations.

func (s *Server) createPortalConfiguration(r *request) (any, *apiError) {
	if !r.p.has("business_profile") {
		return nil, missingParam("business_profile")
	}
	if !r.p.has("features") {
		return nil, missingParam("features")
	}
	now := s.now().Unix()
	c := obj{"id": s.newID("bpc"), "object": "billing_portal.configuration", "active": true, "is_default": false,
		"created": now, "updated": now, "livemode": false, "application": nil, "metadata": obj{},
		"default_return_url": nullable(r.p.str("default_return_url")), "login_page": obj{"enabled": false, "url": nil}}
	s.setPortalConfiguration(c, r.p)
	if md, given := r.p.metadata(); given {
		applyMetadata(c, md)
	}
	s.state.put("billing_portal.configuration", c)
	s.emit("billing_portal.configuration.created", c, nil)
	return c, nil
}

func (s *Server) updatePortalConfiguration(r *request) (any, *apiError) {
	c, ok := s.state.get("billing_portal.configuration", r.PathValue("id"))
	if !ok {
		return nil, noSuch("billing portal configuration", r.PathValue("id"), "configuration")
	}
	before := clone(c)
	if active, given, ok := r.p.boolean("active"); !ok {
		return nil, invalid("active", "active must be true or false")
	} else if given {
		c["active"] = active
	}
	if r.p.has("default_return_url") {
		c["default_return_url"] = nullable(r.p.str("default_return_url"))
	}
	s.setPortalConfiguration(c, r.p)
	if md, given := r.p.metadata(); given {
		applyMetadata(c, md)
	}
	if prev := diff(before, c); len(prev) > 0 {
		c["updated"] = s.now().Unix()
		s.emit("billing_portal.configuration.updated", c, prev)
	}
	return c, nil
}

func (s *Server) retrievePortalConfiguration(r *request) (any, *apiError) {
	c, ok := s.state.get("billing_portal.configuration", r.PathValue("id"))
	if !ok {
		return nil, noSuch("billing portal configuration", r.PathValue("id"), "configuration")
	}
	return c, nil
}

// setPortalConfiguration keeps the business profile and features a
// configuration is given, shaped as Stripe shows them.
func (s *Server) setPortalConfiguration(c obj, p params) {
	if bp := p.obj("business_profile"); p.has("business_profile") {
		c["business_profile"] = obj{"headline": nullable(bp.str("headline")), "privacy_policy_url": nullable(bp.str("privacy_policy_url")),
			"terms_of_service_url": nullable(bp.str("terms_of_service_url"))}
	}
	if !p.has("features") {
		return
	}
	f := p.obj("features")
	enabled := func(name string) bool { v, _, _ := f.obj(name).boolean("enabled"); return v }
	c["features"] = obj{
		"customer_update":       obj{"enabled": enabled("customer_update"), "allowed_updates": strsAny(f.obj("customer_update").strs("allowed_updates"))},
		"invoice_history":       obj{"enabled": enabled("invoice_history")},
		"payment_method_update": obj{"enabled": enabled("payment_method_update")},
		"subscription_cancel": obj{"enabled": enabled("subscription_cancel"), "mode": "at_period_end", "proration_behavior": "none",
			"cancellation_reason": obj{"enabled": false, "options": []any{}}},
		"subscription_pause":  obj{"enabled": enabled("subscription_pause")},
		"subscription_update": obj{"enabled": enabled("subscription_update"), "default_allowed_updates": []any{}, "products": nil, "proration_behavior": "none"},
	}
}

func strsAny(ss []string) []any {
	out := []any{}
	for _, s := range ss {
		out = append(out, s)
	}
	return out
}
