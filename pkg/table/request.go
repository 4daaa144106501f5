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

// Request is a caller's request_id and what became of it: in progress until
// Result is stored.
type Request struct {
	Fingerprint string
	Done        bool
	Result      string // the answer to replay, once Done
}

var (
	// ErrRequestInProgress is returned when another invocation holds the
	// request_id's lease.
	ErrRequestInProgress = errors.New("table: request in progress")
	// ErrRequestMismatch is returned when the request_id was used with
	// other fields.
	ErrRequestMismatch = errors.New("table: request_id reused with other fields")
)

// BeginRequest claims requestID for a lease. When the request was already
// finished with the same fingerprint it returns the stored Request (Done);
// with another fingerprint, ErrRequestMismatch; when another invocation
// holds the lease, ErrRequestInProgress.
func (s *Store) BeginRequest(ctx context.Context, requestID, fingerprint string, now time.Time, lease, keep time.Duration) (Request, error) {
	k := key("REQ#"+requestID, "REQUEST")
	item := map[string]types.AttributeValue{
		AttrPK: k[AttrPK], AttrSK: k[AttrSK],
		"fingerprint": &types.AttributeValueMemberS{Value: fingerprint}, "done": &types.AttributeValueMemberBOOL{Value: false},
		"lease_until": num(now.Add(lease).UnixMilli()), AttrExpiresAt: num(now.Add(keep).Unix()),
	}
	_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: &s.name, Item: item,
		// A lapsed lease of the same request may be taken over: its
		// invocation died.
		ConditionExpression: aws.String("attribute_not_exists(pk) OR (done = :false AND fingerprint = :fp AND lease_until < :now)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":false": &types.AttributeValueMemberBOOL{Value: false},
			":fp": &types.AttributeValueMemberS{Value: fingerprint}, ":now": num(now.UnixMilli())},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if err == nil {
		return Request{Fingerprint: fingerprint}, nil
	}
	var failed *ConditionError
	if err = translate(err); !errors.As(err, &failed) {
		return Request{}, fmt.Errorf("table.BeginRequest %s: %w", requestID, err)
	}
	old := failed.Item
	if old == nil { // an older moto or DynamoDB without ALL_OLD: read it
		out, gerr := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.name, Key: k, ConsistentRead: aws.Bool(true)})
		if gerr != nil {
			return Request{}, fmt.Errorf("table.BeginRequest %s: %w", requestID, translate(gerr))
		}
		old = out.Item
	}
	r := Request{Fingerprint: strAttr(old["fingerprint"]), Result: strAttr(old["result"])}
	if b, ok := old["done"].(*types.AttributeValueMemberBOOL); ok {
		r.Done = b.Value
	}
	switch {
	case r.Fingerprint != fingerprint:
		return r, fmt.Errorf("table.BeginRequest %s: %w", requestID, ErrRequestMismatch)
	case !r.Done:
		return r, fmt.Errorf("table.BeginRequest %s: %w", requestID, ErrRequestInProgress)
	}
	return r, nil
}

// FinishRequest stores the answer to replay for requestID.
func (s *Store) FinishRequest(ctx context.Context, requestID, result string) error {
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &s.name, Key: key("REQ#"+requestID, "REQUEST"),
		UpdateExpression:          aws.String("SET done = :true, #r = :r REMOVE lease_until"),
		ExpressionAttributeNames:  map[string]string{"#r": "result"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":true": &types.AttributeValueMemberBOOL{Value: true}, ":r": &types.AttributeValueMemberS{Value: result}},
	})
	if err != nil {
		return fmt.Errorf("table.FinishRequest %s: %w", requestID, translate(err))
	}
	return nil
}

// AbandonRequest forgets an unfinished requestID, so that a retry runs it
// again (its Stripe calls replay through their idempotency keys).
func (s *Store) AbandonRequest(ctx context.Context, requestID string) error {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: &s.name, Key: key("REQ#"+requestID, "REQUEST"),
		ConditionExpression:       aws.String("done = :false"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":false": &types.AttributeValueMemberBOOL{Value: false}},
	})
	if err != nil && !errors.Is(translate(err), ErrConditionFailed) {
		return fmt.Errorf("table.AbandonRequest %s: %w", requestID, translate(err))
	}
	return nil
}
