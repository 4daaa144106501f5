package billing

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

// UpsertRequest is the upsert-products function's input. A nil Catalog
// means the embedded default.
type UpsertRequest struct {
	DryRun  bool     `json:"dry_run"`
	Catalog *Catalog `json:"catalog"`
}

// UpsertResult counts what a run did (or, with dry_run, would do) and lists
// the plan. A replaced price counts as updated.
type UpsertResult struct {
	Created   int        `json:"created"`
	Updated   int        `json:"updated"`
	Archived  int        `json:"archived"`
	Unchanged int        `json:"unchanged"`
	DryRun    bool       `json:"dry_run"`
	Plan      []PlanItem `json:"plan"`
	// PortalConfiguration is the deployment's customer portal
	// configuration (not made or changed by a dry run).
	PortalConfiguration string `json:"portal_configuration,omitempty"`
}

// PlanItem is one catalog key's action and its changes, for people.
type PlanItem struct {
	Key     string   `json:"key"`
	Action  string   `json:"action"`
	Changes []string `json:"changes"`
}

// HandleUpsertProducts is the upsert-products function's handler. It always
// answers with a Response envelope.
func (s *Service) HandleUpsertProducts(ctx context.Context, raw json.RawMessage) (Response, error) {
	start, before := time.Now(), s.stripeCounts()
	defer func() { s.emitEMF("upsert-products", stripeMetrics, s.addStripeCounts(map[string]int{}, before)) }()
	var req UpsertRequest
	var result UpsertResult
	_, err := s.enabledKeys(ctx) // disabled billing is reported before anything else
	if err == nil {
		req, err = DecodeUpsertRequest(raw)
	}
	if err == nil {
		result, err = s.UpsertProducts(ctx, req)
	}
	if err != nil {
		e := AsError(err)
		level := slog.LevelError
		if e.Code == CodeBillingDisabled || e.Code == CodeInvalidRequest {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "upsert-products", "outcome", e.Code, "dry_run", req.DryRun, "error", e.Message,
			"stripe_request_id", e.StripeRequestID, "duration_ms", time.Since(start).Milliseconds())
		return Failure(err), nil
	}
	s.log.InfoContext(ctx, "upsert-products", "outcome", "ok", "dry_run", req.DryRun, "created", result.Created,
		"updated", result.Updated, "archived", result.Archived, "unchanged", result.Unchanged, "duration_ms", time.Since(start).Milliseconds())
	return Success(result), nil
}

// DecodeUpsertRequest reads the function's payload strictly. An empty
// payload or null is the default request.
func DecodeUpsertRequest(raw []byte) (UpsertRequest, error) {
	var req UpsertRequest
	if len(raw) == 0 || string(raw) == "null" {
		return req, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return req, Errorf(CodeInvalidRequest, "request: %s", jsonProblem(err))
	}
	for k := range fields {
		if k != "dry_run" && k != "catalog" {
			return req, Errorf(CodeInvalidRequest, "request: unknown field %q (dry_run, catalog)", k)
		}
	}
	if v, ok := fields["dry_run"]; ok {
		if err := json.Unmarshal(v, &req.DryRun); err != nil {
			return req, Errorf(CodeInvalidRequest, "dry_run must be a boolean")
		}
	}
	if v, ok := fields["catalog"]; ok && string(v) != "null" {
		c, err := ParseCatalog(v)
		if err != nil {
			return req, err
		}
		req.Catalog = &c
	}
	return req, nil
}

