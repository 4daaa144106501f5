package stripelocal

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var productIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

func (s *Server) createProduct(r *request) (any, *apiError) {
	name := r.p.str("name")
	if name == "" {
		return nil, missingParam("name")
	}
	id := r.p.str("id")
	if id == "" {
		id = s.newID("prod")
	} else if !productIDPattern.MatchString(id) {
		return nil, invalid("id", "Invalid product id: %q", id)
	}
	if _, exists := s.state.get("product", id); exists {
		return nil, &apiError{Status: 400, Type: "invalid_request_error", Code: "resource_already_exists", Param: "id",
			Message: "Product already exists."}
	}
	active, _, ok := r.p.boolean("active")
	if !ok {
		return nil, invalid("active", "active must be true or false")
	}
	if !r.p.has("active") {
		active = true
	}
	now := s.now().Unix()
	p := obj{
		"id": id, "object": "product", "active": active, "created": now, "updated": now,
		"name": name, "description": nullable(r.p.str("description")), "metadata": obj{},
		"livemode": false, "default_price": nil, "images": []any{}, "features": []any{},
		"package_dimensions": nil, "shippable": nil, "statement_descriptor": nil, "tax_code": nil,
		"type": "service", "unit_label": nil, "url": nil,
	}
	if md, given := r.p.metadata(); given {
		applyMetadata(p, md)
	}
	s.state.put("product", p)
	s.emit("product.created", p, nil)
	return p, nil
}

func (s *Server) retrieveProduct(r *request) (any, *apiError) {
	p, ok := s.state.get("product", r.PathValue("id"))
	if !ok {
		return nil, noSuch("product", r.PathValue("id"), "id")
	}
	return s.expandProduct(p, r.p.strs("expand"), ""), nil
}

func (s *Server) updateProduct(r *request) (any, *apiError) {
	p, ok := s.state.get("product", r.PathValue("id"))
	if !ok {
		return nil, noSuch("product", r.PathValue("id"), "id")
	}
	before := clone(p)
	if r.p.has("name") {
		if r.p.str("name") == "" {
			return nil, invalid("name", "name cannot be empty")
		}
		p["name"] = r.p.str("name")
	}
	if r.p.has("description") {
		p["description"] = nullable(r.p.str("description"))
	}
	if active, given, ok := r.p.boolean("active"); !ok {
		return nil, invalid("active", "active must be true or false")
	} else if given {
		p["active"] = active
	}
	if md, given := r.p.metadata(); given {
		applyMetadata(p, md)
	}
	if r.p.has("default_price") {
		id := r.p.str("default_price")
		price, ok := s.state.get("price", id)
		switch {
		case id == "":
			p["default_price"] = nil
		case !ok:
			return nil, noSuch("price", id, "default_price")
		case price["product"] != p["id"]:
			return nil, invalid("default_price", "The price %s does not belong to product %s.", id, p["id"])
		case price["active"] != true:
			return nil, invalid("default_price", "The price %s is inactive.", id)
		default:
			p["default_price"] = id
		}
	}
	if prev := diff(before, p); len(prev) > 0 {
		p["updated"] = s.now().Unix()
		s.emit("product.updated", p, prev)
	}
	return s.expandProduct(p, r.p.strs("expand"), ""), nil
}

// expandProduct returns p with default_price expanded to the price object
// when expand names it (with prefix "data." inside a list).
func (s *Server) expandProduct(p obj, expand []string, prefix string) obj {
	if !slices.Contains(expand, prefix+"default_price") {
		return p
	}
	id, _ := p["default_price"].(string)
	price, ok := s.state.get("price", id)
	if !ok {
		return p
	}
	c := clone(p)
	c["default_price"] = clone(price)
	return c
}

func (s *Server) listProducts(r *request) (any, *apiError) {
	ids := r.p.strs("ids")
	active, activeGiven, ok := r.p.boolean("active")
	if !ok {
		return nil, invalid("active", "active must be true or false")
	}
	list, aerr := s.state.list("product", "/v1/products", r.p, func(p obj) bool {
		return (len(ids) == 0 || slices.Contains(ids, p["id"].(string))) && (!activeGiven || p["active"] == active)
	})
	if aerr != nil {
		return nil, aerr
	}
	data := list["data"].([]obj)
	expanded := make([]obj, len(data))
	for i, p := range data {
		expanded[i] = s.expandProduct(p, r.p.strs("expand"), "data.")
	}
	list["data"] = expanded
	return list, nil
}

