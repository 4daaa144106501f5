package billing

import (
	"fmt"
	"strings"
	"testing"
)

func TestCatalog_DefaultIsValid(t *testing.T) {
	c := DefaultCatalog()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	tiers, instances := 0, 0
	for _, e := range c.Entries {
		switch e.Kind {
		case KindTier:
			tiers++
		case KindInstanceType:
			instances++
		}
		if e.Currency != "usd" {
			t.Errorf("%s is in %s, want usd", e.Key, e.Currency)
		}
	}
	if tiers != 2 || instances != 9 {
		t.Fatalf("default catalog has %d tiers and %d instance types, want 2 and 9", tiers, instances)
	}
}

func TestCatalog_ValidationListsEveryProblem(t *testing.T) {
	c := Catalog{Entries: []Entry{
		{Key: "ok", Kind: KindTier, Name: "Fine", Currency: "usd", Interval: "month", UnitAmountDecimal: "100"},
		{Key: "ok", Kind: KindTier, Name: "Twin", Currency: "usd", Interval: "month", UnitAmountDecimal: "100"},
		{Key: "Bad_Key", Kind: KindTier, Name: "x", Currency: "usd", Interval: "month", UnitAmountDecimal: "1"},
		{Key: "no-name", Kind: KindTier, Name: "  ", Currency: "usd", Interval: "month", UnitAmountDecimal: "1"},
		{Key: "negative", Kind: KindInstanceType, Name: "n", Currency: "usd", Interval: "month", UnitAmountDecimal: "-1"},
		{Key: "nan", Kind: KindInstanceType, Name: "n", Currency: "usd", Interval: "month", UnitAmountDecimal: "ten"},
		{Key: "fortnight", Kind: KindTier, Name: "f", Currency: "usd", Interval: "fortnight", UnitAmountDecimal: "1"},
		{Key: "doubloons", Kind: KindTier, Name: "d", Currency: "xdb", Interval: "month", UnitAmountDecimal: "1"},
		{Key: "odd-kind", Kind: "gadget", Name: "g", Currency: "usd", Interval: "month", UnitAmountDecimal: "1"},
	}}
	err := c.Validate()
	if ErrorCode(err) != CodeInvalidRequest {
		t.Fatalf("got %v, want invalid_request", err)
	}
	for _, want := range []string{`duplicate key "ok"`, `key "Bad_Key"`, "(no-name): the display name is empty", "(negative): the price \"-1\" is negative",
		"(nan): the price \"ten\" is not", `unknown interval "fortnight"`, `unknown currency "xdb"`, `kind "gadget"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not list %q:\n%v", want, err)
		}
	}
}

func TestCatalog_AtMostOneHundredEntries(t *testing.T) {
	var c Catalog
	for i := range 101 {
		c.Entries = append(c.Entries, Entry{Key: fmt.Sprintf("k%d", i), Kind: KindInstanceType, Name: "n", Currency: "usd", Interval: "month", UnitAmountDecimal: "1"})
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "101 entries") {
		t.Fatalf("got %v", err)
	}
}

func TestCatalog_ParseRefusesUnknownFieldsWithoutQuotingInput(t *testing.T) {
	_, err := ParseCatalog([]byte(`{"entries": [{"key": "a", "colour": "SECRET-ish"}]}`))
	if ErrorCode(err) != CodeInvalidRequest || !strings.Contains(err.Error(), "colour") || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("got %v", err)
	}
}

func TestPlan_IdentityIsDerivedFromNamespaceAndKey(t *testing.T) {
	cases := []struct{ ns, key, product, lookup, meter string }{
		{"baseten-dev", "gpu-a10g", "bf_baseten-dev_gpu-a10g", "bf:baseten-dev:gpu-a10g", "bf_baseten-dev_gpu-a10g_minutes"},
		// "a-b"+"c" and "a"+"b-c" must not collide.
		{"a-b", "c", "bf_a-b_c", "bf:a-b:c", "bf_a-b_c_minutes"},
		{"a", "b-c", "bf_a_b-c", "bf:a:b-c", "bf_a_b-c_minutes"},
	}
	for _, c := range cases {
		if got := productID(c.ns, c.key); got != c.product {
			t.Errorf("productID = %s, want %s", got, c.product)
		}
		if got := priceLookupKey(c.ns, c.key); got != c.lookup {
			t.Errorf("lookup key = %s, want %s", got, c.lookup)
		}
		if got := meterEventName(c.ns, c.key); got != c.meter {
			t.Errorf("meter = %s, want %s", got, c.meter)
		}
	}
}

func TestCatalog_OneCurrencyAndOneInterval(t *testing.T) {
	c := DefaultCatalog()
	c.Entries = append([]Entry(nil), c.Entries...)
	c.Entries[3].Currency = "eur"
	c.Entries[5].Interval = "year"
	err := c.Validate()
	if ErrorCode(err) != CodeInvalidRequest || !strings.Contains(err.Error(), "entries[3] (cpu-1x4): eur per month") ||
		!strings.Contains(err.Error(), "entries[5] (cpu-4x16): usd per year") {
		t.Fatalf("got %v, want both entries named", err)
	}
}

func TestNormalAmount_WorksOnTheDigits(t *testing.T) {
	for in, want := range map[string]string{"10.2400": "10.24", "0049": "49", "0.0867": "0.0867", "4900": "4900",
		"123456789012.123456789012": "123456789012.123456789012", "7.0": "7", ".5": "0.5"} {
		if got := normalAmount(in); got != want {
			t.Errorf("normalAmount(%q) = %q, want %q", in, got, want)
		}
	}
}
