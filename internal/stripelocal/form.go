package stripelocal

import (
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// params is a request's parameters, decoded from Stripe's bracket notation
// (a[b][0][c]=v) into nested maps, lists and strings.
type params map[string]any

// parseForm decodes url-encoded values in bracket notation. Numeric keys and
// empty brackets become lists, ordered by index.
func parseForm(values url.Values) params {
	root := map[string]any{}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	seq := 0
	for _, k := range keys {
		parts := splitKey(k)
		for _, v := range values[k] {
			set(root, parts, v, &seq)
		}
	}
	return params(listify(root).(map[string]any))
}

func splitKey(k string) []string {
	i := strings.IndexByte(k, '[')
	if i < 0 {
		return []string{k}
	}
	parts := []string{k[:i]}
	rest := k[i:]
	for strings.HasPrefix(rest, "[") {
		j := strings.IndexByte(rest, ']')
		if j < 0 {
			break
		}
		parts = append(parts, rest[1:j])
		rest = rest[j+1:]
	}
	return parts
}

// set stores v at parts. seq gives each value of an empty bracket
// (ids[]=a&ids[]=b) its own ordered slot.
func set(m map[string]any, parts []string, v string, seq *int) {
	k := parts[0]
	if k == "" {
		*seq++
		k = strconv.Itoa(1_000_000 + *seq)
	}
	if len(parts) == 1 {
		m[k] = v
		return
	}
	child, ok := m[k].(map[string]any)
	if !ok {
		child = map[string]any{}
		m[k] = child
	}
	set(child, parts[1:], v, seq)
}

// listify turns maps whose keys are all integers into lists.
func listify(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	numeric := len(m) > 0
	for k, c := range m {
		m[k] = listify(c)
		if _, err := strconv.Atoi(k); err != nil {
			numeric = false
		}
	}
	if !numeric {
		return m
	}
	idx := make([]int, 0, len(m))
	for k := range m {
		n, _ := strconv.Atoi(k)
		idx = append(idx, n)
	}
	sort.Ints(idx)
	list := make([]any, 0, len(m))
	for _, n := range idx {
		list = append(list, m[strconv.Itoa(n)])
	}
	return list
}

func (p params) has(k string) bool { _, ok := p[k]; return ok }

func (p params) str(k string) string {
	s, _ := p[k].(string)
	return s
}

func (p params) obj(k string) params {
	m, _ := p[k].(map[string]any)
	return params(m)
}

// list returns k as a list; a single value counts as a list of one.
func (p params) list(k string) []any {
	switch v := p[k].(type) {
	case []any:
		return v
	case nil:
		return nil
	case string:
		if v == "" {
			return []any{}
		}
	}
	return []any{p[k]}
}

func (p params) strs(k string) []string {
	var out []string
	for _, v := range p.list(k) {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// boolean returns k's value and whether it was given; anything but "true"
// and "false" is an error for the caller to report.
func (p params) boolean(k string) (val, given, ok bool) {
	s, present := p[k].(string)
	if !present {
		return false, false, true
	}
	switch s {
	case "true":
		return true, true, true
	case "false":
		return false, true, true
	}
	return false, true, false
}

func (p params) integer(k string) (n int64, given bool, ok bool) {
	s, present := p[k].(string)
	if !present {
		return 0, false, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, true, err == nil
}

// metadata returns the metadata update in p: keys set to "" are deletions.
func (p params) metadata() (map[string]string, bool) {
	if !p.has("metadata") {
		return nil, false
	}
	out := map[string]string{}
	for k, v := range p.obj("metadata") {
		s, _ := v.(string)
		out[k] = s
	}
	return out, true
}
