package billing

import (
	"bytes"
	"encoding/json"

	"github.com/stripe/stripe-go/v76"
)

// The webhook decodes payloads into these small shapes, holding only what
// the mirror needs: stripe-go's full types cost several times the CPU
// (their custom unmarshalers re-scan nested objects, and Event also decodes
// the object into a map). Answers of Stripe's API keep stripe-go's types
// and are converted with the from* functions.

type wireEvent struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Created    int64  `json:"created"`
	APIVersion string `json:"api_version"`
	Livemode   bool   `json:"livemode"`
	Request    *struct {
		IdempotencyKey string `json:"idempotency_key"`
	} `json:"request"`
	Data *struct {
		Object json.RawMessage `json:"object"`
	} `json:"data"`
}

// wireRef is an expandable field: an ID, or an object with one.
type wireRef struct{ ID string }

func (r *wireRef) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &r.ID)
	}
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	var o struct {
		ID string `json:"id"`
	}
	err := json.Unmarshal(b, &o)
	r.ID = o.ID
	return err
}

type wireSubscription struct {
	ID                string            `json:"id"`
	Customer          wireRef           `json:"customer"`
	Status            string            `json:"status"`
	Created           int64             `json:"created"`
	CurrentPeriodEnd  int64             `json:"current_period_end"`
	CancelAtPeriodEnd bool              `json:"cancel_at_period_end"`
	Metadata          map[string]string `json:"metadata"`
	Items             struct {
		Data []wireItem `json:"data"`
	} `json:"items"`
}

type wireItem struct {
	ID    string `json:"id"`
	Price *struct {
		ID       string            `json:"id"`
		Metadata map[string]string `json:"metadata"`
	} `json:"price"`
}

func fromStripeSubscription(s *stripe.Subscription) wireSubscription {
	w := wireSubscription{ID: s.ID, Status: string(s.Status), Created: s.Created, CurrentPeriodEnd: s.CurrentPeriodEnd,
		CancelAtPeriodEnd: s.CancelAtPeriodEnd, Metadata: s.Metadata}
	if s.Customer != nil {
		w.Customer.ID = s.Customer.ID
	}
	if s.Items != nil {
		for _, it := range s.Items.Data {
			wi := wireItem{ID: it.ID}
			if it.Price != nil {
				wi.Price = &struct {
					ID       string            `json:"id"`
					Metadata map[string]string `json:"metadata"`
				}{ID: it.Price.ID, Metadata: it.Price.Metadata}
			}
			w.Items.Data = append(w.Items.Data, wi)
		}
	}
	return w
}

type wireInvoice struct {
	ID                  string  `json:"id"`
	Customer            wireRef `json:"customer"`
	Subscription        wireRef `json:"subscription"`
	Status              string  `json:"status"`
	AttemptCount        int64   `json:"attempt_count"`
	Paid                bool    `json:"paid"`
	SubscriptionDetails *struct {
		Metadata map[string]string `json:"metadata"`
	} `json:"subscription_details"`
}

func fromStripeInvoice(inv *stripe.Invoice) wireInvoice {
	w := wireInvoice{ID: inv.ID, Status: string(inv.Status), AttemptCount: inv.AttemptCount, Paid: inv.Paid}
	if inv.Customer != nil {
		w.Customer.ID = inv.Customer.ID
	}
	if inv.Subscription != nil {
		w.Subscription.ID = inv.Subscription.ID
	}
	if inv.SubscriptionDetails != nil {
		w.SubscriptionDetails = &struct {
			Metadata map[string]string `json:"metadata"`
		}{Metadata: inv.SubscriptionDetails.Metadata}
	}
	return w
}

type wireCustomer struct {
	ID       string            `json:"id"`
	Deleted  bool              `json:"deleted"`
	Metadata map[string]string `json:"metadata"`
}

type wireCheckoutSession struct {
	Customer     wireRef           `json:"customer"`
	Subscription wireRef           `json:"subscription"`
	Metadata     map[string]string `json:"metadata"`
}
