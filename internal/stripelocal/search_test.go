package stripelocal_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
)

func searchCustomers(e *env, query string, limit int64, page string) ([]string, *stripe.SearchMeta, error) {
	p := &stripe.CustomerSearchParams{SearchParams: stripe.SearchParams{Query: query, Limit: stripe.Int64(limit), Single: true}}
	if page != "" {
		p.Page = stripe.String(page)
	}
	it := e.sc.Customers.Search(p)
	var ids []string
	for it.Next() {
		ids = append(ids, it.Customer().Metadata["org_id"])
	}
	if it.Err() != nil {
		return nil, nil, it.Err()
	}
	return ids, &it.CustomerSearchResult().SearchMeta, nil
}

// FIDELITY.md rule 17: the clause forms, AND and OR, pages chained by
// next_page, newest first, and what Stripe refuses.
func TestSearch_QueryFormsPagesAndRefusals(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		ns := "ours"
		if i%2 == 1 {
			ns = "theirs"
		}
		if _, err := e.sc.Customers.New(&stripe.CustomerParams{Email: stripe.String(fmt.Sprintf("c%d@example.com", i)),
			Metadata: map[string]string{"org_id": fmt.Sprintf("org_%d", i), "billing_namespace": ns}}); err != nil {
			t.Fatal(err)
		}
	}
	gone, _ := e.sc.Customers.New(&stripe.CustomerParams{Metadata: map[string]string{"org_id": "org_gone", "billing_namespace": "ours"}})
	if _, err := e.sc.Customers.Del(gone.ID, nil); err != nil {
		t.Fatal(err)
	}

	// Pages of two, newest first, chained by next_page; the deleted
	// customer and the other namespace's are not in them.
	var all []string
	page := ""
	for n := 0; ; n++ {
		ids, meta, err := searchCustomers(e, "metadata['billing_namespace']:'ours'", 2, page)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ids...)
		if !meta.HasMore {
			if meta.NextPage != nil || n != 1 {
				t.Fatalf("last page %d: next_page %v", n, meta.NextPage)
			}
			break
		}
		page = *meta.NextPage
	}
	if fmt.Sprint(all) != "[org_4 org_2 org_0]" {
		t.Fatalf("pages gave %v, want [org_4 org_2 org_0]", all)
	}
	// Metadata matches whole values, case-insensitively; OR and negation.
	for query, want := range map[string]string{
		`metadata["billing_namespace"]:"OURS"`:                                 "[org_4 org_2 org_0]",
		`metadata['org_id']:'org_1' OR metadata['org_id']:'org_4'`:             "[org_4 org_1]",
		`metadata['billing_namespace']:'ours' AND -metadata['org_id']:'org_2'`: "[org_4 org_0]",
		`metadata['billing_namespace']:'our'`:                                  "[]",
		`email:'c3@example.com'`:                                               "[org_3]",
		`created>0 AND metadata['billing_namespace']:'theirs'`:                 "[org_3 org_1]",
	} {
		ids, _, err := searchCustomers(e, query, 10, "")
		if err != nil || fmt.Sprint(ids) != want && !(want == "[]" && ids == nil) {
			t.Errorf("%s: %v %v, want %s", query, ids, err, want)
		}
	}
	// What Stripe refuses.
	for _, bad := range []struct {
		query string
		limit int64
		page  string
	}{
		{query: "metadata['a']:'1' AND metadata['b']:'2' OR metadata['c']:'3'", limit: 10}, // AND and OR mixed
		{query: "metadata['a']:'1'" + repeat(" OR metadata['a']:'1'", 10), limit: 10},      // 11 clauses
		{query: "status:'active'", limit: 10},                                              // not a customer field
		{query: "email>'a'", limit: 10},                                                    // comparison on a string
		{query: "metadata['a']:'1'", limit: 101},                                           // limit
		{query: "metadata['billing_namespace']:'theirs'", limit: 2, page: page},            // another query's token
	} {
		if _, _, err := searchCustomers(e, bad.query, bad.limit, bad.page); !isInvalid(err) {
			t.Errorf("%q limit %d page %q: %v, want a 400", bad.query, bad.limit, bad.page, err)
		}
	}

	// Subscriptions are searched in every status, by status too.
	c := mustCustomer(t, e)
	sub, err := e.sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String(c.ID), Metadata: map[string]string{"billing_namespace": "ours"},
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String(mustCatalog(t, e).business.ID)}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sc.Subscriptions.Cancel(sub.ID, nil); err != nil {
		t.Fatal(err)
	}
	p := &stripe.SubscriptionSearchParams{SearchParams: stripe.SearchParams{Query: "metadata['billing_namespace']:'ours' AND status:'canceled'"}}
	p.AddExpand("data.latest_invoice")
	it := e.sc.Subscriptions.Search(p)
	if !it.Next() || it.Subscription().ID != sub.ID || it.Subscription().LatestInvoice == nil || it.Subscription().LatestInvoice.Object != "invoice" || it.Next() {
		t.Fatalf("the canceled subscription by status, its invoice expanded: %v", it.Err())
	}
}

// FIDELITY.md rule 17: Stripe's index lags writes; SetSearchLag hides what
// was created within the lag, and shows what was deleted within it.
func TestSearch_LagHidesNewObjects(t *testing.T) {
	e := newEnv(t)
	if _, err := e.sc.Customers.New(&stripe.CustomerParams{Metadata: map[string]string{"org_id": "org_a", "billing_namespace": "ours"}}); err != nil {
		t.Fatal(err)
	}
	e.srv.SetSearchLag(time.Minute)
	if ids, _, err := searchCustomers(e, "metadata['billing_namespace']:'ours'", 10, ""); err != nil || len(ids) != 0 {
		t.Fatalf("under a minute's lag, a customer made now: %v %v", ids, err)
	}
	e.srv.Advance(61 * time.Second)
	if ids, _, err := searchCustomers(e, "metadata['billing_namespace']:'ours'", 10, ""); err != nil || fmt.Sprint(ids) != "[org_a]" {
		t.Fatalf("a minute later: %v %v", ids, err)
	}
	// A customer deleted now is still found, as a live one, until the
	// index catches up.
	it := e.sc.Customers.Search(&stripe.CustomerSearchParams{SearchParams: stripe.SearchParams{Query: "metadata['org_id']:'org_a'"}})
	if !it.Next() {
		t.Fatal(it.Err())
	}
	if _, err := e.sc.Customers.Del(it.Customer().ID, nil); err != nil {
		t.Fatal(err)
	}
	it = e.sc.Customers.Search(&stripe.CustomerSearchParams{SearchParams: stripe.SearchParams{Query: "metadata['org_id']:'org_a'"}})
	if !it.Next() || it.Customer().Deleted {
		t.Fatalf("just deleted, under the lag: want it found as live (%v)", it.Err())
	}
	e.srv.Advance(61 * time.Second)
	if ids, _, err := searchCustomers(e, "metadata['org_id']:'org_a'", 10, ""); err != nil || len(ids) != 0 {
		t.Fatalf("deleted a minute ago: %v %v", ids, err)
	}
}

func repeat(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

func isInvalid(err error) bool {
	var se *stripe.Error
	return errors.As(err, &se) && se.HTTPStatusCode == 400
}
