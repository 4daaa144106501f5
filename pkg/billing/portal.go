package billing

import (
	"context"
	"errors"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/baseten/billing-functions/pkg/table"
)

// The customer portal, per deployment. The account's default portal
// configuration is shared by every deployment on the account (and in test
// mode it may never have been saved), so upsert-products makes this
// deployment's own configuration, records it in the table, and
// create_portal_session names it.

// portalConfiguration is what this deployment's portal lets a customer do:
// update the payment method and see the invoices. Plan changes and
// cancellation go through subscribe, which keeps the mirror and its rules;
// the portal offers neither.
func portalConfiguration(ns string) *stripe.BillingPortalConfigurationParams {
	p := &stripe.BillingPortalConfigurationParams{
		BusinessProfile: &stripe.BillingPortalConfigurationBusinessProfileParams{Headline: stripe.String("Payment methods and invoices")},
		Features: &stripe.BillingPortalConfigurationFeaturesParams{
			InvoiceHistory:      &stripe.BillingPortalConfigurationFeaturesInvoiceHistoryParams{Enabled: stripe.Bool(true)},
			PaymentMethodUpdate: &stripe.BillingPortalConfigurationFeaturesPaymentMethodUpdateParams{Enabled: stripe.Bool(true)},
			CustomerUpdate:      &stripe.BillingPortalConfigurationFeaturesCustomerUpdateParams{Enabled: stripe.Bool(false)},
			SubscriptionCancel:  &stripe.BillingPortalConfigurationFeaturesSubscriptionCancelParams{Enabled: stripe.Bool(false)},
		},
	}
	p.Metadata = map[string]string{metaNamespace: ns}
	return p
}

// ensurePortal brings the deployment's portal configuration in line with
// portalConfiguration: made on the first run, updated (and reactivated)
// when what it should say changed or someone deactivated it, left alone
// otherwise (one request to see it). gen is upsert-products' key
// generation.
func (s *Service) ensurePortal(ctx context.Context, api *stripeAPI, gen int64) (string, error) {
	stored, err := s.store.GetPortalConfiguration(ctx)
	if err != nil && !errors.Is(err, table.ErrNotFound) {
		return "", fromTable("read the portal configuration", err)
	}
	want := portalConfiguration(s.cfg.Namespace)
	hash := keyHash(formOf(want))
	if stored.ID != "" && stored.Hash == hash {
		// As wanted, unless someone deactivated it by hand since.
		cfg, err := api.BillingPortalConfigurations.Get(stored.ID, &stripe.BillingPortalConfigurationParams{Params: stripe.Params{Context: ctx}})
		if err != nil || cfg.Active {
			return stored.ID, err
		}
	}
	var cfg *stripe.BillingPortalConfiguration
	if stored.ID != "" {
		want.Active = stripe.Bool(true)
		want.Context = ctx
		want.SetIdempotencyKey(keyHash(s.cfg.Namespace, "portal configuration", stored.ID, hash, stripeInt(gen)))
		cfg, err = api.BillingPortalConfigurations.Update(stored.ID, want)
	} else {
		want.Context = ctx
		want.SetIdempotencyKey(keyHash(s.cfg.Namespace, "portal configuration", hash, stripeInt(gen)))
		cfg, err = api.BillingPortalConfigurations.New(want)
	}
	if err != nil {
		return "", err
	}
	if err := s.store.PutPortalConfiguration(ctx, table.PortalConfiguration{ID: cfg.ID, Hash: hash, UpdatedAt: time.Now().UTC()}); err != nil {
		return "", fromTable("record the portal configuration", err)
	}
	return cfg.ID, nil
}

// portalAction is the create_portal_session action.
func (s *Service) portalAction(ctx context.Context, cmd Command) (any, error) {
	url, err := s.portal(ctx, cmd)
	return map[string]string{"url": url}, err
}

// portal makes a portal session for the organization's customer with the
// deployment's configuration. Before upsert-products made one there is no
// portal: the account's default configuration may not exist, and belongs
// to every deployment on the account.
func (s *Service) portal(ctx context.Context, cmd Command) (string, error) {
	customer, err := s.customerOf(ctx, cmd.OrgID)
	if err != nil {
		return "", err
	}
	cfg, err := s.store.GetPortalConfiguration(ctx)
	switch {
	case errors.Is(err, table.ErrNotFound):
		return "", Errorf(CodeInvalidRequest, "this deployment has no customer portal configuration yet: run upsert-products")
	case err != nil:
		return "", fromTable("read the portal configuration", err)
	}
	var session *stripe.BillingPortalSession
	err = s.withStripe(ctx, "create portal session", func(api *stripeAPI) error {
		p := &stripe.BillingPortalSessionParams{Customer: stripe.String(customer), ReturnURL: stripe.String(cmd.ReturnURL),
			Configuration: stripe.String(cfg.ID)}
		p.Context = ctx
		var err error
		session, err = api.BillingPortalSessions.New(p)
		return err
	})
	if err != nil {
		return "", err
	}
	return session.URL, nil
}
