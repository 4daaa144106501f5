package billing

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/stripe/stripe-go/v76"
)

// Catalog objects as upsert-products sees them in Stripe.
type (
	stripeProduct struct {
		ID, Name, Description string
		Active                bool
		Metadata              map[string]string
		DefaultPrice          *stripePrice // nil when unset
	}
	stripePrice struct {
		ID, Product, Currency, Interval, UsageType, Meter, LookupKey string
		UnitAmountDecimal                                            string // normalised, see normalAmount
		Active                                                       bool
		Metadata                                                     map[string]string
	}
	stripeMeter struct {
		ID, EventName, DisplayName string
		Active                     bool
	}
)

// catalogStripe is what upsert-products needs from Stripe.
type catalogStripe interface {
	listProducts(ctx context.Context, ids []string) (map[string]stripeProduct, error)
	listMeters(ctx context.Context) (map[string]stripeMeter, error) // by event name
	priceByLookupKey(ctx context.Context, key string) (*stripePrice, error)
	getPrice(ctx context.Context, id string) (*stripePrice, error)
	createProduct(ctx context.Context, p *stripe.ProductParams, from any) error
	updateProduct(ctx context.Context, id string, p *stripe.ProductParams, from any) error
	createPrice(ctx context.Context, p *stripe.PriceParams, from any) (stripePrice, error)
	updatePrice(ctx context.Context, id string, p *stripe.PriceParams, from any) error
	createMeter(ctx context.Context, p *stripe.BillingMeterParams) (stripeMeter, error)
	setMeterActive(ctx context.Context, id string, active bool) error
	renameMeter(ctx context.Context, id, name string) error
}

// stripeCatalog implements catalogStripe with stripe-go. keys is the
// generation of its idempotency keys (table.Store.CatalogKeys).
type stripeCatalog struct {
	api  *stripeAPI
	keys int64
}

var _ catalogStripe = stripeCatalog{}

func (c stripeCatalog) listProducts(ctx context.Context, ids []string) (map[string]stripeProduct, error) {
	out := map[string]stripeProduct{}
	if len(ids) == 0 {
		return out, nil
	}
	params := &stripe.ProductListParams{IDs: stripe.StringSlice(ids)}
	params.Limit = stripe.Int64(MaxCatalogEntries)
	params.Context = ctx
	params.AddExpand("data.default_price")
	it := c.api.Products.List(params)
	for it.Next() {
		p := it.Product()
		sp := stripeProduct{ID: p.ID, Name: p.Name, Description: p.Description, Active: p.Active, Metadata: p.Metadata}
		if p.DefaultPrice != nil && p.DefaultPrice.ID != "" {
			dp := toStripePrice(p.DefaultPrice, decimalsOf(it.ProductList().LastResponse))
			sp.DefaultPrice = &dp
		}
		out[p.ID] = sp
	}
	return out, fromStripe("list products", it.Err())
}

func (c stripeCatalog) listMeters(ctx context.Context) (map[string]stripeMeter, error) {
	params := &stripe.BillingMeterListParams{}
	params.Limit = stripe.Int64(100)
	params.Context = ctx
	out := map[string]stripeMeter{}
	it := c.api.BillingMeters.List(params)
	for it.Next() {
		m := it.BillingMeter()
		prev, seen := out[m.EventName]
		if seen && prev.Active { // an active meter wins over inactive ones of the same name
			continue
		}
		out[m.EventName] = stripeMeter{ID: m.ID, EventName: m.EventName, DisplayName: m.DisplayName, Active: m.Status == stripe.BillingMeterStatusActive}
	}
	return out, fromStripe("list meters", it.Err())
}

func (c stripeCatalog) priceByLookupKey(ctx context.Context, key string) (*stripePrice, error) {
	params := &stripe.PriceListParams{LookupKeys: stripe.StringSlice([]string{key})}
	params.Context = ctx
	it := c.api.Prices.List(params)
	if it.Next() {
		p := toStripePrice(it.Price(), decimalsOf(it.PriceList().LastResponse))
		return &p, nil
	}
	return nil, fromStripe("find price by lookup key", it.Err())
}

func (c stripeCatalog) getPrice(ctx context.Context, id string) (*stripePrice, error) {
	p, err := c.api.Prices.Get(id, &stripe.PriceParams{Params: stripe.Params{Context: ctx}})
	if err != nil {
		return nil, fromStripe("read price", err)
	}
	sp := toStripePrice(p, decimalsOf(p.LastResponse))
	return &sp, nil
}

