package billing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/pkg/billing"
)

func writesAndReads(counts map[string]int) (writes, reads int) {
	for k, v := range counts {
		if strings.HasPrefix(k, "GET ") {
			reads += v
		} else {
			writes += v
		}
	}
	return writes, reads
}

func TestUpsert_FirstRunCreatesElevenProductsPricesAndNineMeters(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	res := f.upsert(billing.UpsertRequest{})
	if res.Created != 11 || res.Updated+res.Archived+res.Unchanged != 0 || len(res.Plan) != 11 {
		t.Fatalf("result %+v", res)
	}
	counts := f.stripe.Counts()
	writes, reads := writesAndReads(counts)
	t.Logf("first run: %d Stripe writes, %d Stripe reads: %v", writes, reads, counts)

	st := f.read()
	if len(st.products) != 11 || len(st.prices) != 11 || len(st.meters) != 9 {
		t.Fatalf("Stripe holds %d products, %d prices, %d meters; want 11, 11, 9", len(st.products), len(st.prices), len(st.meters))
	}
	a10g := st.products["bf_test-ns_gpu-a10g"]
	if a10g == nil || a10g.Name != "A10G GPU · 4 vCPU · 16 GiB" || a10g.Metadata["billing_namespace"] != ns || a10g.Metadata["billing_key"] != "gpu-a10g" || a10g.Metadata["billing_hash"] == "" {
		t.Fatalf("gpu-a10g product %+v", a10g)
	}
	for _, p := range st.prices {
		if p.Metadata["billing_namespace"] != ns || p.LookupKey != "bf:"+ns+":"+p.Metadata["billing_key"] {
			t.Errorf("price %s: metadata %v, lookup key %q", p.ID, p.Metadata, p.LookupKey)
		}
		if strings.HasPrefix(p.Metadata["billing_key"], "gpu-") || strings.HasPrefix(p.Metadata["billing_key"], "cpu-") {
			if p.Recurring.UsageType != "metered" || p.Recurring.Meter == "" {
				t.Errorf("instance type price %s is not metered through a meter", p.ID)
			}
		}
	}
	mappings, err := f.store.ListProductMappings(context.Background())
	if err != nil || len(mappings) != 11 {
		t.Fatalf("%d mappings (%v), want 11", len(mappings), err)
	}
	for _, m := range mappings {
		if p := st.products[m.ProductID]; p == nil || p.DefaultPrice == nil || p.DefaultPrice.ID != m.PriceID || m.Hash != p.Metadata["billing_hash"] {
			t.Errorf("mapping %+v does not match Stripe", m)
		}
	}
}

func TestUpsert_SecondRunWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	f.stripe.ResetCounts()
	f.db.Reset()

	res := f.upsert(billing.UpsertRequest{})
	if res.Unchanged != 11 || res.Created+res.Updated+res.Archived != 0 {
		t.Fatalf("second run %+v", res)
	}
	writes, reads := writesAndReads(f.stripe.Counts())
	dbReads, dbWrites := f.db.Reset()
	t.Logf("steady state: %d Stripe writes, %d Stripe reads %v; DynamoDB %d reads, %d writes", writes, reads, f.stripe.Counts(), dbReads, dbWrites)
	if writes != 0 || dbWrites != 0 {
		t.Fatalf("steady state wrote: Stripe %d, DynamoDB %d; want 0 and 0", writes, dbWrites)
	}
	if reads > 3 {
		t.Fatalf("steady state made %d Stripe reads, want at most 3", reads)
	}
}

func withEntry(c billing.Catalog, key string, edit func(*billing.Entry)) billing.Catalog {
	out := billing.Catalog{Version: c.Version}
	for _, e := range c.Entries {
		if e.Key == key {
			if edit == nil {
				continue // removed
			}
			edit(&e)
		}
		out.Entries = append(out.Entries, e)
	}
	return out
}

func planOf(res billing.UpsertResult) map[string]billing.PlanItem {
	out := map[string]billing.PlanItem{}
	for _, p := range res.Plan {
		out[p.Key] = p
	}
	return out
}

func TestUpsert_RenameUpdatesOnlyTheRenamedProduct(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	before := f.read()
	f.stripe.ResetCounts()

	cat := withEntry(billing.DefaultCatalog(), "gpu-t4", func(e *billing.Entry) { e.Name = "T4 GPU · 4 vCPU · 15 GiB" })
	res := f.upsert(billing.UpsertRequest{Catalog: &cat})
	plan := planOf(res)
	if res.Updated != 1 || res.Unchanged != 10 || plan["gpu-t4"].Action != "update" {
		t.Fatalf("rename: %+v", res)
	}
	counts := f.stripe.Counts()
	after := f.read()
	if got := after.products["bf_test-ns_gpu-t4"].Name; got != "T4 GPU · 4 vCPU · 15 GiB" {
		t.Fatalf("name %q", got)
	}
	for id, p := range after.products {
		if id != "bf_test-ns_gpu-t4" && p.Updated != before.products[id].Updated {
			t.Errorf("%s changed too", id)
		}
	}
	if len(after.prices) != 11 {
		t.Fatalf("a rename made prices: %d", len(after.prices))
	}
	if counts["POST /v1/products"] != 0 || counts["POST /v1/prices"] != 0 || counts["POST /v1/products/{id}"] != 1 {
		t.Fatalf("requests %v: want one product update only", counts)
	}
}

