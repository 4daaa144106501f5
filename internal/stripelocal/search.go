package stripelocal

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The Search API for customers and subscriptions (FIDELITY.md, rule 17):
// the query language's clause forms this codebase and its tests use,
// AND or OR (never both, at most 10 clauses), limit 1-100, and pages
// chained by an opaque next_page token that is only valid with the query
// it came from. Results are newest first. Stripe's index lags writes by
// up to a minute; SetSearchLag makes objects created in the last lag
// invisible, as new objects are until indexed, and customers deleted in
// the last lag still found, as live ones.

// searchFields are the fields each resource's query may name, besides
// metadata.
var searchFields = map[string]map[string]bool{
	"customer":     {"created": true, "email": true, "name": true, "phone": true},
	"subscription": {"created": true, "status": true},
}

const maxSearchClauses = 10

// clause is one term of a query: field (or metadata key) op value.
type clause struct {
	negate   bool
	metadata bool
	field    string
	op       string // ":" or a comparison
	value    string
}

var clausePattern = regexp.MustCompile(`^(-?)(?:metadata\[(?:'([^']*)'|"([^"]*)")\]|([a-z_]+))(:|>=|<=|>|<)(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|(-?[0-9]+))$`)

// parseQuery reads a query into clauses joined by all (AND) or any (OR).
func parseQuery(kind, q string) (clauses []clause, anyOf bool, aerr *apiError) {
	q = strings.TrimSpace(q)
	if q == "" {
		return nil, false, missingParam("query")
	}
	if len(q) > 5000 {
		return nil, false, invalid("query", "query must be at most 5000 characters")
	}
	hasAnd, hasOr := strings.Contains(q, " AND "), strings.Contains(q, " OR ")
	if hasAnd && hasOr {
		return nil, false, invalid("query", "AND and OR are mutually exclusive: a query can use only one of them.")
	}
	sep := " AND "
	if hasOr {
		sep, anyOf = " OR ", true
	}
	terms := strings.Split(q, sep)
	if len(terms) > maxSearchClauses {
		return nil, false, invalid("query", "a query can have at most %d clauses", maxSearchClauses)
	}
	for _, t := range terms {
		m := clausePattern.FindStringSubmatch(strings.TrimSpace(t))
		if m == nil {
			return nil, false, invalid("query", "could not parse the query clause %q", t)
		}
		c := clause{negate: m[1] == "-", op: m[5]}
		switch {
		case m[4] != "":
			if !searchFields[kind][m[4]] {
				return nil, false, invalid("query", "Field `%s` is an unsupported search field for resource `%ss`.", m[4], kind)
			}
			c.field = m[4]
		default:
			c.metadata, c.field = true, m[2]+m[3]
		}
		c.value = strings.NewReplacer(`\'`, `'`, `\"`, `"`).Replace(m[6] + m[7] + m[8])
		if c.op != ":" && c.field != "created" {
			return nil, false, invalid("query", "comparisons apply to numeric fields only, not `%s`", c.field)
		}
		if c.field == "created" {
			if _, err := strconv.ParseInt(c.value, 10, 64); err != nil {
				return nil, false, invalid("query", "`created` takes a unix timestamp")
			}
		}
		clauses = append(clauses, c)
	}
	return clauses, anyOf, nil
}

func (c clause) matches(o obj) bool {
	var hit bool
	switch {
	case c.metadata:
		md, _ := o["metadata"].(obj)
		v, ok := md[c.field].(string)
		hit = ok && strings.EqualFold(v, c.value)
	case c.field == "created":
		n, _ := strconv.ParseInt(c.value, 10, 64)
		created := toInt(o["created"])
		switch c.op {
		case ":":
			hit = created == n
		case ">":
			hit = created > n
		case "<":
			hit = created < n
		case ">=":
			hit = created >= n
		case "<=":
			hit = created <= n
		}
	default:
		v, _ := o[c.field].(string)
		hit = strings.EqualFold(v, c.value)
	}
	return hit != c.negate
}

// searchToken is what a next_page token carries: the query it belongs to
// and where the next page starts.
type searchToken struct {
	Query string `json:"q"`
	After string `json:"a"`
}

// search answers a search request over kind, newest first.
func (s *Server) search(kind, url string, p params, keep func(obj) bool) (obj, *apiError) {
	q := p.str("query")
	clauses, anyOf, aerr := parseQuery(kind, q)
	if aerr != nil {
		return nil, aerr
	}
	limit := int64(10)
	if n, given, ok := p.integer("limit"); !ok || (given && (n < 1 || n > 100)) {
		return nil, invalid("limit", "limit must be an integer from 1 to 100")
	} else if given {
		limit = n
	}
	after := ""
	if page := p.str("page"); page != "" {
		var tok searchToken
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(page, "page_"))
		if err != nil || json.Unmarshal(raw, &tok) != nil || tok.Query != q {
			return nil, invalid("page", "page is not a next_page token of this query")
		}
		after = tok.After
	}
	indexedBefore := s.now().Add(-s.searchLag).Unix()
	ids := s.state.order[kind]
	var hits []obj
	started := after == ""
	for i := len(ids) - 1; i >= 0 && int64(len(hits)) <= limit; i-- {
		o := s.state.objects[kind][ids[i]]
		if !started {
			started = o["id"] == after
			continue
		}
		if s.searchLag > 0 && toInt(o["created"]) > indexedBefore {
			continue
		}
		if keep != nil && !keep(o) {
			continue
		}
		if o["deleted"] == true {
			// Deleted within the lag: the index still has it, as a live
			// customer (stripe/stripe-node#1533, #2692).
			if s.searchLag == 0 || s.state.deletedAt[o["id"].(string)] <= indexedBefore {
				continue
			}
			o = clone(o)
			delete(o, "deleted")
		}
		hit := !anyOf
		for _, c := range clauses {
			if c.matches(o) == anyOf {
				hit = anyOf
				break
			}
		}
		if hit {
			hits = append(hits, o)
		}
	}
	more := int64(len(hits)) > limit
	if more {
		hits = hits[:limit]
	}
	var next any
	if more {
		raw, _ := json.Marshal(searchToken{Query: q, After: hits[len(hits)-1]["id"].(string)})
		next = "page_" + base64.RawURLEncoding.EncodeToString(raw)
	}
	if hits == nil {
		hits = []obj{}
	}
	return obj{"object": "search_result", "url": url, "has_more": more, "next_page": next, "data": hits}, nil
}

func (s *Server) searchCustomers(r *request) (any, *apiError) {
	return s.search("customer", "/v1/customers/search", r.p, nil)
}

func (s *Server) searchSubscriptions(r *request) (any, *apiError) {
	res, aerr := s.search("subscription", "/v1/subscriptions/search", r.p, nil)
	if aerr != nil {
		return nil, aerr
	}
	data := res["data"].([]obj)
	expanded := make([]obj, len(data))
	for i, sub := range data {
		expanded[i] = s.expandSubscriptionAt(sub, r.p.strs("expand"), "data.")
	}
	res["data"] = expanded
	return res, nil
}

// SetSearchLag makes objects created in the last d invisible to search,
// and customers deleted in the last d still found as live ones, as on
// Stripe until its index catches up (up to a minute).
func (s *Server) SetSearchLag(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.searchLag = d
}
