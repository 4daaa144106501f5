package stripelocal

import (
	"fmt"
	"slices"
	"strconv"
	"time"
)

func (s *Server) createMeter(r *request) (any, *apiError) {
	display, eventName := r.p.str("display_name"), r.p.str("event_name")
	if display == "" {
		return nil, missingParam("display_name")
	}
	if eventName == "" {
		return nil, missingParam("event_name")
	}
	formula := r.p.obj("default_aggregation").str("formula")
	if !slices.Contains([]string{"sum", "count"}, formula) {
		return nil, invalid("default_aggregation[formula]", "default_aggregation[formula] must be sum or count")
	}
	if m := s.activeMeter(eventName); m != nil {
		return nil, invalid("event_name", "An active meter with event_name %q already exists: %s.", eventName, m["id"])
	}
	customerKey := r.p.obj("customer_mapping").str("event_payload_key")
	if customerKey == "" {
		customerKey = "stripe_customer_id"
	}
	valueKey := r.p.obj("value_settings").str("event_payload_key")
	if valueKey == "" {
		valueKey = "value"
	}
	now := s.now().Unix()
	m := obj{
		"id": s.newID("mtr"), "object": "billing.meter", "created": now, "updated": now,
		"display_name": display, "event_name": eventName, "status": "active", "livemode": false,
		"customer_mapping":    obj{"event_payload_key": customerKey, "type": "by_id"},
		"default_aggregation": obj{"formula": formula},
		"value_settings":      obj{"event_payload_key": valueKey},
		"event_time_window":   nil,
		"status_transitions":  obj{"deactivated_at": nil},
	}
	s.state.put("billing.meter", m)
	s.emit("billing.meter.created", m, nil)
	return m, nil
}

func (s *Server) activeMeter(eventName string) obj {
	for _, m := range s.state.objects["billing.meter"] {
		if m["event_name"] == eventName && m["status"] == "active" {
			return m
		}
	}
	return nil
}

func (s *Server) retrieveMeter(r *request) (any, *apiError) {
	m, ok := s.state.get("billing.meter", r.PathValue("id"))
	if !ok {
		return nil, noSuch("billing meter", r.PathValue("id"), "id")
	}
	return m, nil
}

func (s *Server) updateMeter(r *request) (any, *apiError) {
	m, ok := s.state.get("billing.meter", r.PathValue("id"))
	if !ok {
		return nil, noSuch("billing meter", r.PathValue("id"), "id")
	}
	if d := r.p.str("display_name"); d != "" && d != m["display_name"] {
		before := clone(m)
		m["display_name"], m["updated"] = d, s.now().Unix()
		s.emit("billing.meter.updated", m, diff(before, m))
	}
	return m, nil
}

func (s *Server) setMeterStatus(status string) handlerFunc {
	return func(r *request) (any, *apiError) {
		m, ok := s.state.get("billing.meter", r.PathValue("id"))
		if !ok {
			return nil, noSuch("billing meter", r.PathValue("id"), "id")
		}
		if m["status"] == status {
			return m, nil
		}
		if status == "active" && s.activeMeter(m["event_name"].(string)) != nil {
			return nil, invalid("event_name", "Another active meter uses event_name %q.", m["event_name"])
		}
		before := clone(m)
		m["status"], m["updated"] = status, s.now().Unix()
		var at any
		if status == "inactive" {
			at = s.now().Unix()
		}
		m["status_transitions"] = obj{"deactivated_at": at}
		typ := map[string]string{"active": "billing.meter.reactivated", "inactive": "billing.meter.deactivated"}[status]
		s.emit(typ, m, diff(before, m))
		return m, nil
	}
}

func (s *Server) listMeters(r *request) (any, *apiError) {
	status := r.p.str("status")
	return s.state.list("billing.meter", "/v1/billing/meters", r.p, func(m obj) bool {
		return status == "" || m["status"] == status
	})
}

