package table

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// ClaimSubscribe gives one invocation at a time the right to create the
// organization's subscription. A claim lapses after lease; the same
// request may re-claim at once. It returns ErrConditionFailed when another
// request holds it.
func (s *Store) ClaimSubscribe(ctx context.Context, orgID, requestID string, now time.Time, lease time.Duration) error {
	p := claimPut(s.name, orgID, requestID, now, lease)
	_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: p.TableName, Item: p.Item, ConditionExpression: p.ConditionExpression,
		ExpressionAttributeValues: p.ExpressionAttributeValues})
	if err != nil {
		return fmt.Errorf("table.ClaimSubscribe %s: %w", orgID, translate(err))
	}
	return nil
}

// claimPut takes the organization's subscribe claim for requestID: when
// nobody holds it, this request does already, or the holder's lease lapsed.
func claimPut(table, orgID, requestID string, now time.Time, lease time.Duration) *types.Put {
	k := key(orgPK(orgID), "SUBSCRIBE_CLAIM")
	return &types.Put{
		TableName: &table,
		Item: map[string]types.AttributeValue{AttrPK: k[AttrPK], AttrSK: k[AttrSK],
			"request_id": &types.AttributeValueMemberS{Value: requestID}, "lease_until": num(now.Add(lease).UnixMilli()),
			AttrExpiresAt: num(now.Add(24 * time.Hour).Unix())},
		ConditionExpression: aws.String("attribute_not_exists(pk) OR request_id = :rid OR lease_until < :now"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":rid": &types.AttributeValueMemberS{Value: requestID},
			":now": num(now.UnixMilli())},
	}
}

// ReleaseSubscribe drops requestID's claim, if it still holds it.
func (s *Store) ReleaseSubscribe(ctx context.Context, orgID, requestID string) error {
	d := releaseDelete(s.name, orgID, requestID)
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: d.TableName, Key: d.Key, ConditionExpression: d.ConditionExpression,
		ExpressionAttributeValues: d.ExpressionAttributeValues})
	if err != nil && !errors.Is(translate(err), ErrConditionFailed) {
		return fmt.Errorf("table.ReleaseSubscribe %s: %w", orgID, translate(err))
	}
	return nil
}

// releaseDelete ends requestID's claim of the organization, if it holds it.
func releaseDelete(table, orgID, requestID string) *types.Delete {
	return &types.Delete{
		TableName: &table, Key: key(orgPK(orgID), "SUBSCRIBE_CLAIM"),
		ConditionExpression:       aws.String("request_id = :rid"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":rid": &types.AttributeValueMemberS{Value: requestID}},
	}
}
