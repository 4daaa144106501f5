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

const skCustomer = "CUSTOMER"

// Customer maps an organization to its Stripe customer, one to one. It holds
// no personal data: the email and name live in Stripe only.
type Customer struct {
	OrgID      string    `dynamodbav:"org_id"`
	CustomerID string    `dynamodbav:"customer_id"`
	Deleted    bool      `dynamodbav:"deleted"`
	CreatedAt  time.Time `dynamodbav:"created_at"`
	// Checkout is the organization's latest Checkout session: at most one
	// may be open, or a customer could pay for two subscriptions.
	Checkout CheckoutRef `dynamodbav:"checkout,omitempty"`
}

// CheckoutRef names a Checkout session and the request that opened it.
type CheckoutRef struct {
	SessionID string `dynamodbav:"session_id"`
	RequestID string `dynamodbav:"request_id"`
}

type customerItem struct {
	PK       string `dynamodbav:"pk"`
	SK       string `dynamodbav:"sk"`
	StripeID string `dynamodbav:"stripe_id,omitempty"`
	Customer
}

// CreateCustomer stores the organization's customer mapping once. When the
// organization already has one it returns an error matching
// ErrConditionFailed and leaves the stored mapping unchanged.
func (s *Store) CreateCustomer(ctx context.Context, c Customer) error {
	item, err := attributevalue.MarshalMap(customerItem{PK: orgPK(c.OrgID), SK: skCustomer, StripeID: c.CustomerID, Customer: c})
	if err != nil {
		return fmt.Errorf("table.CreateCustomer %s: %w", c.OrgID, err)
	}
	_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:           &s.name,
		Item:                item,
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	})
	if err != nil {
		return fmt.Errorf("table.CreateCustomer %s: %w", c.OrgID, translate(err))
	}
	return nil
}

// GetCustomer returns the organization's customer mapping, or ErrNotFound.
func (s *Store) GetCustomer(ctx context.Context, orgID string) (Customer, error) {
	var it customerItem
	if err := s.getItem(ctx, key(orgPK(orgID), skCustomer), &it); err != nil {
		return Customer{}, fmt.Errorf("table.GetCustomer %s: %w", orgID, err)
	}
	return it.Customer, nil
}

// OrgForStripeID returns the organization that owns a Stripe object (a
// customer or subscription ID), through the by_stripe_id index, or
// ErrNotFound. The index is eventually consistent: a mapping written an
// instant ago may not be visible yet.
func (s *Store) OrgForStripeID(ctx context.Context, stripeID string) (string, error) {
	out, err := s.db.Query(ctx, &dynamodb.QueryInput{
		TableName:                 &s.name,
		IndexName:                 aws.String(IndexStripeID),
		KeyConditionExpression:    aws.String("stripe_id = :id"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":id": &types.AttributeValueMemberS{Value: stripeID}},
		ProjectionExpression:      aws.String("org_id"),
		Limit:                     aws.Int32(1),
	})
	if err != nil {
		return "", fmt.Errorf("table.OrgForStripeID %s: %w", stripeID, translate(err))
	}
	if len(out.Items) == 0 {
		return "", fmt.Errorf("table.OrgForStripeID %s: %w", stripeID, ErrNotFound)
	}
	var it struct {
		OrgID string `dynamodbav:"org_id"`
	}
	if err := attributevalue.UnmarshalMap(out.Items[0], &it); err != nil {
		return "", fmt.Errorf("table.OrgForStripeID %s: %w", stripeID, err)
	}
	return it.OrgID, nil
}

// SetCheckout records the organization's latest Checkout session on its
// customer mapping, which must exist.
func (s *Store) SetCheckout(ctx context.Context, orgID string, ref CheckoutRef) error {
	av, err := attributevalue.Marshal(ref)
	if err != nil {
		return fmt.Errorf("table.SetCheckout %s: %w", orgID, err)
	}
	_, err = s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &s.name, Key: key(orgPK(orgID), skCustomer),
		UpdateExpression:          aws.String("SET checkout = :ref"),
		ConditionExpression:       aws.String("attribute_exists(pk)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":ref": av},
	})
	if err != nil {
		return fmt.Errorf("table.SetCheckout %s: %w", orgID, translate(err))
	}
	return nil
}