// createMeterEvent records usage (FIDELITY.md, rule 6). An event name with
// no active meter is refused at once; an identifier Stripe holds is refused
// for 24 hours and counts once; the timestamp must be within the past 35
// days and at most 5 minutes ahead.
func (s *Server) createMeterEvent(r *request) (any, *apiError) {
	eventName := r.p.str("event_name")
	if eventName == "" {
		return nil, missingParam("event_name")
	}
	payload := r.p.obj("payload")
	if payload == nil {
		return nil, missingParam("payload")
	}
	now := s.now()
	ts := now.Unix()
	if n, given, ok := r.p.integer("timestamp"); !ok {
		return nil, invalid("timestamp", "timestamp must be a unix time in seconds")
	} else if given {
		oldest := now.Add(-35 * 24 * time.Hour).Unix()
		switch {
		case n < oldest:
			return nil, invalid("timestamp", "The event timestamp cannot be more than 35 days in past. Expected a timestamp greater than or equal to %d.", oldest)
		case n > now.Add(5*time.Minute).Unix():
			return nil, invalid("timestamp", "The event timestamp cannot be more than 5 minutes in the future.")
		}
		ts = n
	}
	identifier := r.p.str("identifier")
	if len(identifier) > 100 {
		return nil, invalid("identifier", "identifier must be at most 100 characters")
	}
	if identifier == "" {
		identifier = randomHex(16)
	}
	if prev, dup := s.state.meterEvents[identifier]; dup && now.Sub(prev.at) < MeterEventDedupWindow {
		return nil, &apiError{Status: 400, Type: "invalid_request_error",
			Message: fmt.Sprintf("An event already exists with identifier %s.", identifier)}
	}
	m := s.activeMeter(eventName)
	if m == nil {
		return nil, &apiError{Status: 400, Type: "invalid_request_error", Param: "event_name",
			Message: fmt.Sprintf("No active meter found for event name %q.", eventName)}
	}
	customerKey := m["customer_mapping"].(obj)["event_payload_key"].(string)
	valueKey := m["value_settings"].(obj)["event_payload_key"].(string)
	value := 1.0
	if m["default_aggregation"].(obj)["formula"] == "sum" {
		v, err := strconv.ParseFloat(payload.str(valueKey), 64)
		if err != nil {
			return nil, invalid("payload["+valueKey+"]", "payload[%s] must be a number", valueKey)
		}
		value = v
	}
	ev := obj{"object": "billing.meter_event", "created": now.Unix(), "event_name": eventName,
		"identifier": identifier, "livemode": false, "payload": payload, "timestamp": ts}
	s.state.meterEvents[identifier] = meterEvent{event: ev, at: now}
	s.state.usage = append(s.state.usage, usageRecord{meterID: m["id"].(string), customer: payload.str(customerKey), value: value, timestamp: ts})
	return ev, nil
}

// MeterEventDedupWindow is how long Stripe refuses a meter event
// identifier it holds: "a rolling 24 hour period".
const MeterEventDedupWindow = 24 * time.Hour

// meterEventSummaries aggregates a customer's usage of a meter over
// [start_time, end_time).
func (s *Server) meterEventSummaries(r *request) (any, *apiError) {
	m, ok := s.state.get("billing.meter", r.PathValue("id"))
	if !ok {
		return nil, noSuch("billing meter", r.PathValue("id"), "id")
	}
	customer := r.p.str("customer")
	if customer == "" {
		return nil, missingParam("customer")
	}
	start, sGiven, ok1 := r.p.integer("start_time")
	end, eGiven, ok2 := r.p.integer("end_time")
	if !sGiven || !ok1 {
		return nil, missingParam("start_time")
	}
	if !eGiven || !ok2 {
		return nil, missingParam("end_time")
	}
	// Stripe: start_time and end_time "must be aligned with minute
	// boundaries" (FIDELITY.md).
	for _, p := range []struct {
		name string
		v    int64
	}{{"start_time", start}, {"end_time", end}} {
		if p.v%60 != 0 {
			return nil, invalid(p.name, "%s must be aligned with minute boundaries (a multiple of 60 seconds); %d is not.", p.name, p.v)
		}
	}
	total := 0.0
	for _, u := range s.state.usage {
		if u.meterID == m["id"] && u.customer == customer && u.timestamp >= start && u.timestamp < end {
			total += u.value
		}
	}
	summary := obj{"id": s.newID("mtrusg"), "object": "billing.meter_event_summary", "aggregated_value": total,
		"start_time": start, "end_time": end, "livemode": false, "meter": m["id"]}
	return obj{"object": "list", "url": "/v1/billing/meters/" + m["id"].(string) + "/event_summaries",
		"has_more": false, "data": []obj{summary}}, nil
}
