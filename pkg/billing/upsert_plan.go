package billing

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/baseten/billing-functions/pkg/table"
)

// Plan actions, in the order of precedence a key's action is chosen by.
const (
	ActionCreate       = "create"
	ActionReplacePrice = "replace_price"
	ActionUpdate       = "update"
	ActionArchive      = "archive"
	ActionUnchanged    = "unchanged"
)

// Identity in a shared Stripe account: every ID and name is derived from
// the namespace and the catalog key, never looked up by display name. "_"
// separates them because neither may contain it.
func productID(ns, key string) string      { return "bf_" + ns + "_" + key }
func priceLookupKey(ns, key string) string { return "bf:" + ns + ":" + key }
func meterEventName(ns, key string) string { return "bf_" + ns + "_" + key + "_minutes" }
func meterDisplayName(e Entry) string      { return e.Name + " (minutes)" }

// Metadata keys on every object upsert-products creates.
const (
	metaNamespace = "billing_namespace"
	metaKey       = "billing_key"
	metaKind      = "billing_kind"
	metaHash      = "billing_hash"
)

// desired is what Stripe should hold for one catalog entry.
type desired struct {
	entry                       Entry
	productID, lookupKey, meter string // meter: event name, empty for tiers
	hash                        string // of the whole entry
	productMeta, priceMeta      map[string]string
}

func desire(ns string, e Entry) desired {
	e.UnitAmountDecimal = normalAmount(e.UnitAmountDecimal)
	d := desired{entry: e, productID: productID(ns, e.Key), lookupKey: priceLookupKey(ns, e.Key), hash: contentHash(e.stripeTerms())}
	if e.Kind == KindInstanceType {
		d.meter = meterEventName(ns, e.Key)
	}
	d.productMeta = map[string]string{metaNamespace: ns, metaKey: e.Key, metaKind: string(e.Kind), metaHash: d.hash}
	d.priceMeta = map[string]string{metaNamespace: ns, metaKey: e.Key, metaKind: string(e.Kind), metaHash: contentHash(priceTerms(e))}
	return d
}

func (d desired) usageType() string {
	if d.entry.Kind == KindInstanceType {
		return "metered"
	}
	return "licensed"
}

// priceTerms are the parts of an entry a price cannot change in place.
func priceTerms(e Entry) [4]string {
	return [4]string{string(e.Kind), e.Currency, e.Interval, normalAmount(e.UnitAmountDecimal)}
}

func contentHash(v any) string {
	raw, _ := json.Marshal(v)
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:8])
}

// priceMatches reports whether p can stay the entry's price: same terms,
// and for a metered price the entry's meter.
func (d desired) priceMatches(p *stripePrice, meterID string) bool {
	return p != nil && p.Product == d.productID && p.Currency == d.entry.Currency && p.Interval == d.entry.Interval &&
		p.UsageType == d.usageType() && p.UnitAmountDecimal == d.entry.UnitAmountDecimal && p.Meter == meterID
}

