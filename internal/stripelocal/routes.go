package stripelocal

import "net/http"

func (s *Server) routes() {
	s.api("POST /v1/products", s.createProduct)
	s.api("GET /v1/products", s.listProducts)
	s.api("GET /v1/products/{id}", s.retrieveProduct)
	s.api("POST /v1/products/{id}", s.updateProduct)

	s.api("POST /v1/prices", s.createPrice)
	s.api("GET /v1/prices", s.listPrices)
	s.api("GET /v1/prices/{id}", s.retrievePrice)
	s.api("POST /v1/prices/{id}", s.updatePrice)

	s.api("POST /v1/billing/meters", s.createMeter)
	s.api("GET /v1/billing/meters", s.listMeters)
	s.api("GET /v1/billing/meters/{id}", s.retrieveMeter)
	s.api("POST /v1/billing/meters/{id}", s.updateMeter)
	s.api("POST /v1/billing/meters/{id}/deactivate", s.setMeterStatus("inactive"))
	s.api("POST /v1/billing/meters/{id}/reactivate", s.setMeterStatus("active"))
	s.api("GET /v1/billing/meters/{id}/event_summaries", s.meterEventSummaries)
	s.api("POST /v1/billing/meter_events", s.createMeterEvent)

	s.api("POST /v1/customers", s.createCustomer)
	s.api("GET /v1/customers", s.listCustomers)
	s.api("GET /v1/customers/search", s.searchCustomers)
	s.api("GET /v1/customers/{id}", s.retrieveCustomer)
	s.api("POST /v1/customers/{id}", s.updateCustomer)
	s.api("DELETE /v1/customers/{id}", s.deleteCustomer)

	s.api("POST /v1/subscriptions", s.createSubscription)
	s.api("GET /v1/subscriptions", s.listSubscriptions)
	s.api("GET /v1/subscriptions/search", s.searchSubscriptions)
	s.api("GET /v1/subscriptions/{id}", s.retrieveSubscription)
	s.api("POST /v1/subscriptions/{id}", s.updateSubscription)
	s.api("DELETE /v1/subscriptions/{id}", s.cancelSubscription)

	s.api("POST /v1/subscription_schedules", s.createSchedule)
	s.api("GET /v1/subscription_schedules/{id}", s.retrieveSchedule)
	s.api("POST /v1/subscription_schedules/{id}", s.updateSchedule)
	s.api("POST /v1/subscription_schedules/{id}/release", s.releaseSchedule)

	s.api("POST /v1/subscription_items", s.createSubscriptionItem)
	s.api("GET /v1/subscription_items/{id}", s.retrieveSubscriptionItem)
	s.api("POST /v1/subscription_items/{id}", s.updateSubscriptionItem)
	s.api("DELETE /v1/subscription_items/{id}", s.deleteSubscriptionItem)

	s.api("POST /v1/payment_methods/{id}/attach", s.attachPaymentMethod)
	s.api("POST /v1/payment_methods/{id}/detach", s.detachPaymentMethod)
	s.api("GET /v1/payment_methods/{id}", s.retrievePaymentMethod)
	s.api("GET /v1/payment_intents/{id}", s.retrievePaymentIntent)
	s.api("POST /v1/payment_intents/{id}/confirm", s.confirmPaymentIntent)

	s.api("GET /v1/invoices", s.listInvoices)
	s.api("GET /v1/invoices/upcoming", s.upcomingInvoice)
	s.api("GET /v1/invoices/{id}", s.retrieveInvoice)

	s.api("GET /v1/setup_intents/{id}", s.retrieveSetupIntent)
	s.api("POST /v1/setup_intents/{id}/confirm", s.confirmSetupIntent)

	s.api("POST /v1/checkout/sessions", s.createCheckoutSession)
	s.api("GET /v1/checkout/sessions/{id}", s.retrieveCheckoutSession)
	s.api("POST /v1/checkout/sessions/{id}/expire", s.expireCheckoutSession)

	s.api("POST /v1/billing_portal/sessions", s.createPortalSession)
	s.api("POST /v1/billing_portal/configurations", s.createPortalConfiguration)
	s.api("GET /v1/billing_portal/configurations/{id}", s.retrievePortalConfiguration)
	s.api("POST /v1/billing_portal/configurations/{id}", s.updatePortalConfiguration)

	s.api("GET /v1/events", s.listEvents)
	s.api("GET /v1/events/{id}", s.retrieveEvent)

	s.api("POST /v1/webhook_endpoints", s.createWebhookEndpoint)
	s.api("GET /v1/webhook_endpoints", s.listWebhookEndpoints)
	s.api("DELETE /v1/webhook_endpoints/{id}", s.deleteWebhookEndpoint)
	s.api("GET /v1/webhook_endpoints/{id}", s.retrieveWebhookEndpoint)
	s.api("POST /v1/webhook_endpoints/{id}", s.updateWebhookEndpoint)

	s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 404, map[string]any{"error": &apiError{Type: "invalid_request_error",
			Message: "Unrecognized request URL (" + r.Method + ": " + r.URL.Path + "). The local Stripe does not model this endpoint; see MODEL.md."}})
	})
	s.controlRoutes()
	s.hostedRoutes()
}
