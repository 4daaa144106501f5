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
// Result is stored. Attempt counts the invocations that began it, from 1; it
// goes up only when an attempt released it for a retry with new Stripe
// idempotency keys (ReleaseRequest with newKeys), so that every other
// retry replays Stripe's first answer.
type Request struct {
	Fingerprint string
	Done        bool
	Result      string // the answer to replay, once Done
	Attempt     int64
	// Retry says an earlier invocation began this request and did not
	// finish it: what it did in Stripe is unknown.
	Retry bool
}

var (
	// ErrRequestInProgress is returned when another invocation holds the
	// request_id's lease.
	ErrRequestInProgress = errors.New("table: request in progress")
	// ErrRequestMismatch is returned when the request_id was used with
	// other fields.
	ErrRequestMismatch = errors.New("table: request_id reused with other fields")
)

// BeginRequest claims requestID for a lease and returns it, with its
// attempt number. When the request was already finished with the same
// fingerprint it returns the stored Request (Done); with another
// fingerprint, ErrRequestMismatch; when another invocation holds the lease,
// ErrRequestInProgress. A lapsed lease (its invocation died) or a released
// one may be taken over.
func (s *Store) BeginRequest(ctx context.Context, requestID, fingerprint string, now time.Time, lease, keep time.Duration) (Request, error) {
	u := beginUpdate(s.name, requestID, fingerprint, now, lease, keep)
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: u.TableName, Key: u.Key, UpdateExpression: u.UpdateExpression, ConditionExpression: u.ConditionExpression,
		ExpressionAttributeValues:           u.ExpressionAttributeValues,
		ReturnValues:                        types.ReturnValueAllOld,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if err == nil {
		return Request{Fingerprint: fingerprint, Attempt: max(numAttr(out.Attributes["attempt"]), 1), Retry: len(out.Attributes) > 0}, nil
	}
	var failed *ConditionError
	if err = translate(err); !errors.As(err, &failed) {
		return Request{}, fmt.Errorf("table.BeginRequest %s: %w", requestID, err)
	}
	old := failed.Item
	if old == nil { // an older moto or DynamoDB without ALL_OLD: read it
		out, gerr := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.name, Key: u.Key, ConsistentRead: aws.Bool(true)})
		if gerr != nil {
			return Request{}, fmt.Errorf("table.BeginRequest %s: %w", requestID, translate(gerr))
		}
		old = out.Item
	}
	r, err := requestOf(old, fingerprint)
	if err != nil {
		return r, fmt.Errorf("table.BeginRequest %s: %w", requestID, err)
	}
	return r, nil
}

// beginUpdate takes requestID's lease: when it is new, or its invocation
// died (a lapsed or released lease) with the same fingerprint. begun
// counts the invocations that began it.
func beginUpdate(table, requestID, fingerprint string, now time.Time, lease, keep time.Duration) *types.Update {
	return &types.Update{
		TableName: &table, Key: key("REQ#"+requestID, "REQUEST"),
		UpdateExpression: aws.String("SET fingerprint = :fp, done = :false, lease_until = :lease, " +
			"expires_at = if_not_exists(expires_at, :expires), attempt = if_not_exists(attempt, :one) ADD begun :one"),
		ConditionExpression: aws.String("attribute_not_exists(pk) OR (done = :false AND fingerprint = :fp AND lease_until < :now)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":false": &types.AttributeValueMemberBOOL{Value: false},
			":fp": &types.AttributeValueMemberS{Value: fingerprint}, ":now": num(now.UnixMilli()),
			":lease": num(now.Add(lease).UnixMilli()), ":expires": num(now.Add(keep).Unix()), ":one": num(1)},
	}
}

// requestOf reads a request record that refused a begin: done with the
// same fingerprint (to replay), another fingerprint (ErrRequestMismatch) or
// held (ErrRequestInProgress).
func requestOf(old map[string]types.AttributeValue, fingerprint string) (Request, error) {
	r := Request{Fingerprint: strAttr(old["fingerprint"]), Result: strAttr(old["result"]), Attempt: numAttr(old["attempt"])}
	if b, ok := old["done"].(*types.AttributeValueMemberBOOL); ok {
		r.Done = b.Value
	}
	switch {
	case r.Fingerprint != fingerprint:
		return r, ErrRequestMismatch
	case !r.Done:
		return r, ErrRequestInProgress
	}
	return r, nil
}

// ErrClaimed is returned when another request holds the organization's
// subscribe claim.
var ErrClaimed = errors.New("table: another request holds the organization's claim")

