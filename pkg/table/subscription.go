package table

import (
	"context"
	"errors"
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

// Subscription is the mirror of an organization's current subscription.
//
// SourceTime orders snapshots: it is the Stripe event's created time (unix
// seconds) of the snapshot stored. Version counts the writes to the record and
// guards read-modify-write updates.
type Subscription struct {
	OrgID               string    `dynamodbav:"org_id"`
	SubscriptionID      string    `dynamodbav:"subscription_id"`
	CustomerID          string    `dynamodbav:"customer_id"`
	Status              string    `dynamodbav:"status"`
	Tier                string    `dynamodbav:"tier"`
	Items               []Item    `dynamodbav:"items"`
	CurrentPeriodEnd    int64     `dynamodbav:"current_period_end"`
	CancelAtPeriodEnd   bool      `dynamodbav:"cancel_at_period_end"`
	LatestInvoiceStatus string    `dynamodbav:"latest_invoice_status"`
	Delinquent          bool      `dynamodbav:"delinquent"`
	SourceTime          int64     `dynamodbav:"source_time"`
	Version             int64     `dynamodbav:"version"`
	UpdatedAt           time.Time `dynamodbav:"updated_at"`
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
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.name, Key: key(orgPK(orgID), skSubscription), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return Subscription{}, fmt.Errorf("table.GetSubscription %s: %w", orgID, translate(err))
	}
	if out.Item == nil {
		return Subscription{}, fmt.Errorf("table.GetSubscription %s: %w", orgID, ErrNotFound)
	}
	var it subscriptionItem
	if err := attributevalue.UnmarshalMap(out.Item, &it); err != nil {
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

// Event records a processed Stripe webhook event. It expires (DynamoDB TTL)
// at ExpiresAt, which must be at least 30 days later, longer than Stripe
// retries a delivery.
type Event struct {
	EventID     string    `dynamodbav:"event_id"`
	Type        string    `dynamodbav:"type"`
	ProcessedAt time.Time `dynamodbav:"processed_at"`
	ExpiresAt   int64     `dynamodbav:"expires_at"`
}

var (
	// ErrDuplicateEvent is returned when the event was already recorded.
	ErrDuplicateEvent = errors.New("table: event already processed")
	// ErrStaleSnapshot is returned when the stored snapshot is as new as, or
	// newer than, the one offered.
	ErrStaleSnapshot = errors.New("table: stored snapshot is not older")
)

// ApplySubscriptionEvent stores sub and records ev in one transaction: the
// event is recorded only if the snapshot is written, so an event whose write
// failed is never taken for processed. The snapshot is written only when its
// SourceTime is strictly newer than the stored one.
//
// It returns an error matching ErrDuplicateEvent when ev was already
// recorded, ErrStaleSnapshot when the stored snapshot is not older, and in
// both cases writes nothing. Both also match ErrConditionFailed.
func (s *Store) ApplySubscriptionEvent(ctx context.Context, sub Subscription, ev Event) (Subscription, error) {
	subItem, err := s.subscriptionPut(sub)
	if err != nil {
		return Subscription{}, fmt.Errorf("table.ApplySubscriptionEvent %s: %w", ev.EventID, err)
	}
	evItem, err := attributevalue.MarshalMap(struct {
		PK string `dynamodbav:"pk"`
		SK string `dynamodbav:"sk"`
		Event
	}{PK: "EVT#" + ev.EventID, SK: "EVENT", Event: ev})
	if err != nil {
		return Subscription{}, fmt.Errorf("table.ApplySubscriptionEvent %s: %w", ev.EventID, err)
	}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{Put: &types.Put{TableName: &s.name, Item: evItem, ConditionExpression: aws.String("attribute_not_exists(pk)")}},
		{Put: &types.Put{
			TableName:                 &s.name,
			Item:                      subItem,
			ConditionExpression:       aws.String("attribute_not_exists(pk) OR source_time < :t"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":t": num(sub.SourceTime)},
		}},
	}})
	if err != nil {
		err = translate(err)
		var ce *CanceledError
		if errors.As(err, &ce) {
			switch {
			case ce.ConditionFailedAt(0):
				err = fmt.Errorf("%w: %w", ErrDuplicateEvent, err)
			case ce.ConditionFailedAt(1):
				err = fmt.Errorf("%w: %w", ErrStaleSnapshot, err)
			}
		}
		return Subscription{}, fmt.Errorf("table.ApplySubscriptionEvent %s: %w", ev.EventID, err)
	}
	return sub, nil
}

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}