// UpsertProducts brings this namespace's Stripe catalog in line with the
// catalog: it creates what is missing, updates products in place, replaces
// a price whose terms changed (moving its lookup key), archives removed
// entries, and then records each key's mapping in DynamoDB.
//
// It is idempotent and crash-safe: every create carries a deterministic
// idempotency key, and a run stopped anywhere converges when run again. With
// nothing to change it makes no write to Stripe or DynamoDB and two Stripe
// reads. Errors are *Error: invalid_request (with every catalog problem),
// billing_disabled, unavailable (retryable) or internal.
func (s *Service) UpsertProducts(ctx context.Context, req UpsertRequest) (UpsertResult, error) {
	if _, err := s.enabledKeys(ctx); err != nil {
		return UpsertResult{}, err
	}
	cat := DefaultCatalog()
	if req.Catalog != nil {
		cat = *req.Catalog
	}
	if err := cat.Validate(); err != nil {
		return UpsertResult{}, err
	}
	stored, err := s.store.ListProductMappings(ctx)
	if err != nil {
		return UpsertResult{}, fromTable("read product mappings", err)
	}
	mappings := map[string]table.ProductMapping{}
	for _, m := range stored {
		mappings[m.Key] = m
	}

	gen, err := s.store.CatalogKeys(ctx)
	if err != nil {
		return UpsertResult{}, fromTable("read the catalog's key generation", err)
	}
	var result UpsertResult
	err = s.withStripe(ctx, "upsert products", func(api *stripeAPI) error {
		u := &upserter{ns: s.cfg.Namespace, stripe: stripeCatalog{api: api, keys: gen}, store: s.store, now: time.Now}
		steps, err := u.plan(ctx, cat, mappings)
		if err != nil {
			return err
		}
		result = summarize(steps, req.DryRun)
		if req.DryRun {
			return nil
		}
		for _, st := range steps {
			if err := u.apply(ctx, st); err != nil {
				return err
			}
		}
		result.PortalConfiguration, err = s.ensurePortal(ctx, api, gen)
		if err != nil {
			return err
		}
		return s.storeTerms(ctx, cat.Terms())
	})
	if errors.Is(err, errKeyBurned) {
		// Stripe stored this answer under its key: the next run, planned
		// again from what Stripe holds, uses keys of a new generation.
		if nerr := s.store.NextCatalogKeys(ctx); nerr != nil {
			s.log.WarnContext(ctx, "could not move to new idempotency keys; the next run may meet the same answer", "error", nerr.Error())
		}
	}
	return result, err
}

// storeTerms stores what the catalog entitles, unless it is stored
// already.
func (s *Service) storeTerms(ctx context.Context, t table.Terms) error {
	stored, err := s.store.GetTerms(ctx)
	if err != nil && !errors.Is(err, table.ErrNotFound) {
		return fromTable("read the catalog's terms", err)
	}
	if err == nil && stored.Same(t) {
		return nil
	}
	return fromTable("write the catalog's terms", s.store.PutTerms(ctx, t))
}

func summarize(steps []*step, dryRun bool) UpsertResult {
	r := UpsertResult{DryRun: dryRun, Plan: []PlanItem{}}
	for _, st := range steps {
		changes := st.Changes
		if changes == nil {
			changes = []string{}
		}
		r.Plan = append(r.Plan, PlanItem{Key: st.Key, Action: st.Action, Changes: changes})
		switch st.Action {
		case ActionCreate:
			r.Created++
		case ActionUpdate, ActionReplacePrice:
			r.Updated++
		case ActionArchive:
			r.Archived++
		default:
			r.Unchanged++
		}
	}
	return r
}

type upserter struct {
	ns     string
	stripe catalogStripe
	store  *table.Store
	now    func() time.Time
}

// plan reads Stripe (one product list with the current prices expanded,
// one meter list) and decides every step.
func (u *upserter) plan(ctx context.Context, cat Catalog, mappings map[string]table.ProductMapping) ([]*step, error) {
	var ids []string
	needMeters := false
	for _, e := range cat.Entries {
		ids = append(ids, productID(u.ns, e.Key))
		needMeters = needMeters || e.Kind == KindInstanceType
	}
	for _, m := range mappings {
		if m.Active && !containsKey(cat, m.Key) {
			ids = append(ids, m.ProductID)
			needMeters = needMeters || m.MeterEventName != ""
		}
	}
	products, err := u.stripe.listProducts(ctx, ids)
	if err != nil {
		return nil, err
	}
	meters := map[string]stripeMeter{}
	if needMeters {
		if meters, err = u.stripe.listMeters(ctx); err != nil {
			return nil, err
		}
	}
	return planCatalog(u.ns, cat, products, meters, mappings)
}

