package stripelocal

import (
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// Stripe takes an empty string as an attempt to unset a parameter, and
// refuses it for a parameter that cannot be unset, on create and update
// alike (FIDELITY.md, rule 1). Which parameters can be unset is what
// Stripe's OpenAPI spec of 2023-10-16 (2024-04-10 for meters) types as
// accepting "": unsettable lists them for each route this server models, and
// a test in internal/testenv keeps the list equal to the spec. Metadata
// values are always allowed: "" removes a key (on create it is not stored).

// unsettable lists, per route, the parameters whose value may be "" (array
// indices written as []). Generated from the spec; see
// TestUnsettable_MatchesTheSpec.
var unsettable = map[string][]string{
	"POST /v1/products/{id}":                      {"description", "features", "images", "metadata", "package_dimensions", "tax_code", "unit_label", "url"},
	"POST /v1/prices/{id}":                        {"currency_options", "metadata"},
	"POST /v1/customers":                          {"address", "invoice_settings[custom_fields]", "invoice_settings[rendering_options]", "invoice_settings[rendering_options][amount_tax_display]", "metadata", "shipping", "tax[ip_address]", "tax_exempt"},
	"POST /v1/customers/{id}":                     {"address", "invoice_settings[custom_fields]", "invoice_settings[rendering_options]", "invoice_settings[rendering_options][amount_tax_display]", "metadata", "shipping", "tax[ip_address]", "tax_exempt"},
	"POST /v1/subscriptions":                      {"add_invoice_items[][tax_rates]", "application_fee_percent", "billing_thresholds", "default_tax_rates", "invoice_settings[account_tax_ids]", "items[][billing_thresholds]", "items[][tax_rates]", "metadata", "on_behalf_of", "payment_settings[payment_method_options][acss_debit]", "payment_settings[payment_method_options][bancontact]", "payment_settings[payment_method_options][card]", "payment_settings[payment_method_options][customer_balance]", "payment_settings[payment_method_options][konbini]", "payment_settings[payment_method_options][sepa_debit]", "payment_settings[payment_method_options][us_bank_account]", "payment_settings[payment_method_types]", "pending_invoice_item_interval"},
	"POST /v1/subscriptions/{id}":                 {"add_invoice_items[][tax_rates]", "application_fee_percent", "billing_thresholds", "cancel_at", "cancellation_details[comment]", "cancellation_details[feedback]", "default_source", "default_tax_rates", "description", "invoice_settings[account_tax_ids]", "items[][billing_thresholds]", "items[][metadata]", "items[][tax_rates]", "metadata", "on_behalf_of", "pause_collection", "payment_settings[payment_method_options][acss_debit]", "payment_settings[payment_method_options][bancontact]", "payment_settings[payment_method_options][card]", "payment_settings[payment_method_options][customer_balance]", "payment_settings[payment_method_options][konbini]", "payment_settings[payment_method_options][sepa_debit]", "payment_settings[payment_method_options][us_bank_account]", "payment_settings[payment_method_types]", "pending_invoice_item_interval", "transfer_data"},
	"POST /v1/subscription_schedules":             {"default_settings[billing_thresholds]", "default_settings[description]", "default_settings[invoice_settings][account_tax_ids]", "default_settings[on_behalf_of]", "default_settings[transfer_data]", "metadata", "phases[][add_invoice_items][][tax_rates]", "phases[][billing_thresholds]", "phases[][default_tax_rates]", "phases[][description]", "phases[][invoice_settings][account_tax_ids]", "phases[][items][][billing_thresholds]", "phases[][items][][tax_rates]"},
	"POST /v1/subscription_schedules/{id}":        {"default_settings[billing_thresholds]", "default_settings[description]", "default_settings[invoice_settings][account_tax_ids]", "default_settings[on_behalf_of]", "default_settings[transfer_data]", "metadata", "phases[][add_invoice_items][][tax_rates]", "phases[][billing_thresholds]", "phases[][default_tax_rates]", "phases[][description]", "phases[][invoice_settings][account_tax_ids]", "phases[][items][][billing_thresholds]", "phases[][items][][tax_rates]"},
	"POST /v1/subscription_items":                 {"billing_thresholds", "tax_rates"},
	"POST /v1/subscription_items/{id}":            {"billing_thresholds", "metadata", "tax_rates"},
	"POST /v1/payment_intents/{id}/confirm":       {"mandate_data", "payment_method_data[billing_details][address]", "payment_method_data[billing_details][email]", "payment_method_data[billing_details][name]", "payment_method_data[billing_details][phone]", "payment_method_options[acss_debit]", "payment_method_options[acss_debit][mandate_options][custom_mandate_url]", "payment_method_options[acss_debit][setup_future_usage]", "payment_method_options[affirm]", "payment_method_options[affirm][capture_method]", "payment_method_options[afterpay_clearpay]", "payment_method_options[afterpay_clearpay][capture_method]", "payment_method_options[alipay]", "payment_method_options[alipay][setup_future_usage]", "payment_method_options[au_becs_debit]", "payment_method_options[au_becs_debit][setup_future_usage]", "payment_method_options[bacs_debit]", "payment_method_options[bacs_debit][setup_future_usage]", "payment_method_options[bancontact]", "payment_method_options[bancontact][setup_future_usage]", "payment_method_options[blik]", "payment_method_options[blik][setup_future_usage]", "payment_method_options[boleto]", "payment_method_options[boleto][setup_future_usage]", "payment_method_options[card]", "payment_method_options[card][capture_method]", "payment_method_options[card][installments][plan]", "payment_method_options[card][setup_future_usage]", "payment_method_options[card][statement_descriptor_suffix_kana]", "payment_method_options[card][statement_descriptor_suffix_kanji]", "payment_method_options[card_present]", "payment_method_options[cashapp]", "payment_method_options[cashapp][capture_method]", "payment_method_options[cashapp][setup_future_usage]", "payment_method_options[customer_balance]", "payment_method_options[eps]", "payment_method_options[fpx]", "payment_method_options[giropay]", "payment_method_options[grabpay]", "payment_method_options[ideal]", "payment_method_options[ideal][setup_future_usage]", "payment_method_options[interac_present]", "payment_method_options[klarna]", "payment_method_options[klarna][capture_method]", "payment_method_options[konbini]", "payment_method_options[konbini][confirmation_number]", "payment_method_options[konbini][expires_after_days]", "payment_method_options[konbini][expires_at]", "payment_method_options[konbini][product_description]", "payment_method_options[link]", "payment_method_options[link][capture_method]", "payment_method_options[link][setup_future_usage]", "payment_method_options[oxxo]", "payment_method_options[p24]", "payment_method_options[paynow]", "payment_method_options[paypal]", "payment_method_options[paypal][capture_method]", "payment_method_options[paypal][setup_future_usage]", "payment_method_options[pix]", "payment_method_options[promptpay]", "payment_method_options[revolut_pay]", "payment_method_options[revolut_pay][setup_future_usage]", "payment_method_options[sepa_debit]", "payment_method_options[sepa_debit][setup_future_usage]", "payment_method_options[sofort]", "payment_method_options[sofort][preferred_language]", "payment_method_options[sofort][setup_future_usage]", "payment_method_options[swish]", "payment_method_options[swish][reference]", "payment_method_options[us_bank_account]", "payment_method_options[us_bank_account][mandate_options][collection_method]", "payment_method_options[us_bank_account][preferred_settlement_speed]", "payment_method_options[us_bank_account][setup_future_usage]", "payment_method_options[wechat_pay]", "payment_method_options[zip]", "receipt_email", "setup_future_usage", "shipping"},
	"POST /v1/setup_intents/{id}/confirm":         {"mandate_data", "payment_method_data[billing_details][address]", "payment_method_data[billing_details][email]", "payment_method_data[billing_details][name]", "payment_method_data[billing_details][phone]", "payment_method_options[acss_debit][mandate_options][custom_mandate_url]", "payment_method_options[us_bank_account][mandate_options][collection_method]"},
	"POST /v1/checkout/sessions":                  {"custom_text[after_submit]", "custom_text[shipping_address]", "custom_text[submit]", "custom_text[terms_of_service_acceptance]", "invoice_creation[invoice_data][account_tax_ids]", "invoice_creation[invoice_data][custom_fields]", "invoice_creation[invoice_data][rendering_options]", "invoice_creation[invoice_data][rendering_options][amount_tax_display]", "payment_method_options[acss_debit][mandate_options][custom_mandate_url]", "payment_method_options[paypal][capture_method]", "payment_method_options[paypal][setup_future_usage]", "payment_method_options[swish][reference]"},
	"POST /v1/billing_portal/configurations":      {"business_profile[headline]", "default_return_url", "features[customer_update][allowed_updates]", "features[subscription_cancel][cancellation_reason][options]", "features[subscription_update][default_allowed_updates]", "features[subscription_update][products]"},
	"POST /v1/billing_portal/configurations/{id}": {"business_profile[headline]", "business_profile[privacy_policy_url]", "business_profile[terms_of_service_url]", "default_return_url", "features[customer_update][allowed_updates]", "features[subscription_cancel][cancellation_reason][options]", "features[subscription_update][default_allowed_updates]", "features[subscription_update][products]", "metadata"},
	"POST /v1/webhook_endpoints":                  {"description", "metadata"},
	"POST /v1/webhook_endpoints/{id}":             {"description", "metadata"},
}

// unsetExceptions are parameters Stripe accepts "" for although the spec
// types them as plain strings, each with its source.
var unsetExceptions = map[string][]string{
	// Stripe staff on stripe/stripe-python#658: "unset the default price by
	// passing default_price: ''".
	"POST /v1/products/{id}": {"default_price"},
}

// UnsetExceptions returns the route's parameters that accept "" beyond the
// spec's word.
func UnsetExceptions(route string) []string { return unsetExceptions[route] }

// Unsettable returns the parameters of a route (as "POST /v1/products/{id}")
// that accept "": the spec's and the exceptions.
func Unsettable(route string) []string {
	out := append(append([]string(nil), unsettable[route]...), unsetExceptions[route]...)
	sort.Strings(out)
	return out
}

var arrayIndex = regexp.MustCompile(`\[[0-9]+\]`)

// checkEmptyStrings refuses the first empty value (in name order) of a
// parameter that route cannot unset, with Stripe's error.
func checkEmptyStrings(route string, values url.Values) *apiError {
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, v := range values[name] {
			if v == "" && !canUnset(route, name) {
				return &apiError{Status: 400, Type: "invalid_request_error", Code: "parameter_invalid_empty", Param: name,
					Message: fmt.Sprintf("You passed an empty string for '%s'. We assume empty values are an attempt to unset a parameter; "+
						"however '%s' cannot be unset. You should remove '%s' from your request or supply a non-empty value.", name, name, name)}
			}
		}
	}
	return nil
}

func canUnset(route, name string) bool {
	norm := arrayIndex.ReplaceAllString(name, "[]")
	if strings.HasPrefix(norm, "metadata[") || strings.Contains(norm, "[metadata][") {
		return true
	}
	for _, p := range Unsettable(route) {
		if norm == p || strings.HasPrefix(norm, p+"[") {
			return true
		}
	}
	return false
}
