package table

import (
	"context"
	"fmt"
	"strconv"
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
	CurrentPeriodEnd    int64     `dynamodbav:"current_period_end"`
	CancelAtPeriodEnd   bool      `dynamodbav:"cancel_at_period_end"`
	SourceTime          int64     `dynamodbav:"source_time"`
	InvoiceSubscription string    `dynamodbav:"invoice_subscription_id"`
	LatestInvoiceID     string    `dynamodbav:"latest_invoice_id"`
	LatestInvoiceStatus string    `dynamodbav:"latest_invoice_status"`
	InvoicePaymentFail  bool      `dynamodbav:"invoice_payment_failed"`
	InvoiceTime         int64     `dynamodbav:"invoice_time"`
	Version             int64     `dynamodbav:"version"`
	UpdatedAt           time.Time `dynamodbav:"updated_at"`
}

// Delinquent reports whether the organization's payments are failing: the
// subscription is past_due or unpaid, or its latest invoice failed.
func (s Subscription) Delinquent() bool {
	return s.Status == "past_due" || s.Status == "unpaid" ||
		(s.InvoicePaymentFail && s.InvoiceSubscription == s.SubscriptionID)
}

type subscriptionItem struct {
	PK       string `dynamodbav:"pk"`
	SK       string `dynamodbav:"sk"`
	StripeID string `dynamodbav:"stripe_id,omitempty"`
	Subscription
}

func (s *Store) subscriptionPut(sub Subscription) (map[string]types.AttributeValue, error) {
	return attributevalue.MarshalMap(subscriptionItem{PK: orgPK(sub.OrgID), SK: skSubscription, StripeID: sub.SubscriptionID, Subscription: sub})
}

// GetSubscription returns the organization's subscription mirror, or
// ErrNotFound.
func (s *Store) GetSubscription(ctx context.Context, orgID string) (Subscription, error) {
	var it subscriptionItem
	if err := s.getItem(ctx, key(orgPK(orgID), skSubscription), &it); err != nil {
		return Subscription{}, fmt.Errorf("table.GetSubscription %s: %w", orgID, err)
	}
	return it.Subscription, nil
}

// SaveSubscription writes sub if the stored record is still at
// expectedVersion (0: no record yet), and stores it as expectedVersion+1.
// When another write came first it returns an error matching
// ErrConditionFailed and changes nothing. It returns the record as stored.
func (s *Store) SaveSubscription(ctx context.Context, sub Subscription, expectedVersion int64) (Subscription, error) {
	sub.Version = expectedVersion + 1
	item, err := s.subscriptionPut(sub)
	if err != nil {
		return Subscription{}, fmt.Errorf("table.SaveSubscription %s: %w", sub.OrgID, err)
	}
	in := &dynamodb.PutItemInput{TableName: &s.name, Item: item}
	if expectedVersion == 0 {
		in.ConditionExpression = aws.String("attribute_not_exists(pk)")
	} else {
		in.ConditionExpression = aws.String("version = :v")
		in.ExpressionAttributeValues = map[string]types.AttributeValue{":v": num(expectedVersion)}
	}
	if _, err := s.db.PutItem(ctx, in); err != nil {
		return Subscription{}, fmt.Errorf("table.SaveSubscription %s v%d: %w", sub.OrgID, expectedVersion, translate(err))
	}
	return sub, nil
}

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}
