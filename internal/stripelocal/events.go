package stripelocal

import "strings"

// emit records an event about o (a snapshot is taken now) and queues its
// deliveries. prev holds data.previous_attributes for updates. Callers hold
// s.mu.
func (s *Server) emit(typ string, o obj, prev obj) {
	ev := obj{
		"id":               s.newID("evt"),
		"object":           "event",
		"api_version":      APIVersion,
		"created":          s.now().Unix(),
		"livemode":         false,
		"pending_webhooks": 0,
		"request":          obj{"id": nil, "idempotency_key": nil}, // automatic: the clock or a control

		"type": typ,
		"data": obj{"object": clone(o)},
	}
	if s.current != nil {
		ev["request"] = clone(s.current)
	}
	if len(prev) > 0 {
		ev["data"].(obj)["previous_attributes"] = clone(prev)
	}
	s.state.events = append(s.state.events, ev)
	s.state.eventByID[ev["id"].(string)] = ev
	pending := 0
	for _, ep := range s.state.endpoints {
		if ep.wants(typ) {
			pending++
			s.queue(&delivery{endpoint: ep, event: ev})
		}
	}
	ev["pending_webhooks"] = pending
}

// diff returns the previous values of the top-level fields of before that
// differ in after, as Stripe's previous_attributes does.
func diff(before, after obj) obj {
	prev := obj{}
	b, a := clone(before), clone(after)
	for k, v := range b {
		if !jsonEqual(v, a[k]) {
			prev[k] = v
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			prev[k] = nil
		}
	}
	return prev
}

func jsonEqual(a, b any) bool {
	return string(mustJSON(a)) == string(mustJSON(b))
}

func (s *Server) retrieveEvent(r *request) (any, *apiError) {
	ev, ok := s.state.eventByID[r.PathValue("id")]
	if !ok {
		return nil, noSuch("event", r.PathValue("id"), "id")
	}
	return ev, nil
}

// listEvents supports type (with a trailing * wildcard) and
// delivery_success.
func (s *Server) listEvents(r *request) (any, *apiError) {
	typ := r.p.str("type")
	ds, dsGiven, ok := r.p.boolean("delivery_success")
	if !ok {
		return nil, invalid("delivery_success", "delivery_success must be true or false")
	}
	limit := int64(10)
	if n, given, ok := r.p.integer("limit"); !ok || (given && (n < 1 || n > 100)) {
		return nil, invalid("limit", "limit must be an integer from 1 to 100")
	} else if given {
		limit = n
	}
	var items []obj
	for i := len(s.state.events) - 1; i >= 0; i-- {
		ev := s.state.events[i]
		t := ev["type"].(string)
		if typ != "" && t != typ && !(strings.HasSuffix(typ, "*") && strings.HasPrefix(t, strings.TrimSuffix(typ, "*"))) {
			continue
		}
		if dsGiven && s.state.failedEvent[ev["id"].(string)] == ds {
			continue
		}
		items = append(items, ev)
	}
	return page(items, "/v1/events", r.p, limit)
}

// webhook endpoints, through Stripe's API.

func (s *Server) createWebhookEndpoint(r *request) (any, *apiError) {
	u := r.p.str("url")
	if u == "" {
		return nil, missingParam("url")
	}
	events := r.p.strs("enabled_events")
	if len(events) == 0 {
		return nil, missingParam("enabled_events")
	}
	// Stripe: "You can register up to 16 webhook endpoints on each Stripe
	// account" (FIDELITY.md). Its refusal's text is not known.
	if len(s.state.endpoints) >= MaxWebhookEndpoints {
		return nil, invalid("url", "You have reached the maximum of %d webhook endpoints on this account.", MaxWebhookEndpoints)
	}
	ep := s.addEndpoint(u, "whsec_"+randomHex(16), events, r.p.str("api_version"))
	ep.obj["description"] = nullable(r.p.str("description"))
	if md, given := r.p.metadata(); given {
		applyMetadata(ep.obj, md)
	}
	o := clone(ep.obj)
	o["secret"] = ep.secrets[0] // only the create response shows the secret
	return o, nil
}

// MaxWebhookEndpoints is how many webhook endpoints an account holds.
const MaxWebhookEndpoints = 16

func (s *Server) endpointByID(id string) (*endpoint, *apiError) {
	for _, ep := range s.state.endpoints {
		if ep.obj["id"] == id {
			return ep, nil
		}
	}
	return nil, noSuch("webhook endpoint", id, "id")
}

func (s *Server) retrieveWebhookEndpoint(r *request) (any, *apiError) {
	ep, aerr := s.endpointByID(r.PathValue("id"))
	if aerr != nil {
		return nil, aerr
	}
	return ep.obj, nil
}

// updateWebhookEndpoint changes url, enabled_events, description, metadata
// and disabled. api_version "is only available on creation" (stripe-go
// v76): the referee refuses it before it gets here.
func (s *Server) updateWebhookEndpoint(r *request) (any, *apiError) {
	ep, aerr := s.endpointByID(r.PathValue("id"))
	if aerr != nil {
		return nil, aerr
	}
	if r.p.has("api_version") {
		return nil, invalid("api_version", "Received unknown parameter: api_version")
	}
	if r.p.has("url") {
		if r.p.str("url") == "" {
			return nil, invalid("url", "url must not be empty")
		}
		ep.url = r.p.str("url")
		ep.obj["url"] = ep.url
	}
	if r.p.has("enabled_events") {
		events := r.p.strs("enabled_events")
		if len(events) == 0 {
			return nil, invalid("enabled_events", "enabled_events must not be empty")
		}
		ep.events = events
		ep.obj["enabled_events"] = events
	}
	if r.p.has("description") {
		ep.obj["description"] = nullable(r.p.str("description"))
	}
	if md, given := r.p.metadata(); given {
		applyMetadata(ep.obj, md)
	}
	if disabled, given, ok := r.p.boolean("disabled"); !ok {
		return nil, invalid("disabled", "disabled must be true or false")
	} else if given {
		ep.obj["status"] = map[bool]string{true: "disabled", false: "enabled"}[disabled]
	}
	return ep.obj, nil
}

func (s *Server) listWebhookEndpoints(r *request) (any, *apiError) {
	var items []obj
	for i := len(s.state.endpoints) - 1; i >= 0; i-- {
		items = append(items, s.state.endpoints[i].obj)
	}
	return page(items, "/v1/webhook_endpoints", r.p, 100)
}

func (s *Server) deleteWebhookEndpoint(r *request) (any, *apiError) {
	id := r.PathValue("id")
	for i, ep := range s.state.endpoints {
		if ep.obj["id"] == id {
			s.state.endpoints = append(s.state.endpoints[:i], s.state.endpoints[i+1:]...)
			return obj{"id": id, "object": "webhook_endpoint", "deleted": true}, nil
		}
	}
	return nil, noSuch("webhook endpoint", id, "id")
}

// addEndpoint registers a webhook endpoint. Callers hold s.mu.
func (s *Server) addEndpoint(url, secret string, events []string, apiVersion string) *endpoint {
	if apiVersion == "" {
		apiVersion = APIVersion
	}
	ep := &endpoint{url: url, secrets: []string{secret}, events: events, apiVersion: apiVersion, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.runEndpoint(ep)
	ep.obj = obj{
		"id": s.newID("we"), "object": "webhook_endpoint", "url": url, "enabled_events": events,
		"api_version": apiVersion, "status": "enabled", "created": s.now().Unix(), "livemode": false, "metadata": obj{},
	}
	s.state.endpoints = append(s.state.endpoints, ep)
	return ep
}