func (c stripeCatalog) createProduct(ctx context.Context, p *stripe.ProductParams, from any) error {
	p.Context = ctx
	p.SetIdempotencyKey(c.key("create product", p, from))
	_, err := c.api.Products.New(p)
	return fromStripe("create product", err)
}

func (c stripeCatalog) updateProduct(ctx context.Context, id string, p *stripe.ProductParams, from any) error {
	p.Context = ctx
	p.SetIdempotencyKey(c.key("update product "+id, p, from))
	_, err := c.api.Products.Update(id, p)
	return fromStripe("update product", err)
}

func (c stripeCatalog) createPrice(ctx context.Context, p *stripe.PriceParams, from any) (stripePrice, error) {
	p.Context = ctx
	p.SetIdempotencyKey(c.key("create price", p, from))
	price, err := c.api.Prices.New(p)
	if err != nil {
		return stripePrice{}, fromStripe("create price", err)
	}
	return toStripePrice(price, decimalsOf(price.LastResponse)), nil
}

func (c stripeCatalog) updatePrice(ctx context.Context, id string, p *stripe.PriceParams, from any) error {
	p.Context = ctx
	p.SetIdempotencyKey(c.key("update price "+id, p, from))
	_, err := c.api.Prices.Update(id, p)
	return fromStripe("update price", err)
}

func (c stripeCatalog) createMeter(ctx context.Context, p *stripe.BillingMeterParams) (stripeMeter, error) {
	p.Context = ctx
	p.SetIdempotencyKey(c.key("create meter", p, nil))
	m, err := c.api.BillingMeters.New(p)
	if err != nil {
		return stripeMeter{}, fromStripe("create meter", err)
	}
	return stripeMeter{ID: m.ID, EventName: m.EventName, DisplayName: m.DisplayName, Active: true}, nil
}

func (c stripeCatalog) setMeterActive(ctx context.Context, id string, active bool) error {
	var err error
	if active {
		p := &stripe.BillingMeterReactivateParams{}
		p.Context = ctx
		_, err = c.api.BillingMeters.Reactivate(id, p)
	} else {
		p := &stripe.BillingMeterDeactivateParams{}
		p.Context = ctx
		_, err = c.api.BillingMeters.Deactivate(id, p)
	}
	return fromStripe("set meter status", err)
}

func (c stripeCatalog) renameMeter(ctx context.Context, id, name string) error {
	p := &stripe.BillingMeterParams{DisplayName: stripe.String(name)}
	p.Context = ctx
	_, err := c.api.BillingMeters.Update(id, p)
	return fromStripe("rename meter", err)
}

// toStripePrice converts a price of stripe-go's. Its amount comes from
// decimals, the exact decimal Stripe sent (stripe-go reads it into a
// float64, which would round a long one).
// key derives the idempotency key of a write from what it does (see
// idempotencyKey) and the key generation.
func (c stripeCatalog) key(scope string, params stripe.ParamsContainer, from any) string {
	if c.keys > 0 {
		scope += " #" + strconv.FormatInt(c.keys, 10)
	}
	return idempotencyKey(scope, params, from)
}

func toStripePrice(p *stripe.Price, decimals map[string]string) stripePrice {
	sp := stripePrice{ID: p.ID, Currency: string(p.Currency), LookupKey: p.LookupKey, Active: p.Active, Metadata: p.Metadata,
		UnitAmountDecimal: normalAmount(decimals[p.ID])}
	if p.Product != nil {
		sp.Product = p.Product.ID
	}
	if p.Recurring != nil {
		sp.Interval, sp.UsageType, sp.Meter = string(p.Recurring.Interval), string(p.Recurring.UsageType), p.Recurring.Meter
	}
	return sp
}

// decimalsOf reads the unit_amount_decimal of every price in an answer's
// JSON, by price ID, as the strings Stripe sent.
func decimalsOf(resp *stripe.APIResponse) map[string]string {
	out := map[string]string{}
	if resp == nil {
		return out
	}
	var doc any
	if json.Unmarshal(resp.RawJSON, &doc) != nil {
		return out
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if x["object"] == "price" {
				id, _ := x["id"].(string)
				if amount, ok := x["unit_amount_decimal"].(string); ok {
					out[id] = amount
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(doc)
	return out
}
