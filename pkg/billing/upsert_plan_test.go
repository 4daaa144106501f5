package billing

import (
	"slices"
	"strings"
	"testing"

	"github.com/baseten/billing-functions/pkg/table"
)

// planWorld is Stripe and the mappings as planCatalog sees them.
type planWorld struct {
	products map[string]stripeProduct
	meters   map[string]stripeMeter
	mappings map[string]table.ProductMapping
}

// synced is the world after a clean run of upsert-products for cat: every
// object right, every mapping written.
func synced(ns string, cat Catalog) planWorld {
	w := planWorld{products: map[string]stripeProduct{}, meters: map[string]stripeMeter{}, mappings: map[string]table.ProductMapping{}}
	for _, e := range cat.Entries {
		d := desire(ns, e)
		meterID := ""
		if d.meter != "" {
			meterID = "mtr_" + e.Key
			w.meters[d.meter] = stripeMeter{ID: meterID, EventName: d.meter, DisplayName: meterDisplayName(e), Active: true}
		}
		price := &stripePrice{ID: "price_" + e.Key, Product: d.productID, Currency: e.Currency, Interval: e.Interval,
			UsageType: d.usageType(), Meter: meterID, LookupKey: d.lookupKey, UnitAmountDecimal: d.entry.UnitAmountDecimal,
			Active: true, Metadata: d.priceMeta}
		w.products[d.productID] = stripeProduct{ID: d.productID, Name: e.Name, Description: e.Description, Active: true,
			Metadata: d.productMeta, DefaultPrice: price}
		w.mappings[e.Key] = table.ProductMapping{Key: e.Key, Kind: string(e.Kind), ProductID: d.productID, PriceID: price.ID,
			MeterID: meterID, MeterEventName: d.meter, Hash: d.hash, Active: true}
	}
	return w
}

// TestPlanCatalog_DecidesEachKeysAction runs the pure planner over one
// change at a time to a synced world, and checks the action and the
// changes it lists for the key concerned, and that every other key is
// unchanged.
func TestPlanCatalog_DecidesEachKeysAction(t *testing.T) {
	const ns = "plan-ns"
	cat := DefaultCatalog()
	cases := []struct {
		name        string
		cat         func(Catalog) Catalog
		world       func(*planWorld)
		key         string
		wantAction  string
		wantChanges []string
	}{
		{name: "nothing changed", key: "gpu-t4", wantAction: ActionUnchanged},
		{name: "a new entry", key: "gpu-t4", world: func(w *planWorld) {
			delete(w.products, productID(ns, "gpu-t4"))
			delete(w.meters, meterEventName(ns, "gpu-t4"))
			delete(w.mappings, "gpu-t4")
		}, wantAction: ActionCreate, wantChanges: []string{"meter bf_plan-ns_gpu-t4_minutes", "product bf_plan-ns_gpu-t4", "price 1.0517 usd/month"}},
		{name: "a renamed entry", key: "starter", cat: func(c Catalog) Catalog {
			return editEntry(c, "starter", func(e *Entry) { e.Name = "Starter plan" })
		}, wantAction: ActionUpdate, wantChanges: []string{`name: "Starter tier" → "Starter plan"`, "product metadata"}},
		{name: "a new amount", key: "business", cat: func(c Catalog) Catalog {
			return editEntry(c, "business", func(e *Entry) { e.UnitAmountDecimal = "59900" })
		}, wantAction: ActionReplacePrice, wantChanges: []string{"product metadata", "price: 49900 usd/month → 59900 usd/month"}},
		{name: "the same amount written otherwise", key: "gpu-a100", cat: func(c Catalog) Catalog {
			return editEntry(c, "gpu-a100", func(e *Entry) { e.UnitAmountDecimal = "10.240000" })
		}, wantAction: ActionUnchanged},
		{name: "a deactivated meter", key: "cpu-1x2", world: func(w *planWorld) {
			m := w.meters[meterEventName(ns, "cpu-1x2")]
			m.Active = false
			w.meters[m.EventName] = m
		}, wantAction: ActionUpdate, wantChanges: []string{"meter bf_plan-ns_cpu-1x2_minutes: reactivate"}},
		{name: "a price archived by hand", key: "starter", world: func(w *planWorld) {
			p := w.products[productID(ns, "starter")]
			dp := *p.DefaultPrice
			dp.Active = false
			p.DefaultPrice = &dp
			w.products[p.ID] = p
		}, wantAction: ActionUpdate, wantChanges: []string{"price metadata"}},
		{name: "a mapping that lags behind Stripe", key: "gpu-h100", world: func(w *planWorld) {
			delete(w.mappings, "gpu-h100")
		}, wantAction: ActionUpdate, wantChanges: []string{"mapping"}},
		{name: "an entry removed from the catalog", key: "gpu-h100", cat: func(c Catalog) Catalog {
			c.Entries = slices.DeleteFunc(slices.Clone(c.Entries), func(e Entry) bool { return e.Key == "gpu-h100" })
			return c
		}, wantAction: ActionArchive, wantChanges: []string{"archive product", "archive price", "deactivate meter", "mapping"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plan := cat
			if c.cat != nil {
				plan = c.cat(cat)
			}
			w := synced(ns, cat)
			if c.world != nil {
				c.world(&w)
			}
			steps, err := planCatalog(ns, plan, w.products, w.meters, w.mappings)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, st := range steps {
				if st.Key != c.key {
					if st.Action != ActionUnchanged {
						t.Errorf("%s: %s %v, want unchanged", st.Key, st.Action, st.Changes)
					}
					continue
				}
				found = true
				if st.Action != c.wantAction || !slices.Equal(st.Changes, c.wantChanges) {
					t.Errorf("%s: %s %q, want %s %q", st.Key, st.Action, st.Changes, c.wantAction, c.wantChanges)
				}
			}
			if !found {
				t.Fatalf("no step for %s", c.key)
			}
		})
	}
}

func TestPlanCatalog_AnotherNamespacesProductIsAConflict(t *testing.T) {
	cat := DefaultCatalog()
	w := synced("plan-ns", cat)
	p := w.products[productID("plan-ns", "starter")]
	p.Metadata = map[string]string{metaNamespace: "someone-else"}
	w.products[p.ID] = p
	_, err := planCatalog("plan-ns", cat, w.products, w.meters, w.mappings)
	if ErrorCode(err) != CodeConflict || !strings.Contains(err.Error(), "left alone") {
		t.Fatalf("got %v, want a conflict that leaves the product alone", err)
	}
}

func editEntry(c Catalog, key string, edit func(*Entry)) Catalog {
	c.Entries = slices.Clone(c.Entries)
	for i := range c.Entries {
		if c.Entries[i].Key == key {
			edit(&c.Entries[i])
		}
	}
	return c
}