// BeginClaimedRequest is BeginRequest and ClaimSubscribe in one
// transaction: the request_id and the organization's subscribe claim are
// taken together, or neither is. Its outcomes are BeginRequest's, and
// ErrClaimed when another request holds the claim (then the request is not
// begun, so a retry may begin it later). A transaction returns no values:
// on success the attempt and whether an earlier invocation began the
// request come with the next read (ReadClaimed).
func (s *Store) BeginClaimedRequest(ctx context.Context, requestID, fingerprint, orgID string, now time.Time, lease, keep time.Duration) (Request, error) {
	begin := beginUpdate(s.name, requestID, fingerprint, now, lease, keep)
	begin.ReturnValuesOnConditionCheckFailure = types.ReturnValuesOnConditionCheckFailureAllOld
	claim := claimPut(s.name, orgID, requestID, now, lease)
	_, err := s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{{Update: begin}, {Put: claim}}})
	var canceled *CanceledError
	switch err = translate(err); {
	case err == nil:
		return Request{Fingerprint: fingerprint}, nil
	case !errors.As(err, &canceled) || !errors.Is(err, ErrConditionFailed):
		return Request{}, fmt.Errorf("table.BeginClaimedRequest %s: %w", requestID, err)
	case canceled.ConditionFailedAt(0):
		r, err := requestOf(canceled.Items[0], fingerprint)
		if err != nil {
			return r, fmt.Errorf("table.BeginClaimedRequest %s: %w", requestID, err)
		}
		return r, nil
	}
	return Request{}, fmt.Errorf("table.BeginClaimedRequest %s: %w", requestID, ErrClaimed)
}

// FinishClaimedRequest is FinishRequest and ReleaseSubscribe in one
// transaction. When the claim is no longer this request's (its lease lapsed
// and another took it), it finishes the request alone.
func (s *Store) FinishClaimedRequest(ctx context.Context, requestID, orgID, result string) error {
	finish := finishUpdate(s.name, requestID, result)
	release := releaseDelete(s.name, orgID, requestID)
	_, err := s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{{Update: finish}, {Delete: release}}})
	var canceled *CanceledError
	if err = translate(err); errors.As(err, &canceled) && canceled.ConditionFailedAt(1) && !canceled.ConditionFailedAt(0) {
		return s.FinishRequest(ctx, requestID, result)
	}
	if err != nil {
		return fmt.Errorf("table.FinishClaimedRequest %s: %w", requestID, err)
	}
	return nil
}

// FinishRequest stores the answer to replay for requestID. A request
// record that is gone (expired) is not made again: it would have no TTL.
func (s *Store) FinishRequest(ctx context.Context, requestID, result string) error {
	u := finishUpdate(s.name, requestID, result)
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: u.TableName, Key: u.Key, UpdateExpression: u.UpdateExpression, ConditionExpression: u.ConditionExpression,
		ExpressionAttributeNames: u.ExpressionAttributeNames, ExpressionAttributeValues: u.ExpressionAttributeValues,
	})
	if err != nil {
		return fmt.Errorf("table.FinishRequest %s: %w", requestID, translate(err))
	}
	return nil
}

func finishUpdate(table, requestID, result string) *types.Update {
	return &types.Update{
		TableName: &table, Key: key("REQ#"+requestID, "REQUEST"),
		UpdateExpression:          aws.String("SET done = :true, #r = :r REMOVE lease_until"),
		ConditionExpression:       aws.String("attribute_exists(pk)"),
		ExpressionAttributeNames:  map[string]string{"#r": "result"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":true": &types.AttributeValueMemberBOOL{Value: true}, ":r": &types.AttributeValueMemberS{Value: result}},
	}
}

// ReleaseRequest lets a retry of an unfinished requestID begin at once.
// With newKeys the next attempt's number is one higher, and the caller uses
// new Stripe idempotency keys for it (Stripe replays a stored 5xx for a key
// for 24 hours).
func (s *Store) ReleaseRequest(ctx context.Context, requestID string, newKeys bool) error {
	expr := "SET lease_until = :zero"
	vals := map[string]types.AttributeValue{":false": &types.AttributeValueMemberBOOL{Value: false}, ":zero": num(0)}
	if newKeys {
		expr += " ADD attempt :one"
		vals[":one"] = num(1)
	}
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &s.name, Key: key("REQ#"+requestID, "REQUEST"),
		UpdateExpression:          aws.String(expr),
		ConditionExpression:       aws.String("done = :false"),
		ExpressionAttributeValues: vals,
	})
	if err != nil && !errors.Is(translate(err), ErrConditionFailed) {
		return fmt.Errorf("table.ReleaseRequest %s: %w", requestID, translate(err))
	}
	return nil
}
