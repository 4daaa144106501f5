package stripelocal

import "slices"

// Payments, as far as subscriptions need them (FIDELITY.md, rules 3 and 4):
// an invoice is paid automatically only with a payment method, the
// subscription's default_payment_method or else the customer's
// invoice_settings.default_payment_method; each invoice due has a
// PaymentIntent; the test tokens attach as copies with IDs of their own.

// Payment modes, a test control. The default is Stripe's behaviour.
const (
	// PayWithPaymentMethods charges the payment method an invoice
	// resolves to, as Stripe does; without one nothing is paid.
	PayWithPaymentMethods = ""
	// PayEverything pays every invoice at once, with or without a payment
	// method: an explicit test control, more lenient than Stripe.
	PayEverything = "always"
	// PayNothing leaves every invoice open until Settle says how it ends.
	PayNothing = "never"
)

// testCards are the test payment method tokens modelled, by what a charge
// does: succeed, fail (card_declined), or require authentication (3-D
// Secure) every time. attachable is false for the tokens Stripe refuses to
// attach to a customer.
var testCards = map[string]struct {
	behavior   string
	last4      string
	attachable bool
}{
	"pm_card_visa":                   {"succeed", "4242", true},
	"pm_card_chargeCustomerFail":     {"fail", "0341", true},
	"pm_card_authenticationRequired": {"authenticate", "3184", true},
	"pm_card_visa_chargeDeclined":    {"decline", "0002", false},
	"pm_card_chargeDeclined":         {"decline", "0002", false},
}

// newPaymentMethod makes a card payment method for a test token. Callers
// hold s.mu.
func (s *Server) newPaymentMethod(token string) obj {
	card := testCards[token]
	pm := obj{
		"id": s.newID("pm"), "object": "payment_method", "type": "card", "created": s.now().Unix(), "livemode": false,
		"customer": nil, "metadata": obj{},
		"billing_details": obj{"address": obj{"city": nil, "country": nil, "line1": nil, "line2": nil, "postal_code": nil, "state": nil},
			"email": nil, "name": nil, "phone": nil},
		"card": obj{"brand": "visa", "last4": card.last4, "exp_month": 12, "exp_year": 2034, "funding": "credit", "country": "US",
			"fingerprint": randomHex(8), "display_brand": "visa", "generated_from": nil, "wallet": nil,
			"checks":   obj{"address_line1_check": nil, "address_postal_code_check": nil, "cvc_check": "pass"},
			"networks": obj{"available": []any{"visa"}, "preferred": nil}, "three_d_secure_usage": obj{"supported": true}},
	}
	s.state.put("payment_method", pm)
	s.state.cardBehavior[pm["id"].(string)] = card.behavior
	return pm
}

// paymentMethod resolves a payment method parameter: a test token makes a
// fresh copy, as Stripe's tokens do; an ID must exist and not be detached.
func (s *Server) paymentMethod(id, param string) (obj, *apiError) {
	if card, ok := testCards[id]; ok {
		if !card.attachable {
			return nil, cardDeclined(param)
		}
		return s.newPaymentMethod(id), nil
	}
	pm, ok := s.state.get("payment_method", id)
	if !ok {
		return nil, noSuch("PaymentMethod", id, param)
	}
	if s.state.detached[id] {
		return nil, invalid(param, "The provided PaymentMethod was previously used with a PaymentIntent without Customer attachment, shared with a connected account without Customer attachment, or was detached from a Customer. It may not be used again. To use a PaymentMethod multiple times, you must attach it to a Customer first.")
	}
	return pm, nil
}

func cardDeclined(param string) *apiError {
	return &apiError{Status: 402, Type: "card_error", Code: "card_declined", DeclineCode: "generic_decline", Param: param,
		Message: "Your card was declined."}
}

func (s *Server) attachPaymentMethod(r *request) (any, *apiError) {
	cid := r.p.str("customer")
	if cid == "" {
		return nil, missingParam("customer")
	}
	c, aerr := s.liveCustomer(cid, "customer")
	if aerr != nil {
		return nil, aerr
	}
	pm, aerr := s.paymentMethod(r.PathValue("id"), "payment_method")
	if aerr != nil {
		return nil, aerr
	}
	if owner, _ := pm["customer"].(string); owner != "" && owner != cid {
		return nil, invalid("payment_method", "The payment method you provided has already been attached to a customer.")
	}
	s.attach(pm, c)
	return pm, nil
}

// attach makes pm one of the customer's payment methods.
func (s *Server) attach(pm, c obj) {
	if pm["customer"] == c["id"] {
		return
	}
	pm["customer"] = c["id"]
	s.emit("payment_method.attached", pm, nil)
}