func TestUpsert_PriceChangeReplacesThePriceAndMovesTheLookupKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	old := f.read().activePricesOf("bf_test-ns_business")[0]

	cat := withEntry(billing.DefaultCatalog(), "business", func(e *billing.Entry) { e.UnitAmountDecimal = "59900" })
	res := f.upsert(billing.UpsertRequest{Catalog: &cat})
	if planOf(res)["business"].Action != "replace_price" || res.Updated != 1 {
		t.Fatalf("price change: %+v", res)
	}
	st := f.read()
	active := st.activePricesOf("bf_test-ns_business")
	if len(active) != 1 || active[0].ID == old.ID || active[0].UnitAmount != 59900 || active[0].LookupKey != "bf:test-ns:business" {
		t.Fatalf("active prices of business: %+v", active)
	}
	for _, p := range st.prices {
		if p.ID == old.ID && (p.Active || p.LookupKey != "") {
			t.Fatalf("the old price is still active or keeps the lookup key: %+v", p)
		}
	}
	m, err := f.store.GetProductMapping(context.Background(), "business")
	if err != nil || m.PriceID != active[0].ID {
		t.Fatalf("mapping %+v %v, want price %s", m, err, active[0].ID)
	}
	if st.products["bf_test-ns_business"].DefaultPrice.ID != active[0].ID {
		t.Fatal("the product's default price did not move")
	}
}

func TestUpsert_RemovedEntryIsArchivedNotDeleted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	cat := withEntry(billing.DefaultCatalog(), "cpu-1x2", nil)
	res := f.upsert(billing.UpsertRequest{Catalog: &cat})
	if res.Archived != 1 || planOf(res)["cpu-1x2"].Action != "archive" {
		t.Fatalf("removal: %+v", res)
	}
	st := f.read()
	p := st.products["bf_test-ns_cpu-1x2"]
	if p == nil || p.Active || len(st.activePricesOf(p.ID)) != 0 {
		t.Fatalf("cpu-1x2 product %+v: want present and archived with no active price", p)
	}
	for _, m := range st.meters {
		if m.EventName == "bf_test-ns_cpu-1x2_minutes" && m.Status != "inactive" {
			t.Fatal("the meter was not deactivated")
		}
	}
	m, _ := f.store.GetProductMapping(context.Background(), "cpu-1x2")
	if m.Active {
		t.Fatal("the mapping is still active")
	}
	again := f.upsert(billing.UpsertRequest{Catalog: &cat})
	if again.Unchanged != 10 || again.Archived != 0 {
		t.Fatalf("after archiving, a re-run is %+v", again)
	}
}

func TestUpsert_OtherNamespacesAreLeftUntouched(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	other := f.withNamespace("other-ns")
	if _, err := other.UpsertProducts(context.Background(), billing.UpsertRequest{}); err != nil {
		t.Fatal(err)
	}
	// Someone's hand-made product with the same display name, no metadata.
	sc := f.sc()
	if _, err := sc.Products.New(&stripe.ProductParams{Name: stripe.String("Business tier")}); err != nil {
		t.Fatal(err)
	}
	before := f.read()

	cat := withEntry(billing.DefaultCatalog(), "business", nil) // ours archives business
	f.upsert(billing.UpsertRequest{})
	f.upsert(billing.UpsertRequest{Catalog: &cat})

	after := f.read()
	for id, p := range before.products {
		q := after.products[id]
		if q.Updated != p.Updated || q.Active != p.Active || q.Name != p.Name {
			t.Errorf("another deployment's product %s (%q) changed", id, p.Name)
		}
	}
	if len(after.products) != len(before.products)+11 {
		t.Fatalf("products %d, want %d", len(after.products), len(before.products)+11)
	}
	mappings, _ := f.store.ListProductMappings(context.Background())
	for _, m := range mappings {
		if !strings.HasPrefix(m.ProductID, "bf_test-ns_") && !strings.HasPrefix(m.ProductID, "bf_other-ns_") {
			t.Errorf("mapping to a foreign product %+v", m)
		}
	}
}

