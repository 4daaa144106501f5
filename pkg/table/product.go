package table

import (
	"context"
	"fmt"
	"maps"
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
// included, in one query (a catalog holds at most 100 entries). The
// catalog's other records (drift flags) are not read.
func (s *Store) ListProductMappings(ctx context.Context) ([]ProductMapping, error) {
	var out []ProductMapping
	in := &dynamodb.QueryInput{
		TableName:              &s.name,
		KeyConditionExpression: aws.String("pk = :pk AND begins_with(sk, :product)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": &types.AttributeValueMemberS{Value: pkCatalog},
			":product": &types.AttributeValueMemberS{Value: skProduct}},
		ConsistentRead: aws.Bool(true),
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
	item, err := attributevalue.MarshalMap(productItem{PK: pkCatalog, SK: skProduct + m.Key, StripeID: m.ProductID, ProductMapping: m})
	if err != nil {
		return fmt.Errorf("table.PutProductMapping %s: %w", m.Key, err)
	}
	if _, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.name, Item: item}); err != nil {
		return fmt.Errorf("table.PutProductMapping %s: %w", m.Key, translate(err))
	}
	return nil
}

const skProduct = "PRODUCT#"

func productKey(catalogKey string) map[string]types.AttributeValue {
	return key(pkCatalog, skProduct+catalogKey)
}

// CatalogKeys returns the generation of upsert-products' Stripe
// idempotency keys: 0 until a run met an answer Stripe stores under a key
// (a 5xx), which a run with the same keys would only meet again.
func (s *Store) CatalogKeys(ctx context.Context) (int64, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.name, Key: key(pkCatalog, "KEYS"), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return 0, fmt.Errorf("table.CatalogKeys: %w", translate(err))
	}
	return max(numAttr(out.Item["generation"]), 0), nil
}

// NextCatalogKeys moves upsert-products to a new generation of keys.
func (s *Store) NextCatalogKeys(ctx context.Context) error {
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &s.name, Key: key(pkCatalog, "KEYS"),
		UpdateExpression:          aws.String("ADD generation :one"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":one": num(1)},
	})
	if err != nil {
		return fmt.Errorf("table.NextCatalogKeys: %w", translate(err))
	}
	return nil
}

// PortalConfiguration is this deployment's customer portal configuration
// in Stripe: upsert-products makes it and keeps it as Hash says, and
// create_portal_session names it, so that a portal never depends on the
// account's default configuration, which other deployments share.
type PortalConfiguration struct {
	ID        string    `dynamodbav:"configuration_id"`
	Hash      string    `dynamodbav:"hash"`
	UpdatedAt time.Time `dynamodbav:"updated_at"`
}

const skPortal = "PORTAL"

// GetPortalConfiguration returns the deployment's portal configuration, or
// ErrNotFound before upsert-products made one.
func (s *Store) GetPortalConfiguration(ctx context.Context) (PortalConfiguration, error) {
	var c PortalConfiguration
	if err := s.getItem(ctx, key(pkCatalog, skPortal), &c); err != nil {
		return PortalConfiguration{}, fmt.Errorf("table.GetPortalConfiguration: %w", err)
	}
	return c, nil
}

// PutPortalConfiguration records the deployment's portal configuration;
// upsert-products is its only writer.
func (s *Store) PutPortalConfiguration(ctx context.Context, c PortalConfiguration) error {
	if err := s.putCatalogItem(ctx, skPortal, c); err != nil {
		return fmt.Errorf("table.PutPortalConfiguration: %w", err)
	}
	return nil
}

// putCatalogItem writes v whole as the catalog partition's item sk.
func (s *Store) putCatalogItem(ctx context.Context, sk string, v any) error {
	item, err := attributevalue.MarshalMap(v)
	if err != nil {
		return err
	}
	maps.Copy(item, key(pkCatalog, sk))
	_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.name, Item: item})
	return translate(err)
}
