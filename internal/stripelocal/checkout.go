package stripelocal

import (
	"slices"
	"strings"
	"time"
)

// Checkout Sessions in subscription mode (FIDELITY.md, rule 10): a session
// is open for 24 hours (or its expires_at); its url is the hosted page this
// server serves (hosted.go), where a person picks a test card and pays.
// Paying makes the payment method, the subscription (its first invoice paid
// with that card) and then checkout.session.completed.

// checkoutSession is what a session keeps besides its object: what the
// subscription it makes will be.
type checkoutSession struct {
	items        []any // subscription items: {price, quantity}
	metadata     map[string]string
	trialDays    int64
	trialMissing string // trial_settings.end_behavior.missing_payment_method
}

func (s *Server) createCheckoutSession(r *request) (any, *apiError) {
	if mode := r.p.str("mode"); mode != "subscription" {
		if mode == "" {
			return nil, missingParam("mode")
		}
		return nil, invalid("mode", "The local Stripe models Checkout in subscription mode only.")
	}
	cid := r.p.str("customer")
	if cid == "" {
		return nil, invalid("customer", "The local Stripe needs an existing customer for a Checkout Session.")
	}
	if _, aerr := s.liveCustomer(cid, "customer"); aerr != nil {
		return nil, aerr
	}
	lines := r.p.list("line_items")
	if len(lines) == 0 {
		return nil, missingParam("line_items")
	}
	if len(lines) > MaxSubscriptionItems {
		return nil, invalid("line_items", "You may only specify up to %d recurring line items in subscription mode.", MaxSubscriptionItems)
	}
	var items []any
	var currency any
	amount := int64(0)
	for i, l := range lines {
		lp := params(asMap(l))
		param := "line_items[" + itoa(int64(i)) + "]"
		price, ok := s.state.get("price", lp.str("price"))
		if !ok {
			return nil, noSuch("price", lp.str("price"), param+"[price]")
		}
		if price["active"] != true {
			return nil, invalid(param+"[price]", "The price specified is inactive. This field only accepts active prices.")
		}
		metered := price["recurring"] != nil && price["recurring"].(obj)["usage_type"] == "metered"
		q, given, okq := lp.integer("quantity")
		switch {
		case !okq:
			return nil, invalid(param+"[quantity]", "quantity must be an integer")
		case metered && given:
			return nil, invalid(param+"[quantity]", "Quantity should not be defined when `recurring.usage_type=metered`.")
		case !metered && !given:
			return nil, missingParam(param + "[quantity]")
		}
		item := obj{"price": price["id"]}
		if !metered {
			item["quantity"] = itoa(q)
			amount += toInt(price["unit_amount"]) * q
		}
		items = append(items, item)
		currency = price["currency"]
	}
	sd := r.p.obj("subscription_data")
	trial, _, ok := sd.integer("trial_period_days")
	if !ok || trial < 0 {
		return nil, invalid("subscription_data[trial_period_days]", "trial_period_days must be at least 1")
	}
	meta, _ := sd.metadata()
	now := s.now()
	expires := now.Add(24 * time.Hour).Unix()
	if n, given, ok := r.p.integer("expires_at"); !ok || (given && (n < now.Add(30*time.Minute).Unix() || n > expires)) {
		return nil, invalid("expires_at", "expires_at must be from 30 minutes to 24 hours after the session is made")
	} else if given {
		expires = n
	}
	id := "cs_test_" + randomHex(24)
	paymentStatus := "unpaid"
	if trial > 0 || amount == 0 {
		paymentStatus = "no_payment_required"
	}
	cs := obj{
		"id": id, "object": "checkout.session", "mode": "subscription", "status": "open", "payment_status": paymentStatus,
		"url": s.base + "/_local/checkout/" + id, "expires_at": expires, "created": now.Unix(), "livemode": false,
		"customer": cid, "customer_email": nil, "client_reference_id": nullable(r.p.str("client_reference_id")),
		"success_url": nullable(r.p.str("success_url")), "cancel_url": nullable(r.p.str("cancel_url")),
		"subscription": nil, "invoice": nil, "setup_intent": nil, "payment_intent": nil, "metadata": obj{},
		"currency": currency, "amount_subtotal": amount, "amount_total": amount,
		"automatic_tax": obj{"enabled": false, "status": nil}, "custom_fields": []any{},
		"custom_text":          obj{"after_submit": nil, "shipping_address": nil, "submit": nil, "terms_of_service_acceptance": nil},
		"payment_method_types": []any{"card"}, "shipping_options": []any{}, "customer_details": nil, "locale": nil,
		"payment_method_collection": "always", "ui_mode": "hosted", "total_details": obj{"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
	}
	if md, given := r.p.metadata(); given {
		applyMetadata(cs, md)
	}
	s.state.put("checkout.session", cs)
	s.state.checkouts[id] = &checkoutSession{items: items, metadata: meta, trialDays: trial,
		trialMissing: sd.obj("trial_settings").obj("end_behavior").str("missing_payment_method")}
	return cs, nil
}

func (s *Server) retrieveCheckoutSession(r *request) (any, *apiError) {
	cs, ok := s.state.get("checkout.session", r.PathValue("id"))
	if !ok {
		return nil, noSuch("checkout.session", r.PathValue("id"), "session")
	}
	return cs, nil
}

func (s *Server) expireCheckoutSession(r *request) (any, *apiError) {
	cs, ok := s.state.get("checkout.session", r.PathValue("id"))
	if !ok {
		return nil, noSuch("checkout.session", r.PathValue("id"), "session")
	}
	if cs["status"] != "open" {
		return nil, invalid("", "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of `%s`.", cs["status"])
	}
	s.expireCheckout(cs)
	return cs, nil
}

func (s *Server) expireCheckout(cs obj) {
	before := clone(cs)
	cs["status"], cs["url"] = "expired", nil
	s.emit("checkout.session.expired", cs, diff(before, cs))
}

// payCheckout is the hosted page's Pay button: the card (a test token)
// pays the session. It returns the outcome: charged, chargeNeedsAuth (the
// customer then authenticates, completeCheckout finishes), or an error a
// card gives (declined).
func (s *Server) payCheckout(id, token string) (string, *apiError) {
	cs, ok := s.state.get("checkout.session", id)
	if !ok {
		return "", noSuch("checkout.session", id, "session")
	}
	if cs["status"] != "open" || s.now().Unix() >= toInt(cs["expires_at"]) {
		return "", invalid("session", "This Checkout Session is no longer open.")
	}
	pending := s.state.checkouts[id]
	c, aerr := s.liveCustomer(cs["customer"].(string), "customer")
	if aerr != nil {
		return "", aerr
	}
	card, known := testCards[token]
	if !known {
		return "", invalid("payment_method", "Choose one of the test cards.")
	}
	// A card that declines leaves the session open, with nothing made: the
	// customer may try another (the subscription is made once the payment
	// goes through).
	if card.behavior == "decline" || card.behavior == "fail" {
		return "", cardDeclined("payment_method")
	}
	pm := s.newPaymentMethod(token)
	s.attach(pm, c)
	if sub, ok := s.state.get("subscription", str(cs["subscription"])); ok {
		// A second card after a failed authentication pays the same
		// subscription's first invoice.
		inv := s.mustGet("invoice", str(sub["latest_invoice"]))
		before := clone(cs)
		outcome := s.charge(s.invoiceIntent(inv), inv, pm["id"].(string))
		if outcome == charged {
			s.afterFirstAttempt(sub, inv, charged)
			s.completeCheckout(cs, before)
		}
		return outcome, nil
	}
	// The subscription waits for the card's payment, as Checkout's does.
	p := params{"customer": c["id"], "items": pending.items, "payment_behavior": "default_incomplete",
		"default_payment_method": pm["id"], "payment_settings": map[string]any{"save_default_payment_method": "on_subscription"}}
	if len(pending.metadata) > 0 {
		md := map[string]any{}
		for k, v := range pending.metadata {
			md[k] = v
		}
		p["metadata"] = md
	}
	if pending.trialDays > 0 {
		p["trial_period_days"] = itoa(pending.trialDays)
		if pending.trialMissing != "" {
			p["trial_settings"] = map[string]any{"end_behavior": map[string]any{"missing_payment_method": pending.trialMissing}}
		}
	}
	out, aerr := s.createSubscription(&request{p: p})
	if aerr != nil {
		return "", aerr
	}
	sub := s.mustGet("subscription", out.(obj)["id"].(string))
	inv := s.mustGet("invoice", str(sub["latest_invoice"]))
	before := clone(cs)
	cs["subscription"], cs["invoice"] = sub["id"], inv["id"]
	if sub["status"] != "incomplete" { // a trial, or nothing due
		s.completeCheckout(cs, before)
		return charged, nil
	}
	outcome := s.charge(s.invoiceIntent(inv), inv, pm["id"].(string))
	if outcome == charged {
		s.afterFirstAttempt(sub, inv, charged)
		s.completeCheckout(cs, before)
	}
	return outcome, nil // charged, or chargeNeedsAuth: the challenge comes next
}

// authenticateCheckout is the hosted 3-D Secure challenge of a session whose
// card needs it: pass completes the payment and the session.
func (s *Server) authenticateCheckout(id string, pass bool) *apiError {
	cs, ok := s.state.get("checkout.session", id)
	if !ok || cs["status"] != "open" || cs["invoice"] == nil {
		return invalid("session", "This Checkout Session is not waiting for authentication.")
	}
	inv := s.mustGet("invoice", str(cs["invoice"]))
	before := clone(cs)
	if aerr := s.authenticate(str(inv["payment_intent"]), pass); aerr != nil {
		return aerr
	}
	if !pass {
		return nil
	}
	delete(before, "subscription") // the session's change is its completion
	s.completeCheckout(cs, before)
	return nil
}

func (s *Server) completeCheckout(cs, before obj) {
	cs["status"], cs["url"] = "complete", nil
	if cs["payment_status"] == "unpaid" {
		cs["payment_status"] = "paid"
	}
	c := s.mustGet("customer", cs["customer"].(string))
	cs["customer_details"] = obj{"email": c["email"], "name": c["name"], "phone": nil, "tax_exempt": "none", "tax_ids": []any{},
		"address": nil}
	s.emit("checkout.session.completed", cs, diff(before, cs))
}

// successURL is where the hosted page sends the customer after paying.
func successURL(cs obj) string {
	u, _ := cs["success_url"].(string)
	return strings.ReplaceAll(u, "{CHECKOUT_SESSION_ID}", cs["id"].(string))
}

// lineSummary describes a session's items for its hosted page.
func (s *Server) lineSummary(id string) []string {
	var out []string
	for _, it := range s.state.checkouts[id].items {
		price := s.mustGet("price", asMap(it)["price"].(string))
		product := s.mustGet("product", price["product"].(string))
		name, _ := product["name"].(string)
		if price["recurring"].(obj)["usage_type"] == "metered" {
			out = append(out, name+": "+price["unit_amount_decimal"].(string)+" cents per minute, billed in arrears")
		} else {
			out = append(out, name+": "+price["unit_amount_decimal"].(string)+" cents per "+price["recurring"].(obj)["interval"].(string))
		}
	}
	slices.Sort(out)
	return out
}
