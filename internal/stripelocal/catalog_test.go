package stripelocal_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/internal/testenv"
)

func TestProducts_CreateWithOwnIDRetrieveUpdateAndList(t *testing.T) {
	e := newEnv(t)
	p, err := e.sc.Products.New(&stripe.ProductParams{
		ID: stripe.String("ns-dev-starter"), Name: stripe.String("Starter tier"),
		Metadata: map[string]string{"billing_namespace": "ns-dev"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != "ns-dev-starter" || !p.Active || p.Metadata["billing_namespace"] != "ns-dev" {
		t.Fatalf("created %+v", p)
	}
	got, err := e.sc.Products.Get("ns-dev-starter", nil)
	if err != nil || got.Name != "Starter tier" {
		t.Fatalf("retrieve: %+v %v", got, err)
	}
	up, err := e.sc.Products.Update("ns-dev-starter", &stripe.ProductParams{Name: stripe.String("Starter"), Active: stripe.Bool(false)})
	if err != nil || up.Name != "Starter" || up.Active {
		t.Fatalf("update: %+v %v", up, err)
	}

	_, err = e.sc.Products.New(&stripe.ProductParams{ID: stripe.String("ns-dev-starter"), Name: stripe.String("again")})
	if se := stripeErr(t, err); se.HTTPStatusCode != 400 || se.Code != "resource_already_exists" {
		t.Fatalf("duplicate id: %+v, want 400 resource_already_exists", se)
	}
}

func TestProducts_ListFiltersByIDsAndActiveAndPaginates(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"p1", "p2", "p3", "p4", "p5"} {
		if _, err := e.sc.Products.New(&stripe.ProductParams{ID: stripe.String(id), Name: stripe.String(id), Active: stripe.Bool(id != "p3")}); err != nil {
			t.Fatal(err)
		}
	}
	params := &stripe.ProductListParams{IDs: stripe.StringSlice([]string{"p1", "p3", "p5"})}
	params.Limit = stripe.Int64(1)
	var ids []string
	it := e.sc.Products.List(params) // pages through one item at a time
	for it.Next() {
		ids = append(ids, it.Product().ID)
	}
	if it.Err() != nil || strings.Join(ids, ",") != "p5,p3,p1" {
		t.Fatalf("ids[] listing = %v (%v), want p5,p3,p1 newest first", ids, it.Err())
	}
	ids = nil
	it = e.sc.Products.List(&stripe.ProductListParams{Active: stripe.Bool(false)})
	for it.Next() {
		ids = append(ids, it.Product().ID)
	}
	if strings.Join(ids, ",") != "p3" {
		t.Fatalf("active=false listing = %v, want p3", ids)
	}
	if got := e.srv.Counts()["GET /v1/products"]; got != 4 {
		t.Fatalf("GET /v1/products count = %d, want 4 (3 pages + 1)", got)
	}
}

func TestPrices_LookupKeyTransfersToANewPrice(t *testing.T) {
	e := newEnv(t)
	mustProduct(t, e, "gpu")
	first, err := e.sc.Prices.New(&stripe.PriceParams{
		Product: stripe.String("gpu"), Currency: stripe.String("usd"), UnitAmountDecimal: stripe.Float64(4.25),
		Recurring: &stripe.PriceRecurringParams{Interval: stripe.String("month")}, LookupKey: stripe.String("ns-gpu"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if first.UnitAmountDecimal != 4.25 || first.UnitAmount != 0 || first.LookupKey != "ns-gpu" || first.Recurring.UsageType != "licensed" {
		t.Fatalf("first price %+v", first)
	}
	_, err = e.sc.Prices.New(&stripe.PriceParams{Product: stripe.String("gpu"), Currency: stripe.String("usd"),
		UnitAmount: stripe.Int64(500), LookupKey: stripe.String("ns-gpu")})
	if se := stripeErr(t, err); se.HTTPStatusCode != 400 || !strings.Contains(se.Msg, "already uses that lookup key") {
		t.Fatalf("taken lookup key: %+v", se)
	}
	second, err := e.sc.Prices.New(&stripe.PriceParams{Product: stripe.String("gpu"), Currency: stripe.String("usd"),
		UnitAmount: stripe.Int64(500), LookupKey: stripe.String("ns-gpu"), TransferLookupKey: stripe.Bool(true),
		Recurring: &stripe.PriceRecurringParams{Interval: stripe.String("month")}})
	if err != nil {
		t.Fatal(err)
	}
	it := e.sc.Prices.List(&stripe.PriceListParams{LookupKeys: stripe.StringSlice([]string{"ns-gpu"})})
	var found []string
	for it.Next() {
		found = append(found, it.Price().ID)
	}
	if len(found) != 1 || found[0] != second.ID {
		t.Fatalf("lookup_keys[] found %v, want only %s", found, second.ID)
	}
	old, _ := e.sc.Prices.Get(first.ID, nil)
	if old.LookupKey != "" {
		t.Fatalf("the old price kept lookup key %q", old.LookupKey)
	}
	archived, err := e.sc.Prices.Update(first.ID, &stripe.PriceParams{Active: stripe.Bool(false)})
	if err != nil || archived.Active {
		t.Fatalf("archive: %+v %v", archived, err)
	}
	it = e.sc.Prices.List(&stripe.PriceListParams{Product: stripe.String("gpu"), Active: stripe.Bool(true)})
	found = nil
	for it.Next() {
		found = append(found, it.Price().ID)
	}
	if len(found) != 1 || found[0] != second.ID {
		t.Fatalf("active prices of gpu = %v, want %s", found, second.ID)
	}
}

func TestPrices_AmountsAreImmutable(t *testing.T) {
	// stripe-mock refuses unit_amount on an update before this server sees
	// it; without the referee, this server refuses it too.
	for name, refereed := range map[string]bool{"with stripe-mock": true, "alone": false} {
		t.Run(name, func(t *testing.T) {
			var e *env
			if refereed {
				ref := testenv.StripeMock(t)
				o := testOpts()
				o.Validator, o.MeterValidator = ref.Core, ref.Meters
				e = newBareEnv(t, o)
				t.Cleanup(func() {
					if v := e.srv.Violations(); len(v) != 1 {
						t.Errorf("violations = %v, want the refused update", v)
					}
				})
			} else {
				e = newBareEnv(t, testOpts())
			}
			mustProduct(t, e, "p")
			price, err := e.sc.Prices.New(&stripe.PriceParams{Product: stripe.String("p"), Currency: stripe.String("usd"), UnitAmount: stripe.Int64(100)})
			if err != nil {
				t.Fatal(err)
			}
			resp := rawPost(t, e, "/v1/prices/"+price.ID, url.Values{"unit_amount": {"200"}}, "")
			if resp.StatusCode != 400 {
				t.Fatalf("changing an amount answered %d, want 400", resp.StatusCode)
			}
			after, _ := e.sc.Prices.Get(price.ID, nil)
			if after.UnitAmount != 100 {
				t.Fatalf("amount changed to %d", after.UnitAmount)
			}
		})
	}
}

func TestPrices_MeteredPriceWithMeter(t *testing.T) {
	e := newEnv(t)
	mustProduct(t, e, "cpu")
	m := mustMeter(t, e, "ns.cpu_minutes")
	price, err := e.sc.Prices.New(&stripe.PriceParams{
		Product: stripe.String("cpu"), Currency: stripe.String("usd"), UnitAmountDecimal: stripe.Float64(0.35),
		Recurring: &stripe.PriceRecurringParams{Interval: stripe.String("month"), UsageType: stripe.String("metered"), Meter: stripe.String(m.ID)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if price.Recurring.UsageType != "metered" || price.Recurring.Meter != m.ID {
		t.Fatalf("metered price %+v", price.Recurring)
	}
}

func mustProduct(t *testing.T, e *env, id string) *stripe.Product {
	t.Helper()
	p, err := e.sc.Products.New(&stripe.ProductParams{ID: stripe.String(id), Name: stripe.String(id)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func rawPost(t *testing.T, e *env, path string, form url.Values, idemKey string) testenv.Answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(form.Encode()))
	req.Header.Set("Authorization", "Bearer sk_test_raw")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	return testenv.MustDo(t, http.DefaultClient, req)
}
