package billing

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/baseten/billing-functions/pkg/table"
)

// The default catalog: two plan tiers and nine paid instance types. Amounts
// are in cents: a tier's per month, an instance type's per minute, which may
// be fractional. The figures are examples; edit catalog.json to change them.
//
//go:embed catalog.json
var defaultCatalogJSON []byte

// Kind is what a catalog entry sells.
type Kind string

const (
	KindTier         Kind = "tier"          // a flat, licensed price per interval
	KindInstanceType Kind = "instance_type" // metered usage, in minutes, through a billing meter
)

// Entry is one product of the catalog.
type Entry struct {
	Key         string `json:"key"`
	Kind        Kind   `json:"kind"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Currency    string `json:"currency"`
	Interval    string `json:"interval"`
	// UnitAmountDecimal is in the currency's minor unit (cents), per
	// interval for a tier and per minute for an instance type.
	UnitAmountDecimal string `json:"unit_amount_decimal"`
	// Includes lists, for a tier, the instance types an organization on it
	// may run; absent, every instance type of the catalog. check_access and
	// set_instance_types enforce it.
	Includes []string `json:"includes,omitempty"`
	// SpendCap is, for a tier, the default monthly cap on metered spend, in
	// the currency's minor unit; absent, none. set_spend_cap overrides it
	// per organization.
	SpendCap *int64 `json:"spend_cap,omitempty"`
}

// stripeTerms is the entry without what only this deployment enforces
// (Includes, SpendCap): what its Stripe product and price are made from,
// so that changing an entitlement changes nothing in Stripe.
func (e Entry) stripeTerms() Entry {
	e.Includes, e.SpendCap = nil, nil
	return e
}

// Catalog is the whole set of products a deployment sells.
type Catalog struct {
	Version int     `json:"version"`
	Entries []Entry `json:"entries"`
}

// MaxCatalogEntries bounds a catalog, so that one product list request
// reads it all.
const MaxCatalogEntries = 100

// DefaultCatalog returns the embedded catalog. It is validated by
// TestCatalog_DefaultIsValid.
func DefaultCatalog() Catalog {
	var c Catalog
	_ = json.Unmarshal(defaultCatalogJSON, &c)
	return c
}

// ParseCatalog decodes a catalog strictly: unknown fields are errors.
func ParseCatalog(raw []byte) (Catalog, error) {
	var c Catalog
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Catalog{}, Errorf(CodeInvalidRequest, "catalog: %s", jsonProblem(err))
	}
	return c, nil
}

var (
	keyPattern      = newPattern(`^[a-z0-9-]+$`, 1, 40)
	knownIntervals  = []string{"day", "week", "month", "year"}
	knownCurrencies = []string{"usd", "eur", "gbp", "cad", "aud", "chf", "jpy", "sek", "nok", "dkk", "nzd", "sgd", "hkd", "inr", "brl", "mxn"}
)

// Validate returns a CodeInvalidRequest *Error listing every problem of the
// catalog at once, or nil.
func (c Catalog) Validate() error {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if len(c.Entries) == 0 {
		bad("the catalog has no entries")
	}
	if len(c.Entries) > MaxCatalogEntries {
		bad("the catalog has %d entries; at most %d are allowed", len(c.Entries), MaxCatalogEntries)
	}
	seen := map[string]bool{}
	for i, e := range c.Entries {
		at := fmt.Sprintf("entries[%d]", i)
		if e.Key != "" {
			at = fmt.Sprintf("entries[%d] (%s)", i, e.Key)
		}
		if !keyPattern.MatchString(e.Key) {
			bad("%s: key %q must be 1-40 characters of [a-z0-9-]", at, e.Key)
		}
		if seen[e.Key] {
			bad("%s: duplicate key %q", at, e.Key)
		}
		seen[e.Key] = true
		if e.Kind != KindTier && e.Kind != KindInstanceType {
			bad("%s: kind %q must be tier or instance_type", at, e.Kind)
		}
		if strings.TrimSpace(e.Name) == "" {
			bad("%s: the display name is empty", at)
		}
		if !slices.Contains(knownCurrencies, e.Currency) {
			bad("%s: unknown currency %q", at, e.Currency)
		}
		if !slices.Contains(knownIntervals, e.Interval) {
			bad("%s: unknown interval %q (day, week, month or year)", at, e.Interval)
		}
		problems = append(problems, c.entitlementProblems(at, e)...)
		if strings.HasPrefix(strings.TrimSpace(e.UnitAmountDecimal), "-") {
			bad("%s: the price %q is negative", at, e.UnitAmountDecimal)
		} else if !validAmount(e.UnitAmountDecimal) {
			bad("%s: the price %q is not a non-negative decimal number of cents", at, e.UnitAmountDecimal)
		}
	}
	// One subscription holds a tier and instance types together, and Stripe
	// bills a subscription in one currency on one interval.
	for i, e := range c.Entries {
		if first := c.Entries[0]; e.Currency != first.Currency || e.Interval != first.Interval {
			bad("entries[%d] (%s): %s per %s, but the catalog is in %s per %s: one subscription holds every entry, and Stripe bills it in one currency on one interval",
				i, e.Key, e.Currency, e.Interval, first.Currency, first.Interval)
		}
	}
	if len(problems) > 0 {
		return &Error{Code: CodeInvalidRequest, Message: "invalid catalog: " + strings.Join(problems, "; ")}
	}
	return nil
}

// MaxSpendCap bounds a spend cap: ten million in the currency's major
// unit, far above any real month, and exact in every step of the sums.
const MaxSpendCap = 1_000_000_000

// entitlementProblems checks a tier's includes and spend cap: they name
// instance types of the catalog, and only a tier has them.
func (c Catalog) entitlementProblems(at string, e Entry) []string {
	var problems []string
	if e.Kind != KindTier && (e.Includes != nil || e.SpendCap != nil) {
		problems = append(problems, fmt.Sprintf("%s: includes and spend_cap are for a tier only", at))
	}
	kinds := map[string]Kind{}
	for _, o := range c.Entries {
		kinds[o.Key] = o.Kind
	}
	seen := map[string]bool{}
	for _, k := range e.Includes {
		switch {
		case kinds[k] != KindInstanceType:
			problems = append(problems, fmt.Sprintf("%s: includes %q, which is not an instance type of the catalog", at, k))
		case seen[k]:
			problems = append(problems, fmt.Sprintf("%s: includes %q twice", at, k))
		}
		seen[k] = true
	}
	if e.SpendCap != nil && (*e.SpendCap < 1 || *e.SpendCap > MaxSpendCap) {
		problems = append(problems, fmt.Sprintf("%s: spend_cap must be from 1 to %d (minor units)", at, MaxSpendCap))
	}
	return problems
}

// Terms are what the catalog entitles: per tier, the instance types it
// includes and its default spend cap, and each instance type's price per
// minute. upsert-products stores them, so that check_access and the usage
// path read them with the organization's records in one request.
func (c Catalog) Terms() table.Terms {
	t := table.Terms{Tiers: map[string]table.TierTerms{}, Prices: map[string]string{}}
	var all []string
	for _, e := range c.Entries {
		t.Currency = e.Currency
		if e.Kind == KindInstanceType {
			all = append(all, e.Key)
			t.Prices[e.Key] = normalAmount(e.UnitAmountDecimal)
		}
	}
	for _, e := range c.Entries {
		if e.Kind != KindTier {
			continue
		}
		tt := table.TierTerms{Includes: slices.Clone(e.Includes)}
		if len(e.Includes) == 0 {
			tt.Includes = slices.Clone(all)
		}
		slices.Sort(tt.Includes)
		if e.SpendCap != nil {
			tt.SpendCap = *e.SpendCap
		}
		t.Tiers[e.Key] = tt
	}
	return t
}

// normalAmount writes a decimal amount without leading zeros in its whole
// part and trailing zeros in its fraction, as Stripe echoes one, so that
// "10.2400" and "10.24" compare equal. It works on the digits, never
// through a float.
func normalAmount(s string) string {
	whole, frac, _ := strings.Cut(strings.TrimSpace(s), ".")
	whole = strings.TrimLeft(whole, "0")
	if whole == "" {
		whole = "0"
	}
	if frac = strings.TrimRight(frac, "0"); frac == "" {
		return whole
	}
	return whole + "." + frac
}

// jsonProblem describes a decoding error without quoting the input.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Sprintf("field %q must be a %s", typeErr.Field, typeErr.Type)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("malformed JSON at byte %d", syntaxErr.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return "malformed JSON"
}