func containsKey(cat Catalog, key string) bool {
	for _, e := range cat.Entries {
		if e.Key == key {
			return true
		}
	}
	return false
}

// apply carries out one step against Stripe, then records the mapping.
// Each call is safe to repeat: what already happened is found and kept.
func (u *upserter) apply(ctx context.Context, st *step) error {
	if st.Action == ActionArchive {
		return u.archive(ctx, st)
	}
	if st.Action == ActionUnchanged {
		return nil
	}
	d := st.want
	meterID := ""
	if st.meter != nil {
		meterID = st.meter.ID
	}
	if st.meterChange {
		id, err := u.ensureMeter(ctx, d, st.meter)
		if err != nil {
			return err
		}
		meterID = id
	}
	if st.productChange {
		if err := u.ensureProduct(ctx, d, st.product); err != nil {
			return err
		}
	}
	var current *stripePrice
	if st.product != nil {
		current = st.product.DefaultPrice
	}
	priceID := ""
	if current != nil {
		priceID = current.ID
	}
	if st.priceReplace {
		id, err := u.replacePrice(ctx, d, meterID, current, st.product == nil)
		if err != nil {
			return err
		}
		priceID = id
	} else if st.priceMetaFix {
		p := &stripe.PriceParams{Active: stripe.Bool(true), LookupKey: stripe.String(d.lookupKey), TransferLookupKey: stripe.Bool(true)}
		p.Metadata = d.priceMeta
		if err := u.stripe.updatePrice(ctx, current.ID, p, current); err != nil {
			return err
		}
	}
	m := table.ProductMapping{Key: d.entry.Key, Kind: string(d.entry.Kind), ProductID: d.productID, PriceID: priceID,
		MeterID: meterID, MeterEventName: d.meter, Hash: d.hash, Active: true, UpdatedAt: u.now().UTC()}
	if st.mapping != nil && st.mapping.Same(m) {
		return nil
	}
	return fromTable("write product mapping", u.store.PutProductMapping(ctx, m))
}

func (u *upserter) ensureMeter(ctx context.Context, d *desired, cur *stripeMeter) (string, error) {
	name := meterDisplayName(d.entry)
	if cur == nil {
		m, err := u.stripe.createMeter(ctx, &stripe.BillingMeterParams{
			DisplayName: stripe.String(name), EventName: stripe.String(d.meter),
			DefaultAggregation: &stripe.BillingMeterDefaultAggregationParams{Formula: stripe.String("sum")},
			CustomerMapping:    &stripe.BillingMeterCustomerMappingParams{EventPayloadKey: stripe.String("stripe_customer_id"), Type: stripe.String("by_id")},
			ValueSettings:      &stripe.BillingMeterValueSettingsParams{EventPayloadKey: stripe.String("value")},
		})
		return m.ID, err
	}
	if !cur.Active {
		if err := u.stripe.setMeterActive(ctx, cur.ID, true); err != nil {
			return "", err
		}
	}
	if cur.DisplayName != name {
		if err := u.stripe.renameMeter(ctx, cur.ID, name); err != nil {
			return "", err
		}
	}
	return cur.ID, nil
}

func (u *upserter) ensureProduct(ctx context.Context, d *desired, cur *stripeProduct) error {
	p := &stripe.ProductParams{Name: stripe.String(d.entry.Name)}
	if d.entry.Description != "" {
		// An empty string would be an attempt to unset, which a create
		// refuses (FIDELITY.md, rule 1).
		p.Description = stripe.String(d.entry.Description)
	}
	p.Metadata = d.productMeta
	if cur == nil {
		p.ID = stripe.String(d.productID)
		err := u.stripe.createProduct(ctx, p, nil)
		if ErrorCode(err) == CodeConflict {
			// Created by a run whose answer was lost: update it instead.
			p.ID = nil
			return u.stripe.updateProduct(ctx, d.productID, p, "after resource_already_exists")
		}
		return err
	}
	if cur.Description != "" && d.entry.Description == "" {
		p.Description = stripe.String("") // the update unsets it
	}
	p.Active = stripe.Bool(true)
	return u.stripe.updateProduct(ctx, cur.ID, p, cur)
}

