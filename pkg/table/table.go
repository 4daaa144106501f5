// Package table stores the billing mappings in one DynamoDB table: which
// Stripe customer, subscription, items and products belong to which
// organization and catalog entry, and which webhook events were processed.
//
// It knows DynamoDB, not Stripe's SDK: records hold plain IDs and values.
// Every conditional write reports a failed condition as ErrConditionFailed
// (or ErrTransactionConflict), translated in one place, translate.
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

// Attribute names of the table's keys, index and TTL. template.yaml declares
// the same names; TestTemplate_TableMatchesSchema keeps the two in step.
const (
	AttrPK        = "pk"
	AttrSK        = "sk"
	AttrStripeID  = "stripe_id"  // partition key of IndexStripeID
	AttrExpiresAt = "expires_at" // TTL, epoch seconds
	IndexStripeID = "by_stripe_id"
)

// DB is the part of the DynamoDB client the store uses.
type DB interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
	TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
	BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
	BatchWriteItem(ctx context.Context, in *dynamodb.BatchWriteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error)
}

var _ DB = (*dynamodb.Client)(nil)

// Store reads and writes the mappings of one table.
type Store struct {
	db   DB
	name string
}

// New returns a Store over the named table. It makes no request.
func New(db DB, tableName string) *Store {
	return &Store{db: db, name: tableName}
}

// Name returns the table's name.
func (s *Store) Name() string { return s.name }

// CreateTable creates a table with the schema template.yaml deploys
// (PAY_PER_REQUEST, the by_stripe_id index and TTL on expires_at), unless it
// exists, and waits until it is active. Tests and `make dev` use it;
// deployments use the template.
func CreateTable(ctx context.Context, db *dynamodb.Client, name string) error {
	str := types.ScalarAttributeTypeS
	_, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:   &name,
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(AttrPK), AttributeType: str},
			{AttributeName: aws.String(AttrSK), AttributeType: str},
			{AttributeName: aws.String(AttrStripeID), AttributeType: str},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(AttrPK), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(AttrSK), KeyType: types.KeyTypeRange},
		},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{
			IndexName:  aws.String(IndexStripeID),
			KeySchema:  []types.KeySchemaElement{{AttributeName: aws.String(AttrStripeID), KeyType: types.KeyTypeHash}},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		}},
	})
	if err = translate(err); err != nil && !errors.Is(err, ErrTableExists) { // an earlier attempt whose answer was lost made it
		return fmt.Errorf("table.CreateTable %s: %w", name, err)
	}
	waiter := dynamodb.NewTableExistsWaiter(db)
	if err := waiter.Wait(ctx, &dynamodb.DescribeTableInput{TableName: &name}, time.Minute); err != nil {
		return fmt.Errorf("table.CreateTable %s: wait: %w", name, err)
	}
	_, err = db.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName:               &name,
		TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String(AttrExpiresAt), Enabled: aws.Bool(true)},
	})
	if err != nil {
		return fmt.Errorf("table.CreateTable %s: ttl: %w", name, translate(err))
	}
	return nil
}

func key(pk, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		AttrPK: &types.AttributeValueMemberS{Value: pk},
		AttrSK: &types.AttributeValueMemberS{Value: sk},
	}
}

func orgPK(orgID string) string { return "ORG#" + orgID }

// getItem reads one item, strongly consistent, into v. It returns
// ErrNotFound when there is none.
func (s *Store) getItem(ctx context.Context, k map[string]types.AttributeValue, v any) error {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.name, Key: k, ConsistentRead: aws.Bool(true)})
	if err != nil {
		return translate(err)
	}
	if out.Item == nil {
		return ErrNotFound
	}
	return attributevalue.UnmarshalMap(out.Item, v)
}

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func numAttr(v types.AttributeValue) int64 {
	n, ok := v.(*types.AttributeValueMemberN)
	if !ok {
		return -1
	}
	i, _ := strconv.ParseInt(n.Value, 10, 64)
	return i
}

func strAttr(v types.AttributeValue) string {
	s, _ := v.(*types.AttributeValueMemberS)
	if s == nil {
		return ""
	}
	return s.Value
}