func (s *Server) detachPaymentMethod(r *request) (any, *apiError) {
	pm, ok := s.state.get("payment_method", r.PathValue("id"))
	if !ok {
		return nil, noSuch("PaymentMethod", r.PathValue("id"), "payment_method")
	}
	if pm["customer"] == nil {
		return nil, invalid("payment_method", "The payment method %s is not attached to a customer.", pm["id"])
	}
	before := clone(pm)
	pm["customer"] = nil
	s.state.detached[pm["id"].(string)] = true
	for _, c := range s.state.objects["customer"] {
		if settings, _ := c["invoice_settings"].(obj); settings != nil && settings["default_payment_method"] == pm["id"] {
			settings["default_payment_method"] = nil
		}
	}
	s.emit("payment_method.detached", pm, diff(before, pm))
	return pm, nil
}

func (s *Server) retrievePaymentMethod(r *request) (any, *apiError) {
	pm, ok := s.state.get("payment_method", r.PathValue("id"))
	if !ok {
		return nil, noSuch("PaymentMethod", r.PathValue("id"), "payment_method")
	}
	return pm, nil
}

// ownPaymentMethod checks that id is a payment method attached to the
// customer, as a default payment method must be.
func (s *Server) ownPaymentMethod(customer any, id, param string) *apiError {
	pm, ok := s.state.get("payment_method", id)
	if !ok || pm["customer"] != customer {
		return invalid(param, "The customer does not have a payment method with the ID %s. The payment method must be attached to the customer.", id)
	}
	return nil
}

// defaultPaymentMethod is what pays the subscription's invoices: its own
// default payment method, else its customer's; "" when there is none.
func (s *Server) defaultPaymentMethod(sub obj) string {
	if id, _ := sub["default_payment_method"].(string); id != "" {
		return id
	}
	c, _ := s.state.get("customer", sub["customer"].(string))
	settings, _ := c["invoice_settings"].(obj)
	id, _ := settings["default_payment_method"].(string)
	return id
}

// newPaymentIntent makes the PaymentIntent of an invoice that is due.
func (s *Server) newPaymentIntent(inv obj) obj {
	id := s.newID("pi")
	pi := obj{
		"id": id, "object": "payment_intent", "amount": inv["amount_due"], "amount_capturable": 0, "amount_received": 0,
		"currency": inv["currency"], "customer": inv["customer"], "invoice": inv["id"], "status": "requires_payment_method",
		"client_secret": id + "_secret_" + randomHex(12), "capture_method": "automatic", "confirmation_method": "automatic",
		"created": s.now().Unix(), "livemode": false, "metadata": obj{}, "payment_method": nil, "payment_method_types": []any{"card"},
		"next_action": nil, "last_payment_error": nil, "setup_future_usage": nil, "canceled_at": nil, "cancellation_reason": nil,
		"description": nil, "latest_charge": nil, "receipt_email": nil, "statement_descriptor": nil, "application": nil,
		"application_fee_amount": nil, "automatic_payment_methods": nil, "on_behalf_of": nil, "processing": nil,
		"review": nil, "shipping": nil, "source": nil, "statement_descriptor_suffix": nil, "transfer_data": nil,
		"transfer_group": nil, "payment_method_options": obj{}, "payment_method_configuration_details": nil,
	}
	s.state.put("payment_intent", pi)
	inv["payment_intent"] = id
	s.emit("payment_intent.created", pi, nil)
	return pi
}

// Outcomes of a charge.
const (
	charged          = "paid"
	chargeFailed     = "failed"
	chargeNeedsAuth  = "action_required"
	noPaymentMethod  = "no_payment_method"
	chargeHeldByTest = "held"
)

// collect tries to pay an open invoice that is due, as Stripe does when it
// finalizes one: with the subscription's payment method. It returns the
// outcome; the invoice and its PaymentIntent reflect it, and the events of
// a payment or a failure are emitted, but not the subscription's change of
// status, which depends on where the invoice stands (callers decide).
func (s *Server) collect(inv, sub obj) string {
	pi := s.invoiceIntent(inv)
	switch s.payMode {
	case PayEverything:
		s.succeed(pi, inv, "")
		return charged
	case PayNothing:
		return chargeHeldByTest
	}
	pm := s.defaultPaymentMethod(sub)
	if pm == "" {
		return noPaymentMethod
	}
	return s.charge(pi, inv, pm)
}

// invoiceIntent returns the invoice's PaymentIntent, making it if needed.
func (s *Server) invoiceIntent(inv obj) obj {
	if id, _ := inv["payment_intent"].(string); id != "" {
		pi, _ := s.state.get("payment_intent", id)
		return pi
	}
	return s.newPaymentIntent(inv)
}

// charge attempts pi with the payment method pm.
func (s *Server) charge(pi, inv obj, pm string) string {
	before := clone(pi)
	pi["payment_method"], pi["last_payment_error"], pi["next_action"] = pm, nil, nil
	switch s.state.cardBehavior[pm] {
	case "succeed":
		s.succeed(pi, inv, pm)
		return charged
	case "authenticate":
		pi["status"] = "requires_action"
		pi["next_action"] = obj{"type": "use_stripe_sdk", "use_stripe_sdk": obj{"type": "three_d_secure_redirect", "stripe_js": "local"}}
		s.emit("payment_intent.requires_action", pi, diff(before, pi))
		s.emit("invoice.payment_action_required", inv, nil)
		return chargeNeedsAuth
	default:
		pi["status"] = "requires_payment_method"
		pi["last_payment_error"] = obj{"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
			"message": "Your card was declined.", "payment_method": clone(s.mustGet("payment_method", pm))}
		s.emit("payment_intent.payment_failed", pi, diff(before, pi))
		return chargeFailed
	}
}

