package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/baseten/billing-functions/internal/testenv"
)

// TestEndToEnd_TakingTheMoneyThroughTheRealBinaries: Checkout with each
// test card, the Elements path through 3-D Secure, a trial that saves a
// card, a first payment never made, and a failed renewal paid on the hosted
// invoice page, each seen through the subscribe binary's status as the
// webhook binary mirrored it. The local Stripe's clock starts 50 days in
// the past, so that the failed renewal's period began longer ago than
// PAST_DUE_GRACE_DAYS by the functions' own clock: check_access denies it.
func TestEndToEnd_TakingTheMoneyThroughTheRealBinaries(t *testing.T) {
	s := startStack(t)
	s.control("/_local/clock/rewind", map[string]any{"seconds": 50 * 24 * 3600})
	payment := func(org string) map[string]any {
		t.Helper()
		p, _ := s.call(map[string]any{"action": "get_status", "org_id": org})["payment"].(map[string]any)
		return p
	}

	// Checkout: a declined card, then one that needs 3-D Secure, failed
	// once, then passed.
	co := s.call(req("create_checkout_session", "org_co", "tier", "starter", "email", "co@example.com", "instance_types", []string{"gpu-t4"},
		"success_url", "https://app.example.com/done?session={CHECKOUT_SESSION_ID}", "cancel_url", "https://app.example.com/back"))
	u, _ := co["url"].(string)
	if _, html := testenv.PostForm(t, u+"/pay", url.Values{"card": {"pm_card_visa_chargeDeclined"}}); !strings.Contains(html, "declined") {
		t.Fatalf("a declined card on the Checkout page:\n%s", html)
	}
	if _, html := testenv.PostForm(t, u+"/pay", url.Values{"card": {"pm_card_authenticationRequired"}}); !strings.Contains(html, `id="complete"`) {
		t.Fatalf("a card that needs 3-D Secure:\n%s", html)
	}
	testenv.PostForm(t, u+"/authenticate", url.Values{"pass": {"false"}})
	testenv.PostForm(t, u+"/pay", url.Values{"card": {"pm_card_authenticationRequired"}})
	if resp, _ := testenv.PostForm(t, u+"/authenticate", url.Values{"pass": {"true"}}); resp.StatusCode != http.StatusSeeOther ||
		resp.Header.Get("Location") != "https://app.example.com/done?session="+co["session_id"].(string) {
		t.Fatalf("passing 3-D Secure: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	s.control("/_local/wait", nil)
	if sub, _ := s.status("org_co"); sub["status"] != "active" || fmt.Sprint(sub["instance_types"]) != "[gpu-t4]" {
		t.Fatalf("after Checkout: %v\n%s", sub, s.webhookLog())
	}

	// Elements: the status's client secret is confirmed with a card that
	// needs 3-D Secure; the status then says requires_action until the
	// customer authenticates.
	st := s.call(req("subscribe", "org_3ds", "tier", "starter", "email", "3ds@example.com"))
	pay, _ := st["payment"].(map[string]any)
	secret, _ := pay["client_secret"].(string)
	pi, _, _ := strings.Cut(secret, "_secret_")
	var confirmed struct{ Status string }
	s.stripeAPI(t, http.MethodPost, "/v1/payment_intents/"+pi+"/confirm", url.Values{"payment_method": {"pm_card_authenticationRequired"}}, &confirmed)
	s.control("/_local/wait", nil)
	if p := payment("org_3ds"); confirmed.Status != "requires_action" || p["status"] != "requires_action" || p["client_secret"] != secret {
		t.Fatalf("after a card that needs authentication: %s, status's payment %v", confirmed.Status, p)
	}
	s.control("/_local/payment_intents/"+pi+"/authenticate", map[string]any{"pass": true})
	s.control("/_local/wait", nil)
	if sub, _ := s.status("org_3ds"); sub["status"] != "active" || payment("org_3ds") != nil {
		t.Fatalf("after authenticating: %v %v", sub, payment("org_3ds"))
	}

	// A trial saves a card with its SetupIntent; a first payment never made.
	st = s.call(req("subscribe", "org_trial", "tier", "starter", "email", "trial@example.com", "trial_days", 7))
	pay, _ = st["payment"].(map[string]any)
	seti, _, _ := strings.Cut(fmt.Sprint(pay["client_secret"]), "_secret_")
	if pay["intent"] != "setup" || !strings.HasPrefix(seti, "seti_") {
		t.Fatalf("a trial's payment: %v", st)
	}
	var saved struct{ Status string }
	s.stripeAPI(t, http.MethodPost, "/v1/setup_intents/"+seti+"/confirm", url.Values{"payment_method": {"pm_card_visa"}}, &saved)
	s.call(req("subscribe", "org_never", "tier", "starter", "email", "never@example.com"))
	s.control("/_local/wait", nil)
	if sub, _ := s.status("org_trial"); saved.Status != "succeeded" || sub["payment_method_on_file"] != true || payment("org_trial") != nil {
		t.Fatalf("after saving a card in the trial: %s %v", saved.Status, sub)
	}
	s.control("/_local/clock/advance", map[string]any{"seconds": 24 * 3600})
	s.control("/_local/wait", nil)
	if sub, _ := s.status("org_never"); sub["status"] != "incomplete_expired" || payment("org_never") != nil {
		t.Fatalf("a first payment never made, a day later: %v", sub)
	}
	if sub := s.call(req("subscribe", "org_never", "tier", "starter", "email", "never@example.com"))["subscription"].(map[string]any); sub["status"] != "incomplete" {
		t.Fatalf("subscribing again after incomplete_expired: %v", sub)
	}
	s.control("/_local/clock/advance", map[string]any{"seconds": 7 * 24 * 3600})
	s.control("/_local/wait", nil)
	if sub, delinquent := s.status("org_trial"); sub["status"] != "active" || delinquent {
		t.Fatalf("the trial's end with a card: %v delinquent=%v", sub, delinquent)
	}

	// A renewal that fails, then paid on the hosted invoice page.
	coSub, _ := s.status("org_co")
	s.control("/_local/config", map[string]any{"payment_mode": "never"})
	s.control("/_local/clock/advance", map[string]any{"seconds": 32 * 24 * 3600})
	s.control("/_local/subscriptions/"+coSub["id"].(string)+"/settle", map[string]any{"outcome": "failed"})
	s.control("/_local/wait", nil)
	p := payment("org_co")
	hosted, _ := p["hosted_invoice_url"].(string)
	if p["status"] != "requires_payment_method" || !strings.HasPrefix(hosted, s.stripeURL+"/_local/invoices/") {
		t.Fatalf("after a failed renewal: %v", p)
	}
	// The period began about 19 days ago by the real clock, past the
	// default grace of 7 days (within it, the core app's flow is allowed).
	s.wantAccess("org_co", "gpu-t4", false, "past_due")
	s.control("/_local/config", map[string]any{"payment_mode": ""})
	if _, html := testenv.PostForm(t, hosted+"/pay", url.Values{"card": {"pm_card_visa"}}); !strings.Contains(html, "This invoice is paid.") {
		t.Fatalf("the hosted invoice page:\n%s", html)
	}
	s.control("/_local/wait", nil)
	if sub, delinquent := s.status("org_co"); sub["status"] != "active" || delinquent || payment("org_co") != nil {
		t.Fatalf("after paying the renewal: %v delinquent=%v", sub, delinquent)
	}
	s.wantAccess("org_co", "gpu-t4", true, "ok")
}