func hasAll(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// step is the plan for one catalog key, and what applying it needs.
type step struct {
	Key     string
	Action  string
	Changes []string

	want    *desired // nil when archiving
	product *stripeProduct
	meter   *stripeMeter
	mapping *table.ProductMapping

	productChange bool // create or update the product
	meterChange   bool // create, reactivate or rename the meter
	priceReplace  bool // a new price takes the lookup key
	priceMetaFix  bool // the current price needs its metadata or active flag set
}

// planCatalog decides, for every key of the catalog and every active key of
// the mappings, what to change. It is a pure function of the desired and
// the actual state; apply carries it out.
func planCatalog(ns string, cat Catalog, products map[string]stripeProduct, meters map[string]stripeMeter, mappings map[string]table.ProductMapping) ([]*step, error) {
	var steps []*step
	inCatalog := map[string]bool{}
	for _, e := range cat.Entries {
		inCatalog[e.Key] = true
		d := desire(ns, e)
		st := &step{Key: e.Key, want: &d}
		if p, ok := products[d.productID]; ok {
			if owner := p.Metadata[metaNamespace]; owner != "" && owner != ns {
				return nil, Errorf(CodeConflict, "Stripe product %s belongs to namespace %q, not %q; it is left alone", p.ID, owner, ns)
			}
			st.product = &p
		}
		if m, ok := mappings[e.Key]; ok {
			st.mapping = &m
		}
		meterID := ""
		if d.meter != "" {
			if m, ok := meters[d.meter]; ok {
				st.meter = &m
				meterID = m.ID
			}
		}
		planEntry(st, meterID)
		steps = append(steps, st)
	}

	var removed []string
	for key, m := range mappings {
		if !inCatalog[key] && m.Active {
			removed = append(removed, key)
		}
	}
	slices.Sort(removed)
	for _, key := range removed {
		m := mappings[key]
		st := &step{Key: key, Action: ActionArchive, mapping: &m}
		if p, ok := products[m.ProductID]; ok {
			st.product = &p
			if p.Active {
				st.Changes = append(st.Changes, "archive product")
			}
			if p.DefaultPrice != nil && p.DefaultPrice.Active {
				st.Changes = append(st.Changes, "archive price")
			}
		}
		if m.MeterEventName != "" {
			if mt, ok := meters[m.MeterEventName]; ok && mt.Active {
				st.meter = &mt
				st.Changes = append(st.Changes, "deactivate meter")
			}
		}
		st.Changes = append(st.Changes, "mapping")
		steps = append(steps, st)
	}
	return steps, nil
}

func planEntry(st *step, meterID string) {
	d, p := st.want, st.product
	change := func(format string, args ...any) { st.Changes = append(st.Changes, fmt.Sprintf(format, args...)) }
	terms := fmt.Sprintf("%s %s/%s", d.entry.UnitAmountDecimal, d.entry.Currency, d.entry.Interval)

	if p == nil {
		st.Action, st.productChange, st.priceReplace = ActionCreate, true, true
		if d.meter != "" && (st.meter == nil || !st.meter.Active) {
			st.meterChange = true
			change("meter %s", d.meter)
		}
		change("product %s", d.productID)
		change("price %s", terms)
		return
	}

	if d.meter != "" {
		switch {
		case st.meter == nil:
			st.meterChange = true
			meterID = ""
			change("meter %s: create", d.meter)
		case !st.meter.Active:
			st.meterChange = true
			change("meter %s: reactivate", d.meter)
		case st.meter.DisplayName != meterDisplayName(d.entry):
			st.meterChange = true
			change("meter name: %q → %q", st.meter.DisplayName, meterDisplayName(d.entry))
		}
	}
	if p.Name != d.entry.Name {
		st.productChange = true
		change("name: %q → %q", p.Name, d.entry.Name)
	}
	if p.Description != d.entry.Description {
		st.productChange = true
		change("description")
	}
	if !p.Active {
		st.productChange = true
		change("reactivate product")
	}
	if !hasAll(p.Metadata, d.productMeta) {
		st.productChange = true
		change("product metadata")
	}

	cur := p.DefaultPrice
	switch {
	case cur == nil || !d.priceMatches(cur, meterID) || (d.meter != "" && meterID == ""):
		st.priceReplace = true
		from := "none"
		if cur != nil {
			from = fmt.Sprintf("%s %s/%s", cur.UnitAmountDecimal, cur.Currency, cur.Interval)
			if cur.Meter != meterID {
				from += " (other meter)"
			}
		}
		change("price: %s → %s", from, terms)
	case !cur.Active || cur.LookupKey != d.lookupKey || !hasAll(cur.Metadata, d.priceMeta):
		st.priceMetaFix = true
		change("price metadata")
	}

	switch {
	case st.priceReplace:
		st.Action = ActionReplacePrice
	case st.productChange || st.meterChange || st.priceMetaFix:
		st.Action = ActionUpdate
	default:
		st.Action = ActionUnchanged
	}
	if st.Action == ActionUnchanged {
		// Stripe is right; the mapping may still lag behind (a run that
		// stopped after Stripe and before DynamoDB).
		want := table.ProductMapping{Key: d.entry.Key, Kind: string(d.entry.Kind), ProductID: p.ID, PriceID: cur.ID,
			MeterID: meterID, MeterEventName: d.meter, Hash: d.hash, Active: true}
		if st.mapping == nil || !st.mapping.Same(want) {
			st.Action = ActionUpdate
			change("mapping")
		}
	}
}
