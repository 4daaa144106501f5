package stripelocal

import (
	"encoding/json"
	"strconv"
	"time"
)

// obj is a Stripe object as its JSON would show it.
type obj = map[string]any

// state is every object the server holds. All access is under Server.mu.
type state struct {
	objects map[string]map[string]obj // kind -> id -> object
	order   map[string][]string       // kind -> ids, oldest first

	lookupKeys  map[string]string     // price lookup_key -> price ID
	meterEvents map[string]meterEvent // identifier -> the meter event
	usage       []usageRecord         // accepted meter events, in order
	events      []obj                 // oldest first
	eventByID   map[string]obj
	failedEvent map[string]bool // event ID -> some endpoint gave up on it
	endpoints   []*endpoint

	cardBehavior map[string]string // payment method ID -> what a charge does (testCards)
	detached     map[string]bool   // payment methods detached, never to be used again

	checkouts    map[string]*checkoutSession // Checkout Session ID -> the subscription it makes
	setupFor     map[string]string           // SetupIntent ID -> the subscription it collects a card for
	trialWarned  map[string]bool             // subscriptions told their trial will end
	invoiceCount map[string]int              // customer ID -> invoices numbered
	// meteredSince is when a metered item's price last changed: its
	// invoices count only the usage from then (FIDELITY.md, rule 18).
	meteredSince map[string]int64 // subscription item ID -> unix seconds
	// deletedAt is when each deleted customer was deleted: search shows
	// it as live until its index catches up (FIDELITY.md, rule 17).
	deletedAt map[string]int64
}

type usageRecord struct {
	meterID, customer string
	value             float64
	timestamp         int64
}

// meterEvent is an accepted meter event's identifier and when it was
// accepted: Stripe refuses the identifier again for 24 hours.
type meterEvent struct {
	event obj
	at    time.Time
}

func newState() *state {
	return &state{
		objects:     map[string]map[string]obj{},
		order:       map[string][]string{},
		lookupKeys:  map[string]string{},
		meterEvents: map[string]meterEvent{},
		eventByID:   map[string]obj{},
		failedEvent: map[string]bool{},

		cardBehavior: map[string]string{},
		detached:     map[string]bool{},

		checkouts:    map[string]*checkoutSession{},
		setupFor:     map[string]string{},
		meteredSince: map[string]int64{},
		deletedAt:    map[string]int64{},
		trialWarned:  map[string]bool{},
		invoiceCount: map[string]int{},
	}
}

func (st *state) put(kind string, o obj) {
	m := st.objects[kind]
	if m == nil {
		m = map[string]obj{}
		st.objects[kind] = m
	}
	id := o["id"].(string)
	if _, exists := m[id]; !exists {
		st.order[kind] = append(st.order[kind], id)
	}
	m[id] = o
}

func (st *state) get(kind, id string) (obj, bool) {
	o, ok := st.objects[kind][id]
	return o, ok
}

// list pages through kind, newest first, as Stripe lists do. keep filters.
func (st *state) list(kind, url string, p params, keep func(obj) bool) (obj, *apiError) {
	limit := int64(10)
	if n, given, ok := p.integer("limit"); !ok || (given && (n < 1 || n > 100)) {
		return nil, invalid("limit", "limit must be an integer from 1 to 100")
	} else if given {
		limit = n
	}
	ids := st.order[kind]
	var all []obj
	for i := len(ids) - 1; i >= 0; i-- {
		o := st.objects[kind][ids[i]]
		if keep == nil || keep(o) {
			all = append(all, o)
		}
	}
	return page(all, url, p, limit)
}

// page cuts one page from items (already in list order) after
// starting_after or before ending_before.
func page(items []obj, url string, p params, limit int64) (obj, *apiError) {
	start := 0
	if after := p.str("starting_after"); after != "" {
		start = -1
		for i, o := range items {
			if o["id"] == after {
				start = i + 1
			}
		}
		if start < 0 {
			return nil, invalid("starting_after", "starting_after %q is not in this list", after)
		}
	}
	end := start + int(limit)
	if end > len(items) {
		end = len(items)
	}
	data := items[start:end]
	if data == nil {
		data = []obj{}
	}
	return obj{"object": "list", "url": url, "has_more": end < len(items), "data": data}, nil
}

// clone deep-copies o through JSON, so that event snapshots never change
// with the live object.
func clone(o obj) obj {
	raw, _ := json.Marshal(o)
	var c obj
	_ = json.Unmarshal(raw, &c)
	return c
}

// applyMetadata merges an update into o's metadata; "" deletes a key.
func applyMetadata(o obj, update map[string]string) {
	md, _ := o["metadata"].(obj)
	if md == nil {
		md = obj{}
	}
	for k, v := range update {
		if v == "" {
			delete(md, k)
		} else {
			md[k] = v
		}
	}
	o["metadata"] = md
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func mustJSON(v any) []byte {
	raw, _ := json.Marshal(v)
	return raw
}
