package stripelocal

import "strings"

func (s *Server) createCustomer(r *request) (any, *apiError) {
	c := obj{
		"id": s.newID("cus"), "object": "customer", "created": s.now().Unix(), "livemode": false,
		"email": nullable(r.p.str("email")), "name": nullable(r.p.str("name")),
		"description": nullable(r.p.str("description")), "metadata": obj{}, "delinquent": false,
		"balance": 0, "currency": nil, "default_source": nil, "invoice_prefix": strings.ToUpper(randomHex(4)),
		"invoice_settings": obj{"custom_fields": nil, "default_payment_method": nil, "footer": nil, "rendering_options": nil},
	}
	if md, given := r.p.metadata(); given {
		applyMetadata(c, md)
	}
	var pm obj
	if id := r.p.str("payment_method"); id != "" {
		var aerr *apiError
		if pm, aerr = s.paymentMethod(id, "payment_method"); aerr != nil {
			return nil, aerr
		}
	}
	if id := r.p.obj("invoice_settings").str("default_payment_method"); id != "" && (pm == nil || (id != pm["id"] && id != r.p.str("payment_method"))) {
		return nil, invalid("invoice_settings[default_payment_method]", "The customer does not have a payment method with the ID %s. The payment method must be attached to the customer.", id)
	} else if id != "" {
		c["invoice_settings"].(obj)["default_payment_method"] = pm["id"]
	}
	s.state.put("customer", c)
	s.emit("customer.created", c, nil)
	if pm != nil {
		s.attach(pm, c)
	}
	return c, nil
}

// liveCustomer returns a customer that exists and is not deleted.
func (s *Server) liveCustomer(id, param string) (obj, *apiError) {
	c, ok := s.state.get("customer", id)
	if !ok || c["deleted"] == true {
		return nil, noSuch("customer", id, param)
	}
	return c, nil
}

func (s *Server) retrieveCustomer(r *request) (any, *apiError) {
	c, ok := s.state.get("customer", r.PathValue("id"))
	if !ok {
		return nil, noSuch("customer", r.PathValue("id"), "id")
	}
	if c["deleted"] == true {
		return obj{"id": c["id"], "object": "customer", "deleted": true}, nil
	}
	return c, nil
}

func (s *Server) updateCustomer(r *request) (any, *apiError) {
	c, aerr := s.liveCustomer(r.PathValue("id"), "id")
	if aerr != nil {
		return nil, aerr
	}
	before := clone(c)
	for _, f := range []string{"email", "name", "description"} {
		if r.p.has(f) {
			c[f] = nullable(r.p.str(f))
		}
	}
	if settings := r.p.obj("invoice_settings"); settings.has("default_payment_method") {
		id := settings.str("default_payment_method")
		if id != "" {
			if aerr := s.ownPaymentMethod(c["id"], id, "invoice_settings[default_payment_method]"); aerr != nil {
				return nil, aerr
			}
		}
		c["invoice_settings"].(obj)["default_payment_method"] = nullable(id)
	}
	if md, given := r.p.metadata(); given {
		applyMetadata(c, md)
	}
	if prev := diff(before, c); len(prev) > 0 {
		s.emit("customer.updated", c, prev)
	}
	return c, nil
}

// deleteCustomer deletes the customer and cancels its subscriptions, as
// Stripe does.
func (s *Server) deleteCustomer(r *request) (any, *apiError) {
	c, aerr := s.liveCustomer(r.PathValue("id"), "id")
	if aerr != nil {
		return nil, aerr
	}
	for _, id := range s.state.order["subscription"] {
		sub := s.state.objects["subscription"][id]
		if sub["customer"] == c["id"] && sub["status"] != "canceled" {
			s.cancelNow(sub)
		}
	}
	snapshot := clone(c)
	c["deleted"] = true
	s.state.deletedAt[c["id"].(string)] = s.now().Unix()
	s.emit("customer.deleted", snapshot, nil)
	return obj{"id": c["id"], "object": "customer", "deleted": true}, nil
}

func (s *Server) listCustomers(r *request) (any, *apiError) {
	email := r.p.str("email")
	return s.state.list("customer", "/v1/customers", r.p, func(c obj) bool {
		return c["deleted"] != true && (email == "" || c["email"] == email)
	})
}

// createPortalSession makes a portal session. Without a configuration it
// uses the account's default, which Stripe has only once someone saved the
// portal settings in the Dashboard (FIDELITY.md, rule 9).
func (s *Server) createPortalSession(r *request) (any, *apiError) {
	cid := r.p.str("customer")
	if cid == "" {
		return nil, missingParam("customer")
	}
	if _, aerr := s.liveCustomer(cid, "customer"); aerr != nil {
		return nil, aerr
	}
	config := "bpc_local_default"
	if id := r.p.str("configuration"); id != "" {
		c, ok := s.state.get("billing_portal.configuration", id)
		if !ok {
			return nil, noSuch("billing portal configuration", id, "configuration")
		}
		if c["active"] != true {
			return nil, invalid("configuration", "The configuration %s is not active. Activate it or use a different configuration.", id)
		}
		config = id
	} else if !s.portalDefault {
		return nil, invalid("configuration", "No configuration provided and your test mode default configuration has not been created. "+
			"Provide a configuration or create your default by saving your customer portal settings in test mode at https://dashboard.stripe.com/test/settings/billing/portal.")
	}
	id := s.newID("bps")
	return obj{
		"id": id, "object": "billing_portal.session", "created": s.now().Unix(), "customer": cid,
		"livemode": false, "locale": nil, "on_behalf_of": nil, "flow": nil, "configuration": config,
		"return_url": nullable(r.p.str("return_url")),
		"url":        "http://" + r.Host + "/_local/portal/" + id,
	}, nil
}
