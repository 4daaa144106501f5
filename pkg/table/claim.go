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
	k := key(orgPK(orgID), "SUBSCRIBE_CLAIM")
	_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: &s.name,
		Item: map[string]types.AttributeValue{AttrPK: k[AttrPK], AttrSK: k[AttrSK],
			"request_id": &types.AttributeValueMemberS{Value: requestID}, "lease_until": num(now.Add(lease).UnixMilli()),
			AttrExpiresAt: num(now.Add(24 * time.Hour).Unix())},
		ConditionExpression: aws.String("attribute_not_exists(pk) OR request_id = :rid OR lease_until < :now"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":rid": &types.AttributeValueMemberS{Value: requestID},
			":now": num(now.UnixMilli())},
	})
	if err != nil {
		return fmt.Errorf("table.ClaimSubscribe %s: %w", orgID, translate(err))
	}
	return nil
}

// ReleaseSubscribe drops requestID's claim, if it still holds it.
func (s *Store) ReleaseSubscribe(ctx context.Context, orgID, requestID string) error {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: &s.name, Key: key(orgPK(orgID), "SUBSCRIBE_CLAIM"),
		ConditionExpression:       aws.String("request_id = :rid"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":rid": &types.AttributeValueMemberS{Value: requestID}},
	})
	if err != nil && !errors.Is(translate(err), ErrConditionFailed) {
		return fmt.Errorf("table.ReleaseSubscribe %s: %w", orgID, translate(err))
	}
	return nil
}
