package stripelocal

import (
	"fmt"
	"html/template"
	"net/http"
	"strconv"
)

// The pages a customer sees, standing in for Stripe's hosted ones: the
// Checkout page of a session, its 3-D Secure challenge, an invoice's
// payment page, and the billing portal. A person (or a headless browser in
// the tests) picks a test card and pays. Every value shown is escaped.

var hostedPages = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}} · local Stripe</title>
<style>body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem}
li{margin:.3rem 0}.error{color:#b00020}button{font-size:1rem;padding:.5rem 1.2rem;margin:.2rem}</style></head>
<body><h1>{{.Title}}</h1>
{{if .Error}}<p class="error" id="error">{{.Error}}</p>{{end}}
{{if .Lines}}<ul id="lines">{{range .Lines}}<li>{{.}}</li>{{end}}</ul>{{end}}
{{if .Amount}}<p id="amount">Due now: {{.Amount}}</p>{{end}}
{{if .Message}}<p id="message">{{.Message}}</p>{{end}}
{{if .PayAction}}<form method="post" action="{{.PayAction}}" id="pay">
<fieldset><legend>Test card</legend>
{{range .Cards}}<label><input type="radio" name="card" value="{{.Token}}" {{if .Checked}}checked{{end}}> {{.Label}}</label><br>{{end}}
</fieldset><button type="submit" id="submit">{{.PayLabel}}</button></form>{{end}}
{{if .AuthAction}}<form method="post" action="{{.AuthAction}}"><input type="hidden" name="pass" value="true">
<button type="submit" id="complete">Complete authentication</button></form>
<form method="post" action="{{.AuthAction}}"><input type="hidden" name="pass" value="false">
<button type="submit" id="fail">Fail authentication</button></form>{{end}}
<p><small>This page stands in for Stripe's hosted page on the local Stripe.</small></p>
</body></html>`))

type pageCard struct {
	Token, Label string
	Checked      bool
}

var pageCards = []pageCard{
	{"pm_card_visa", "Visa 4242: pays", true},
	{"pm_card_visa_chargeDeclined", "Visa 0002: declined", false},
	{"pm_card_authenticationRequired", "Visa 3184: asks for 3-D Secure", false},
	{"pm_card_chargeCustomerFail", "Visa 0341: attaches, then every charge fails", false},
}

type hostedPage struct {
	Title, Error, Amount, Message, PayAction, PayLabel, AuthAction string
	Lines                                                          []string
	Cards                                                          []pageCard
}

func renderPage(w http.ResponseWriter, status int, p hostedPage) {
	if p.PayAction != "" && p.Cards == nil {
		p.Cards = pageCards
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = hostedPages.Execute(w, p)
}

func money(amount int64, currency any) string {
	return fmt.Sprintf("%s %s", strconv.FormatFloat(float64(amount)/100, 'f', 2, 64), currency)
}

func (s *Server) hostedRoutes() {
	s.mux.HandleFunc("GET /_local/checkout/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.showPage(w, "checkout.session", r.PathValue("id"), hostedPage{Title: "Checkout", Error: "No such Checkout Session."},
			func(cs obj) hostedPage { return s.checkoutPage(cs, "") })
	})
	s.mux.HandleFunc("POST /_local/checkout/{id}/pay", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		s.answerPage(w, r, func() (hostedPage, string) {
			outcome, aerr := s.payCheckout(id, r.FormValue("card"))
			cs, _ := s.state.get("checkout.session", id)
			switch {
			case aerr != nil && cs != nil:
				return s.checkoutPage(cs, aerr.Message), ""
			case aerr != nil:
				return hostedPage{Title: "Checkout", Error: aerr.Message}, ""
			case outcome == chargeNeedsAuth:
				return hostedPage{Title: "Authenticate the payment", Message: "Your bank asks you to confirm this payment (3-D Secure).",
					AuthAction: "/_local/checkout/" + template.URLQueryEscaper(id) + "/authenticate"}, ""
			}
			return paidPage, successURL(cs)
		})
	})
	s.mux.HandleFunc("POST /_local/checkout/{id}/authenticate", func(w http.ResponseWriter, r *http.Request) {
		id, pass := r.PathValue("id"), r.FormValue("pass") == "true"
		s.answerPage(w, r, func() (hostedPage, string) {
			aerr := s.authenticateCheckout(id, pass)
			cs, _ := s.state.get("checkout.session", id)
			switch {
			case aerr != nil:
				return hostedPage{Title: "Checkout", Error: aerr.Message}, ""
			case !pass:
				return s.checkoutPage(cs, "We are unable to authenticate your payment method. Please choose a different payment method and try again."), ""
			}
			return paidPage, successURL(cs)
		})
	})
	s.mux.HandleFunc("GET /_local/invoices/{id}", func(w http.ResponseWriter, r *http.Request) {
		s.showPage(w, "invoice", r.PathValue("id"), hostedPage{Title: "Invoice", Error: "No such invoice."},
			func(inv obj) hostedPage { return s.invoicePage(inv, "") })
	})
	s.mux.HandleFunc("POST /_local/invoices/{id}/pay", func(w http.ResponseWriter, r *http.Request) {
		s.answerPage(w, r, func() (hostedPage, string) { return s.payInvoicePage(r.PathValue("id"), r.FormValue("card")), "" })
	})
	s.mux.HandleFunc("POST /_local/invoices/{id}/authenticate", func(w http.ResponseWriter, r *http.Request) {
		s.answerPage(w, r, func() (hostedPage, string) {
			inv, ok := s.state.get("invoice", r.PathValue("id"))
			if !ok {
				return hostedPage{Title: "Invoice", Error: "No such invoice."}, ""
			}
			if aerr := s.authenticate(str(inv["payment_intent"]), r.FormValue("pass") == "true"); aerr != nil {
				return hostedPage{Title: "Invoice", Error: aerr.Message}, ""
			}
			if sub, ok := s.state.get("subscription", str(inv["subscription"])); ok && inv["status"] == "paid" {
				s.afterFirstAttempt(sub, inv, charged)
			}
			return s.invoicePage(inv, ""), ""
		})
	})
	s.mux.HandleFunc("GET /_local/invoices/{id}/pdf", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		inv, ok := s.state.get("invoice", r.PathValue("id"))
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/pdf")
		fmt.Fprintf(w, "%%PDF-1.4\n%% local Stripe invoice %s\n%%%%EOF\n", inv["id"])
	})
	s.mux.HandleFunc("GET /_local/portal/{id}", func(w http.ResponseWriter, r *http.Request) {
		renderPage(w, http.StatusOK, hostedPage{Title: "Billing portal",
			Message: "Session " + r.PathValue("id") + ": this page stands in for Stripe's hosted portal."})
	})
}

// paidPage is what a hosted page shows once the payment went through.
var paidPage = hostedPage{Title: "Payment complete", Message: "Thank you: the subscription is paid."}

// showPage renders the page of the object kind/id, or missing (404).
func (s *Server) showPage(w http.ResponseWriter, kind, id string, missing hostedPage, page func(obj) hostedPage) {
	s.mu.Lock()
	o, ok := s.state.get(kind, id)
	var p hostedPage
	if ok {
		p = page(o)
	}
	s.mu.Unlock()
	if !ok {
		renderPage(w, http.StatusNotFound, missing)
		return
	}
	renderPage(w, http.StatusOK, p)
}

// answerPage runs a form's action as a change (events delivered after it)
// and renders the page it returns, or redirects to next when it names one.
func (s *Server) answerPage(w http.ResponseWriter, r *http.Request, action func() (p hostedPage, next string)) {
	var p hostedPage
	var next string
	s.change(func() { p, next = action() })
	if next != "" {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	renderPage(w, http.StatusOK, p)
}

func (s *Server) checkoutPage(cs obj, errMsg string) hostedPage {
	p := hostedPage{Title: "Subscribe", Error: errMsg, Lines: s.lineSummary(cs["id"].(string))}
	switch cs["status"] {
	case "open":
		p.Amount = money(toInt(cs["amount_total"]), cs["currency"])
		p.PayAction, p.PayLabel = "/_local/checkout/"+template.URLQueryEscaper(cs["id"].(string))+"/pay", "Subscribe and pay"
		if cs["payment_status"] == "no_payment_required" {
			p.Amount, p.PayLabel = "", "Start the trial"
		}
	case "complete":
		p.Message = "This Checkout Session is complete."
	default:
		p.Message = "This Checkout Session has expired."
	}
	return p
}

func (s *Server) invoicePage(inv obj, errMsg string) hostedPage {
	p := hostedPage{Title: "Invoice " + str(inv["number"]), Error: errMsg, Amount: money(toInt(inv["amount_remaining"]), inv["currency"])}
	switch inv["status"] {
	case "open":
		p.PayAction, p.PayLabel = "/_local/invoices/"+template.URLQueryEscaper(inv["id"].(string))+"/pay", "Pay"
		if pi, ok := s.state.get("payment_intent", str(inv["payment_intent"])); ok && pi["status"] == "requires_action" {
			p.PayAction = ""
			p.Message = "Your bank asks you to confirm this payment (3-D Secure)."
			p.AuthAction = "/_local/invoices/" + template.URLQueryEscaper(inv["id"].(string)) + "/authenticate"
		}
	case "paid":
		p.Amount, p.Message = "", "This invoice is paid."
	default:
		p.Amount, p.Message = "", "This invoice is "+str(inv["status"])+"."
	}
	return p
}

// payInvoicePage pays an open invoice with a test card, as Stripe's hosted
// invoice page does.
func (s *Server) payInvoicePage(id, token string) hostedPage {
	inv, ok := s.state.get("invoice", id)
	if !ok {
		return hostedPage{Title: "Invoice", Error: "No such invoice."}
	}
	if inv["status"] != "open" {
		return s.invoicePage(inv, "")
	}
	if _, known := testCards[token]; !known {
		return s.invoicePage(inv, "Choose one of the test cards.")
	}
	pm, aerr := s.paymentMethod(token, "payment_method")
	if aerr != nil {
		return s.invoicePage(inv, aerr.Message)
	}
	if c, ok := s.state.get("customer", str(inv["customer"])); ok && c["deleted"] != true {
		s.attach(pm, c)
	}
	pi := s.invoiceIntent(inv)
	outcome := s.charge(pi, inv, pm["id"].(string))
	if sub, ok := s.state.get("subscription", str(inv["subscription"])); ok {
		s.afterFirstAttempt(sub, inv, outcome)
	}
	if outcome == chargeFailed {
		return s.invoicePage(inv, "Your card was declined.")
	}
	return s.invoicePage(inv, "")
}
