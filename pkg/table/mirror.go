package table

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

const skSubscription = "SUBSCRIPTION"

// Item is one subscription item of the mirror: a plan tier or a metered
// instance type, by catalog key.
type Item struct {
	Key     string `dynamodbav:"key"`
	ItemID  string `dynamodbav:"item_id"`
	PriceID string `dynamodbav:"price_id"`
}

// Subscription is the mirror of an organization's current subscription and
// its latest invoice (what the design note calls StripeSubscription).
//
// SourceTime orders subscription snapshots and InvoiceTime invoice ones:
// each is the created time (unix seconds) of the Stripe event the stored
// state came from. Version counts the writes to the record.
type Subscription struct {
	OrgID               string    `dynamodbav:"org_id"`
	SubscriptionID      string    `dynamodbav:"subscription_id"`
	CustomerID          string    `dynamodbav:"customer_id"`
	Status              string    `dynamodbav:"status"`
	Tier                string    `dynamodbav:"tier"`
	Items               []Item    `dynamodbav:"items"`
	SubscriptionCreated int64     `dynamodbav:"subscription_created"`
	CurrentPeriodStart  int64     `dynamodbav:"current_period_start"`
	CurrentPeriodEnd    int64     `dynamodbav:"current_period_end"`
	RequestID           string    `dynamodbav:"request_id"` // the subscribe request that made it
	CancelAtPeriodEnd   bool      `dynamodbav:"cancel_at_period_end"`
	ScheduleID          string    `dynamodbav:"schedule_id"` // attached: a price migration's change at the period's end
	Trial                         // flattened into the item
	SourceTime          int64     `dynamodbav:"source_time"`
	InvoiceSubscription string    `dynamodbav:"invoice_subscription_id"`
	LatestInvoiceID     string    `dynamodbav:"latest_invoice_id"`
	LatestInvoiceStatus string    `dynamodbav:"latest_invoice_status"`
	InvoicePaymentFail  bool      `dynamodbav:"invoice_payment_failed"`
	Payment                       // the latest invoice's, flattened into the item
	InvoiceTime         int64     `dynamodbav:"invoice_time"`
	Version             int64     `dynamodbav:"version"`
	UpdatedAt           time.Time `dynamodbav:"updated_at"`
}

// Trial is a subscription's trial: when it ends (0 without one), whether
// the subscription has a payment method for when it does, and the client
// secret of the SetupIntent that saves one.
type Trial struct {
	End                 int64  `dynamodbav:"trial_end"`
	PaymentMethodOnFile bool   `dynamodbav:"payment_method_on_file"`
	SetupClientSecret   string `dynamodbav:"setup_client_secret"`
}

// Payment is what the latest invoice's payment waits for from the
// customer: the PaymentIntent's status (requires_payment_method,
// requires_action or processing; empty when it waits for nothing), its
// client secret for Stripe.js, and the hosted invoice page.
type Payment struct {
	Status           string `dynamodbav:"payment_status"`
	ClientSecret     string `dynamodbav:"payment_client_secret"`
	HostedInvoiceURL string `dynamodbav:"hosted_invoice_url"`
}

// Delinquent reports whether the organization's payments are failing: the
// subscription is past_due or unpaid, or its latest invoice failed.
func (s Subscription) Delinquent() bool {
	return s.Status == "past_due" || s.Status == "unpaid" ||
		(s.InvoicePaymentFail && s.InvoiceSubscription == s.SubscriptionID)
}

// Mirror is everything stored about one organization's billing.
type Mirror struct {
	Customer     *Customer     // nil when the org has no customer
	Subscription *Subscription // nil when it never subscribed
	Spend        Spend         // the zero Spend before any usage or cap
	// Terms are the catalog's, read with the mirror by ReadMirror and
	// ReadClaimed (nil from GetMirror, or before upsert-products stored
	// them). check_access reads all it needs with ReadMirror.
	Terms *Terms
}

// GetMirror reads an organization's customer and subscription in one
// request. An unknown organization is an empty Mirror, not an error.
func (s *Store) GetMirror(ctx context.Context, orgID string) (Mirror, error) {
	out, err := s.db.Query(ctx, &dynamodb.QueryInput{
		TableName:                 &s.name,
		KeyConditionExpression:    aws.String("pk = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": &types.AttributeValueMemberS{Value: orgPK(orgID)}},
		ConsistentRead:            aws.Bool(true),
	})
	if err != nil {
		return Mirror{}, fmt.Errorf("table.GetMirror %s: %w", orgID, translate(err))
	}
	var m Mirror
	for _, item := range out.Items {
		if err := m.add(item); err != nil {
			return Mirror{}, fmt.Errorf("table.GetMirror %s: %w", orgID, err)
		}
	}
	return m, nil
}

// add reads one of an organization's items into m.
func (m *Mirror) add(item map[string]types.AttributeValue) error {
	switch strAttr(item[AttrSK]) {
	case skCustomer:
		var c Customer
		if err := attributevalue.UnmarshalMap(item, &c); err != nil {
			return err
		}
		m.Customer = &c
	case skSubscription:
		var sub Subscription
		if err := attributevalue.UnmarshalMap(item, &sub); err != nil {
			return err
		}
		if sub.SubscriptionID != "" {
			m.Subscription = &sub
		}
	case skSpend:
		sp, err := spendOf(item)
		if err != nil {
			return err
		}
		m.Spend = sp
	}
	return nil
}
