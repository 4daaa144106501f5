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

const pkCatalog = "CATALOG"

// ProductMapping is what the design note calls StripeProduct: for one
// catalog key, the Stripe product, its current price and, for an instance
// type, its billing meter. subscribe and webhook read prices from here,
// never from Stripe. Hash is the catalog entry's content hash the Stripe
// objects were last brought in line with.
type ProductMapping struct {
	Key            string    `dynamodbav:"key"`
	Kind           string    `dynamodbav:"kind"`
	ProductID      string    `dynamodbav:"product_id"`
	PriceID        string    `dynamodbav:"price_id"`
	MeterID        string    `dynamodbav:"meter_id,omitempty"`
	MeterEventName string    `dynamodbav:"meter_event_name,omitempty"`
	Hash           string    `dynamodbav:"hash"`
	Active         bool      `dynamodbav:"active"`
	UpdatedAt      time.Time `dynamodbav:"updated_at"`
}

// Same reports whether two mappings say the same thing, ignoring when they
// were written.
func (m ProductMapping) Same(o ProductMapping) bool {
	m.UpdatedAt, o.UpdatedAt = time.Time{}, time.Time{}
	return m == o
}

type productItem struct {
	PK       string `dynamodbav:"pk"`
	SK       string `dynamodbav:"sk"`
	StripeID string `dynamodbav:"stripe_id,omitempty"`
	ProductMapping
}

// ListProductMappings returns every product mapping, archived ones
// included, in one query (a catalog holds at most 100 entries).
func (s *Store) ListProductMappings(ctx context.Context) ([]ProductMapping, error) {
	var out []ProductMapping
	in := &dynamodb.QueryInput{
		TableName:                 &s.name,
		KeyConditionExpression:    aws.String("pk = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": &types.AttributeValueMemberS{Value: pkCatalog}},
		ConsistentRead:            aws.Bool(true),
	}
	for {
		page, err := s.db.Query(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("table.ListProductMappings: %w", translate(err))
		}
		for _, item := range page.Items {
			var it productItem
			if err := attributevalue.UnmarshalMap(item, &it); err != nil {
				return nil, fmt.Errorf("table.ListProductMappings: %w", err)
			}
			out = append(out, it.ProductMapping)
		}
		if page.LastEvaluatedKey == nil {
			return out, nil
		}
		in.ExclusiveStartKey = page.LastEvaluatedKey
	}
}

// GetProductMapping returns the mapping of one catalog key, or ErrNotFound.
func (s *Store) GetProductMapping(ctx context.Context, key string) (ProductMapping, error) {
	var it productItem
	if err := s.getItem(ctx, productKey(key), &it); err != nil {
		return ProductMapping{}, fmt.Errorf("table.GetProductMapping %s: %w", key, err)
	}
	return it.ProductMapping, nil
}

// PutProductMapping writes the mapping of one catalog key. upsert-products
// is its only writer and writes only after Stripe succeeded.
func (s *Store) PutProductMapping(ctx context.Context, m ProductMapping) error {
	item, err := attributevalue.MarshalMap(productItem{PK: pkCatalog, SK: "PRODUCT#" + m.Key, StripeID: m.ProductID, ProductMapping: m})
	if err != nil {
		return fmt.Errorf("table.PutProductMapping %s: %w", m.Key, err)
	}
	if _, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.name, Item: item}); err != nil {
		return fmt.Errorf("table.PutProductMapping %s: %w", m.Key, translate(err))
	}
	return nil
}

func productKey(catalogKey string) map[string]types.AttributeValue {
	return key(pkCatalog, "PRODUCT#"+catalogKey)
}