var decimalPattern = regexp.MustCompile(`^\d+(\.\d{1,12})?$`)

func (s *Server) createPrice(r *request) (any, *apiError) {
	productID := r.p.str("product")
	if productID == "" {
		return nil, missingParam("product")
	}
	if _, ok := s.state.get("product", productID); !ok {
		return nil, noSuch("product", productID, "product")
	}
	currency := strings.ToLower(r.p.str("currency"))
	if currency == "" {
		return nil, missingParam("currency")
	}
	if len(currency) != 3 {
		return nil, invalid("currency", "Invalid currency: %s", currency)
	}
	var unitAmount any
	var unitDecimal string
	switch {
	case r.p.has("unit_amount") && r.p.has("unit_amount_decimal"):
		return nil, invalid("unit_amount", "You may only specify one of these parameters: unit_amount, unit_amount_decimal.")
	case r.p.has("unit_amount"):
		n, _, ok := r.p.integer("unit_amount")
		if !ok || n < 0 {
			return nil, invalid("unit_amount", "Invalid non-negative integer")
		}
		unitAmount, unitDecimal = n, strconv.FormatInt(n, 10)
	case r.p.has("unit_amount_decimal"):
		unitDecimal = r.p.str("unit_amount_decimal")
		if !decimalPattern.MatchString(unitDecimal) {
			return nil, invalid("unit_amount_decimal", "Invalid decimal: %s", unitDecimal)
		}
		if n, err := strconv.ParseInt(unitDecimal, 10, 64); err == nil {
			unitAmount = n
		}
	default:
		return nil, missingParam("unit_amount")
	}

	var recurring any
	typ := "one_time"
	if r.p.has("recurring") {
		rec := r.p.obj("recurring")
		interval := rec.str("interval")
		if !slices.Contains([]string{"day", "week", "month", "year"}, interval) {
			return nil, invalid("recurring[interval]", "Invalid interval: must be one of day, week, month, or year")
		}
		usage := rec.str("usage_type")
		if usage == "" {
			usage = "licensed"
		}
		if usage != "licensed" && usage != "metered" {
			return nil, invalid("recurring[usage_type]", "Invalid usage_type: must be licensed or metered")
		}
		count := int64(1)
		if n, given, ok := rec.integer("interval_count"); !ok || (given && n < 1) {
			return nil, invalid("recurring[interval_count]", "Invalid interval_count")
		} else if given {
			count = n
		}
		var meter any
		if m := rec.str("meter"); m != "" {
			if usage != "metered" {
				return nil, invalid("recurring[meter]", "A meter can only be set on a metered price.")
			}
			if _, ok := s.state.get("billing.meter", m); !ok {
				return nil, noSuch("billing meter", m, "recurring[meter]")
			}
			meter = m
		}
		recurring = obj{"aggregate_usage": nil, "interval": interval, "interval_count": count, "meter": meter,
			"trial_period_days": nil, "usage_type": usage}
		typ = "recurring"
	}

	lookupKey := r.p.str("lookup_key")
	transfer, _, ok := r.p.boolean("transfer_lookup_key")
	if !ok {
		return nil, invalid("transfer_lookup_key", "transfer_lookup_key must be true or false")
	}
	if aerr := s.checkLookupKey(lookupKey, "", transfer); aerr != nil {
		return nil, aerr
	}
	active, activeGiven, ok := r.p.boolean("active")
	if !ok {
		return nil, invalid("active", "active must be true or false")
	}
	price := obj{
		"id": s.newID("price"), "object": "price", "active": active || !activeGiven, "billing_scheme": "per_unit",
		"created": s.now().Unix(), "currency": currency, "custom_unit_amount": nil, "livemode": false,
		"lookup_key": nullable(lookupKey), "metadata": obj{}, "nickname": nullable(r.p.str("nickname")),
		"product": productID, "recurring": recurring, "tax_behavior": "unspecified", "tiers_mode": nil,
		"transform_quantity": nil, "type": typ, "unit_amount": unitAmount, "unit_amount_decimal": unitDecimal,
	}
	if md, given := r.p.metadata(); given {
		applyMetadata(price, md)
	}
	s.state.put("price", price)
	s.moveLookupKey(lookupKey, price)
	s.emit("price.created", price, nil)
	return price, nil
}