// replacePrice makes a price with the entry's terms the product's current
// one: it reuses the price already holding the lookup key when that one is
// right (a previous run stopped halfway), or creates one that takes the key
// over; then it sets the product's default price and archives the old one.
// A product created by this run can have no price yet, so newProduct skips
// the lookup.
func (u *upserter) replacePrice(ctx context.Context, d *desired, meterID string, old *stripePrice, newProduct bool) (string, error) {
	var holder *stripePrice
	if !newProduct {
		var err error
		if holder, err = u.stripe.priceByLookupKey(ctx, d.lookupKey); err != nil {
			return "", err
		}
	}
	var next stripePrice
	var err error
	if holder != nil && holder.Active && d.priceMatches(holder, meterID) && (old == nil || holder.ID != old.ID) {
		next = *holder
	} else {
		p := &stripe.PriceParams{
			Product: stripe.String(d.productID), Currency: stripe.String(d.entry.Currency),
			Recurring: &stripe.PriceRecurringParams{Interval: stripe.String(d.entry.Interval), UsageType: stripe.String(d.usageType())},
			LookupKey: stripe.String(d.lookupKey), TransferLookupKey: stripe.Bool(true),
		}
		// The exact decimal, as written: stripe-go's UnitAmountDecimal is a
		// float64, which would round a long amount.
		p.AddExtra("unit_amount_decimal", d.entry.UnitAmountDecimal)
		if meterID != "" {
			p.Recurring.Meter = stripe.String(meterID)
		}
		p.Metadata = d.priceMeta
		from := "none"
		if old != nil {
			from = old.ID
		}
		if next, err = u.stripe.createPrice(ctx, p, from); err != nil {
			return "", err
		}
	}
	dp := &stripe.ProductParams{DefaultPrice: stripe.String(next.ID)}
	if err := u.stripe.updateProduct(ctx, d.productID, dp, from(old)); err != nil {
		return "", err
	}
	if old != nil && old.ID != next.ID && old.Active {
		if err := u.stripe.updatePrice(ctx, old.ID, &stripe.PriceParams{Active: stripe.Bool(false)}, old); err != nil {
			return "", err
		}
	}
	return next.ID, nil
}

func from(p *stripePrice) string {
	if p == nil {
		return "none"
	}
	return p.ID
}

// archive retires a catalog entry: the product and its price inactive,
// the meter deactivated, the mapping inactive. Stripe refuses to archive a
// product's default price (FIDELITY.md, rule 2), so the product loses its
// default price first, in the same update that archives it.
func (u *upserter) archive(ctx context.Context, st *step) error {
	if p := st.product; p != nil {
		if p.Active || p.DefaultPrice != nil {
			up := &stripe.ProductParams{Active: stripe.Bool(false)}
			if p.DefaultPrice != nil {
				up.DefaultPrice = stripe.String("")
			}
			if err := u.stripe.updateProduct(ctx, p.ID, up, p); err != nil {
				return err
			}
		}
		dp := p.DefaultPrice
		if dp == nil && st.mapping.PriceID != "" {
			// A run that stopped after the product update: the mapping
			// still names the price.
			var err error
			if dp, err = u.stripe.getPrice(ctx, st.mapping.PriceID); err != nil && ErrorCode(err) != CodeNotFound {
				return err
			}
		}
		if dp != nil && dp.Active {
			if err := u.stripe.updatePrice(ctx, dp.ID, &stripe.PriceParams{Active: stripe.Bool(false)}, dp); err != nil {
				return err
			}
		}
	}
	if st.meter != nil && st.meter.Active {
		if err := u.stripe.setMeterActive(ctx, st.meter.ID, false); err != nil {
			return err
		}
	}
	m := *st.mapping
	m.Active, m.UpdatedAt = false, u.now().UTC()
	return fromTable("write product mapping", u.store.PutProductMapping(ctx, m))
}