// succeed marks pi succeeded and its invoice paid.
func (s *Server) succeed(pi, inv obj, pm string) {
	before := clone(pi)
	pi["status"], pi["amount_received"], pi["next_action"], pi["last_payment_error"] = "succeeded", pi["amount"], nil, nil
	if pm != "" {
		pi["payment_method"] = pm
	}
	s.emit("payment_intent.succeeded", pi, diff(before, pi))
	s.markPaid(inv)
}

func (s *Server) mustGet(kind, id string) obj {
	o, _ := s.state.get(kind, id)
	return o
}

func (s *Server) retrievePaymentIntent(r *request) (any, *apiError) {
	pi, ok := s.state.get("payment_intent", r.PathValue("id"))
	if !ok {
		return nil, noSuch("payment_intent", r.PathValue("id"), "intent")
	}
	return pi, nil
}

// confirmPaymentIntent confirms an invoice's PaymentIntent with a payment
// method, as Stripe.js does with the client secret (or a server with the
// secret key). A subscription created with
// payment_settings.save_default_payment_method=on_subscription keeps the
// payment method as its default once the payment succeeds.
func (s *Server) confirmPaymentIntent(r *request) (any, *apiError) {
	pi, ok := s.state.get("payment_intent", r.PathValue("id"))
	if !ok {
		return nil, noSuch("payment_intent", r.PathValue("id"), "intent")
	}
	if !slices.Contains([]any{"requires_payment_method", "requires_confirmation"}, pi["status"]) {
		return nil, &apiError{Status: 400, Type: "invalid_request_error", Code: "payment_intent_unexpected_state",
			Message: "This PaymentIntent's status is " + pi["status"].(string) + ", so it cannot be confirmed."}
	}
	pmID := r.p.str("payment_method")
	if pmID == "" {
		pmID, _ = pi["payment_method"].(string)
	}
	if pmID == "" {
		return nil, &apiError{Status: 400, Type: "invalid_request_error", Code: "payment_intent_unexpected_state", Param: "payment_method",
			Message: "You cannot confirm this PaymentIntent because it's missing a payment method."}
	}
	pm, aerr := s.paymentMethod(pmID, "payment_method")
	if aerr != nil {
		return nil, aerr
	}
	inv := s.mustGet("invoice", pi["invoice"].(string))
	if c, ok := s.state.get("customer", pi["customer"].(string)); ok && c["deleted"] != true {
		s.attach(pm, c)
	}
	outcome := s.charge(pi, inv, pm["id"].(string))
	if sub, ok := s.state.get("subscription", inv["subscription"].(string)); ok {
		s.afterFirstAttempt(sub, inv, outcome)
	}
	return pi, nil
}

// afterFirstAttempt settles a subscription's status after a payment attempt
// of an invoice: paid makes it active (keeping the payment method when
// asked to); a failure of a renewal makes it past_due, while a first
// invoice leaves it incomplete.
func (s *Server) afterFirstAttempt(sub, inv obj, outcome string) {
	switch outcome {
	case charged:
		if settings, _ := sub["payment_settings"].(obj); settings != nil && settings["save_default_payment_method"] == "on_subscription" {
			if pi, ok := s.state.get("payment_intent", str(inv["payment_intent"])); ok {
				sub["default_payment_method"] = pi["payment_method"]
			}
		}
		if slices.Contains([]any{"incomplete", "past_due", "unpaid"}, sub["status"]) {
			s.setStatus(sub, "active")
		}
	case chargeFailed, chargeNeedsAuth:
		s.recordFailedAttempt(inv, outcome == chargeFailed)
		if sub["status"] != "incomplete" {
			s.pastDue(sub, inv)
		}
	}
}

// authenticate completes (or fails) the 3-D Secure challenge of a
// PaymentIntent that requires action: the customer's side of
// pm_card_authenticationRequired, a test control.
func (s *Server) authenticate(id string, pass bool) *apiError {
	pi, ok := s.state.get("payment_intent", id)
	if !ok || pi["status"] != "requires_action" {
		return invalid("intent", "the PaymentIntent %s does not require action", id)
	}
	inv := s.mustGet("invoice", pi["invoice"].(string))
	sub, _ := s.state.get("subscription", str(inv["subscription"]))
	if !pass {
		before := clone(pi)
		pi["status"], pi["next_action"] = "requires_payment_method", nil
		pi["last_payment_error"] = obj{"type": "card_error", "code": "payment_intent_authentication_failure",
			"message": "The provided PaymentMethod has failed authentication."}
		s.emit("payment_intent.payment_failed", pi, diff(before, pi))
		return nil
	}
	s.succeed(pi, inv, "")
	if sub != nil {
		s.afterFirstAttempt(sub, inv, charged)
	}
	return nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}