// checkLookupKey refuses a lookup key that another price holds, unless it
// is to be transferred.
func (s *Server) checkLookupKey(key, selfID string, transfer bool) *apiError {
	if key == "" {
		return nil
	}
	if owner, taken := s.state.lookupKeys[key]; taken && owner != selfID && !transfer {
		return invalid("lookup_key", "A price (`%s`) already uses that lookup key.", owner)
	}
	return nil
}

// moveLookupKey gives key to price, taking it from its previous owner.
func (s *Server) moveLookupKey(key string, price obj) {
	if key == "" {
		return
	}
	if owner, taken := s.state.lookupKeys[key]; taken && owner != price["id"] {
		old, _ := s.state.get("price", owner)
		before := clone(old)
		old["lookup_key"] = nil
		s.emit("price.updated", old, diff(before, old))
	}
	s.state.lookupKeys[key] = price["id"].(string)
}

func (s *Server) retrievePrice(r *request) (any, *apiError) {
	p, ok := s.state.get("price", r.PathValue("id"))
	if !ok {
		return nil, noSuch("price", r.PathValue("id"), "id")
	}
	return p, nil
}

func (s *Server) updatePrice(r *request) (any, *apiError) {
	p, ok := s.state.get("price", r.PathValue("id"))
	if !ok {
		return nil, noSuch("price", r.PathValue("id"), "id")
	}
	for _, immutable := range []string{"unit_amount", "unit_amount_decimal", "currency", "recurring", "product"} {
		if r.p.has(immutable) {
			return nil, invalid(immutable, "Received unknown parameter: %s. A price's amount and interval cannot be changed; create a new price.", immutable)
		}
	}
	before := clone(p)
	if active, given, ok := r.p.boolean("active"); !ok {
		return nil, invalid("active", "active must be true or false")
	} else if given {
		// The default price of a product cannot be archived (FIDELITY.md,
		// rule 2): unset the product's default_price first.
		if product, _ := s.state.get("product", p["product"].(string)); !active && product["default_price"] == p["id"] {
			return nil, &apiError{Status: 400, Type: "invalid_request_error", Param: "active",
				Message: "This price cannot be archived because it is the default price of its product."}
		}
		p["active"] = active
	}
	if md, given := r.p.metadata(); given {
		applyMetadata(p, md)
	}
	if r.p.has("nickname") {
		p["nickname"] = nullable(r.p.str("nickname"))
	}
	if r.p.has("lookup_key") {
		key := r.p.str("lookup_key")
		transfer, _, _ := r.p.boolean("transfer_lookup_key")
		if aerr := s.checkLookupKey(key, p["id"].(string), transfer); aerr != nil {
			return nil, aerr
		}
		if old, _ := p["lookup_key"].(string); old != "" && old != key {
			delete(s.state.lookupKeys, old)
		}
		p["lookup_key"] = nullable(key)
		s.moveLookupKey(key, p)
	}
	if prev := diff(before, p); len(prev) > 0 {
		s.emit("price.updated", p, prev)
		s.refreshItemPrices(p)
	}
	return p, nil
}

// refreshItemPrices shows a price's change on the subscription items that
// carry it: an item's price is the price object as it is now (archived,
// say), not as it was when the item was made.
func (s *Server) refreshItemPrices(p obj) {
	for _, sub := range s.state.objects["subscription"] {
		for _, it := range itemList(sub) {
			if it := it.(obj); itemPrice(it)["id"] == p["id"] {
				it["price"] = clone(p)
			}
		}
	}
}

func (s *Server) listPrices(r *request) (any, *apiError) {
	keys := r.p.strs("lookup_keys")
	if len(keys) > 10 {
		return nil, invalid("lookup_keys", "lookup_keys accepts at most 10 keys")
	}
	product := r.p.str("product")
	typ := r.p.str("type")
	active, activeGiven, ok := r.p.boolean("active")
	if !ok {
		return nil, invalid("active", "active must be true or false")
	}
	return s.state.list("price", "/v1/prices", r.p, func(p obj) bool {
		lk, _ := p["lookup_key"].(string)
		return (len(keys) == 0 || (lk != "" && slices.Contains(keys, lk))) &&
			(product == "" || p["product"] == product) &&
			(typ == "" || p["type"] == typ) &&
			(!activeGiven || p["active"] == active)
	})
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