func TestUpsert_InterruptionAtEachStepConvergesWithoutDuplicates(t *testing.T) {
	t.Parallel()
	// Count the first run's writes, then interrupt a fresh run at each one:
	// before Stripe acts (500) and after it acted but the answer was lost
	// (500 after). A second run must converge to exactly the clean state.
	probe := newFixture(t, ns)
	probe.upsert(billing.UpsertRequest{})
	totalWrites, _ := writesAndReads(probe.stripe.Counts())

	for i := 0; i < totalWrites; i++ {
		for _, after := range []bool{false, true} {
			t.Run(fmt.Sprintf("write%02d_after=%v", i, after), func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, ns)
				f.stripe.InjectFault(stripelocal.Fault{Method: "POST", Kind: "500", Skip: i, Count: 1, After: after})
				_, err := f.svc.UpsertProducts(context.Background(), billing.UpsertRequest{})
				if e := billing.AsError(err); err == nil || e.Code != billing.CodeUnavailable || !e.Retryable {
					t.Fatalf("interrupted run: %v, want retryable unavailable", err)
				}
				res := f.upsert(billing.UpsertRequest{})
				if res.Created+res.Updated+res.Unchanged != 11 {
					t.Fatalf("re-run %+v", res)
				}
				st := f.read()
				if len(st.products) != 11 || len(st.meters) != 9 {
					t.Fatalf("%d products, %d meters: want 11 and 9", len(st.products), len(st.meters))
				}
				for id := range st.products {
					if n := len(st.activePricesOf(id)); n != 1 {
						t.Errorf("%s has %d active prices, want 1", id, n)
					}
				}
				if len(st.prices) > 11 {
					t.Errorf("%d prices: a duplicate was created", len(st.prices))
				}
				if final := f.upsert(billing.UpsertRequest{}); final.Unchanged != 11 {
					t.Fatalf("a third run still changes things: %+v", final)
				}
			})
		}
	}
}

func TestUpsert_DryRunWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	res := f.upsert(billing.UpsertRequest{DryRun: true})
	if res.Created != 11 || !res.DryRun {
		t.Fatalf("dry run plan %+v", res)
	}
	writes, reads := writesAndReads(f.stripe.Counts())
	_, dbWrites := f.db.Reset()
	t.Logf("dry run: %d Stripe reads", reads)
	if writes != 0 || dbWrites != 0 {
		t.Fatalf("dry run wrote: Stripe %d, DynamoDB %d", writes, dbWrites)
	}
	if st := f.read(); len(st.products) != 0 {
		t.Fatal("dry run created products")
	}
}

func TestUpsert_InvalidCatalogListsProblemsAndWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	raw := json.RawMessage(`{"catalog": {"version": 1, "entries": [
		{"key": "a", "kind": "tier", "name": "", "currency": "usd", "interval": "month", "unit_amount_decimal": "1"},
		{"key": "a", "kind": "tier", "name": "A", "currency": "usd", "interval": "month", "unit_amount_decimal": "-5"}]}}`)
	resp, err := f.svc.HandleUpsertProducts(context.Background(), raw)
	if err != nil || resp.OK || resp.Error.Code != "invalid_request" || resp.Error.Retryable {
		t.Fatalf("got %+v %v", resp, err)
	}
	for _, want := range []string{"display name is empty", "duplicate key", "negative"} {
		if !strings.Contains(resp.Error.Message, want) {
			t.Errorf("message lacks %q: %s", want, resp.Error.Message)
		}
	}
	if c := f.stripe.Counts(); len(c) != 0 {
		t.Fatalf("an invalid catalog reached Stripe: %v", c)
	}
	if r, w := f.db.Reset(); r+w != 0 {
		t.Fatalf("an invalid catalog reached DynamoDB: %d reads, %d writes", r, w)
	}
}

func TestUpsert_HandlerAnswersTheContract(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	resp, err := f.svc.HandleUpsertProducts(context.Background(), json.RawMessage(`{"dry_run": false, "catalog": null}`))
	if err != nil || !resp.OK {
		t.Fatalf("%+v %v", resp, err)
	}
	raw, _ := json.Marshal(resp)
	var got struct {
		OK     bool `json:"ok"`
		Result struct {
			Created, Updated, Archived, Unchanged int
			Plan                                  []struct {
				Key, Action string
				Changes     []string
			}
		} `json:"result"`
	}
	if err := json.Unmarshal(raw, &got); err != nil || got.Result.Created != 11 || len(got.Result.Plan) != 11 || got.Result.Plan[0].Action != "create" {
		t.Fatalf("envelope %s", raw)
	}
	for _, bad := range []string{`{"dry_run": "yes"}`, `{"catalog": [], "x": 1}`, `[1]`} {
		resp, _ := f.svc.HandleUpsertProducts(context.Background(), json.RawMessage(bad))
		if resp.OK || resp.Error.Code != "invalid_request" {
			t.Errorf("%s answered %+v", bad, resp)
		}
	}
}

func TestUpsert_StripeRateLimitIsRetryableUnavailable(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ns)
	f.stripe.InjectFault(stripelocal.Fault{Kind: "429", Path: "/v1/products", Count: 5})
	resp, _ := f.svc.HandleUpsertProducts(context.Background(), nil)
	if resp.OK || resp.Error.Code != "unavailable" || !resp.Error.Retryable || resp.Error.StripeRequestID == "" {
		t.Fatalf("got %+v", resp.Error)
	}
}

func TestUpsert_BillingDisabledMakesNoCalls(t *testing.T) {
	t.Parallel()
	svc := disabledService(t)
	resp, err := svc.HandleUpsertProducts(context.Background(), nil)
	if err != nil || resp.OK || resp.Error.Code != "billing_disabled" {
		t.Fatalf("got %+v %v", resp, err)
	}
}
