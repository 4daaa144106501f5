package billing_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
)

// TestBrowser_APersonPaysOnTheCheckoutPageAndTheMirrorTurnsActive opens the
// page create_checkout_session answers in headless Chromium, picks the
// test card that pays, submits, lands on the app's success page, and then
// the webhooks make the organization's status active.
func TestBrowser_APersonPaysOnTheCheckoutPageAndTheMirrorTurnsActive(t *testing.T) {
	browser := testenv.Chromium(t)
	t.Parallel()
	f := newFixture(t, ns)
	f.upsert(billing.UpsertRequest{})
	// The app's pages the Checkout page sends the customer back to.
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<html><body><p id="done">paid: %s</p></body></html>`, r.URL.Query().Get("session"))
	}))
	t.Cleanup(app.Close)

	before := len(f.allEvents())
	res := f.ok(req("create_checkout_session", "org_browser", "tier", "business", "email", "browser@example.com",
		"instance_types", []string{"gpu-a10g"}, "success_url", app.URL+"/done?session={CHECKOUT_SESSION_ID}", "cancel_url", app.URL+"/back"))
	page, session := res["url"].(string), res["session_id"].(string)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.Flag("headless", true), chromedp.Flag("disable-gpu", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	defer cancelTimeout()

	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		t.Fatalf("opening the Checkout page: %v", err)
	}
	shown, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
	if err != nil {
		t.Fatal(err)
	}
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`input[name="card"][value="pm_card_visa"]`)),
		chromedp.Click(chromedp.CSS("#submit")),
		chromedp.WaitVisible(chromedp.CSS("#done")))
	if err != nil {
		t.Fatalf("paying in the browser: %v", err)
	}
	landed, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#done")))
	if err != nil {
		t.Fatal(err)
	}
	location, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(shown, "Business tier") || !strings.Contains(shown, "A10G GPU") {
		t.Fatalf("the Checkout page shows neither the tier nor the instance type:\n%s", shown)
	}
	if landed != "paid: "+session || !strings.HasPrefix(location, app.URL+"/done") {
		t.Fatalf("after paying the browser is at %s showing %q, want the success page of %s", location, landed, session)
	}
	f.deliverSince(before)
	if sub := subscriptionOf(t, f.ok(req("get_status", "org_browser"))); sub["status"] != "active" || sub["tier"] != "business" {
		t.Fatalf("after paying in the browser: %v", sub)
	}
}
