package table

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

const pkPass = "PASS"

// The kinds of pass, each the sort key of its one item.
const (
	PassReconcile     = "RECONCILE"
	PassMigratePrices = "MIGRATE_PRICES"
)

// Phases of a pass, in order (a price migration reads subscriptions only).
const (
	PhaseCustomers     = "customers"
	PhaseSubscriptions = "subscriptions"
	PhaseDone          = "done"
)

// Pass is the one pass of a kind of this deployment (a reconcile, a price
// migration): where it stands (its phase and the search page it reads
// next) and what it has counted so far. A pass runs as steps, one per
// invocation; a step holds the pass's lease (Owner until LeaseUntil) so
// that no two run at once, and moves the cursor and the counts in one
// conditional write, after a page is done. A step killed mid-page moved
// nothing: the next one takes that page again, and each page is counted
// once.
type Pass struct {
	PassID    string `dynamodbav:"pass_id"`
	Phase     string `dynamodbav:"phase"`
	Page      string `dynamodbav:"page"` // the search's next_page token; "" is the phase's first page
	StartedAt int64  `dynamodbav:"started_at"`
	EndedAt   int64  `dynamodbav:"ended_at"`

	Owner      string `dynamodbav:"owner"`
	LeaseUntil int64  `dynamodbav:"lease_until"` // unix milliseconds

	Progress
}

// Progress is what a pass (or one of its steps) compared and found. A
// price migration counts the items on an old price as Differences and the
// items it moved as Repaired.
type Progress struct {
	Customers        int64 `dynamodbav:"customers" json:"customers"`
	Subscriptions    int64 `dynamodbav:"subscriptions" json:"subscriptions"`
	Differences      int64 `dynamodbav:"differences" json:"differences"`
	Repaired         int64 `dynamodbav:"repaired" json:"repaired"`
	StripeRequests   int64 `dynamodbav:"stripe_requests" json:"stripe_requests"`
	DynamoDBRequests int64 `dynamodbav:"dynamodb_requests" json:"dynamodb_requests"`
	Steps            int64 `dynamodbav:"steps" json:"steps"`
}

// Add sums two progresses.
func (p Progress) Add(o Progress) Progress {
	return Progress{Customers: p.Customers + o.Customers, Subscriptions: p.Subscriptions + o.Subscriptions,
		Differences: p.Differences + o.Differences, Repaired: p.Repaired + o.Repaired,
		StripeRequests: p.StripeRequests + o.StripeRequests, DynamoDBRequests: p.DynamoDBRequests + o.DynamoDBRequests,
		Steps: p.Steps + o.Steps}
}

// Running reports whether the pass has begun and not ended.
func (p Pass) Running() bool { return p.Phase != "" && p.Phase != PhaseDone }

// ErrPassBusy is TakePass's answer while another step holds the lease.
var ErrPassBusy = errors.New("table: another step holds the pass")

// TakePass takes the lease of the pass of kind for owner until now+lease
// and returns the pass as stored (the zero pass before the first one). It
// fails with ErrPassBusy while another owner's lease runs.
func (s *Store) TakePass(ctx context.Context, kind, owner string, now time.Time, lease time.Duration) (Pass, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                &s.name,
		Key:                      key(pkPass, kind),
		UpdateExpression:         aws.String("SET #owner = :owner, lease_until = :until"),
		ConditionExpression:      aws.String("attribute_not_exists(pk) OR lease_until < :now OR #owner = :owner"),
		ExpressionAttributeNames: map[string]string{"#owner": "owner"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":owner": &types.AttributeValueMemberS{Value: owner},
			":until": num(now.Add(lease).UnixMilli()), ":now": num(now.UnixMilli())},
		ReturnValues: types.ReturnValueAllNew,
	})
	if err != nil {
		err = translate(err)
		if errors.Is(err, ErrConditionFailed) {
			return Pass{}, ErrPassBusy
		}
		return Pass{}, fmt.Errorf("table.TakePass %s: %w", kind, err)
	}
	var p Pass
	if err := attributevalue.UnmarshalMap(out.Attributes, &p); err != nil {
		return Pass{}, fmt.Errorf("table.TakePass %s: %w", kind, err)
	}
	return p, nil
}

// SavePass stores next in place of prev, the pass of kind as its step
// holds it: the write fails with ErrPassBusy when the pass moved or its
// lease passed to another step meanwhile, so that a page is never counted
// twice.
func (s *Store) SavePass(ctx context.Context, kind string, prev, next Pass) error {
	item, err := attributevalue.MarshalMap(next)
	if err != nil {
		return fmt.Errorf("table.SavePass %s: %w", kind, err)
	}
	maps.Copy(item, key(pkPass, kind))
	cond := "#owner = :owner AND pass_id = :pass AND phase = :phase AND page = :page"
	vals := map[string]types.AttributeValue{":owner": &types.AttributeValueMemberS{Value: prev.Owner},
		":pass": &types.AttributeValueMemberS{Value: prev.PassID}, ":phase": &types.AttributeValueMemberS{Value: prev.Phase},
		":page": &types.AttributeValueMemberS{Value: prev.Page}}
	if prev.PassID == "" { // the first pass of the table
		cond, vals = "#owner = :owner AND attribute_not_exists(pass_id)", map[string]types.AttributeValue{":owner": vals[":owner"]}
	}
	_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 &s.name,
		Item:                      item,
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  map[string]string{"#owner": "owner"},
		ExpressionAttributeValues: vals,
	})
	if err != nil {
		err = translate(err)
		if errors.Is(err, ErrConditionFailed) {
			return ErrPassBusy
		}
		return fmt.Errorf("table.SavePass %s: %w", kind, err)
	}
	return nil
}

// ReadMirrors reads the mirrors of orgs (customer, subscription and spend)
// with batched, strongly consistent reads: about one request per 33
// organizations. It also returns the number of requests sent.
func (s *Store) ReadMirrors(ctx context.Context, orgs []string) (map[string]Mirror, int, error) {
	return s.readMirrors(ctx, orgs, skCustomer, skSubscription, skSpend)
}

// ReadCustomerMirrors is ReadMirrors of the customer mappings alone: one
// request per 100 organizations.
func (s *Store) ReadCustomerMirrors(ctx context.Context, orgs []string) (map[string]Mirror, int, error) {
	return s.readMirrors(ctx, orgs, skCustomer)
}

func (s *Store) readMirrors(ctx context.Context, orgs []string, sks ...string) (map[string]Mirror, int, error) {
	keys := make([]map[string]types.AttributeValue, 0, len(sks)*len(orgs))
	seen := map[string]bool{}
	for _, org := range orgs {
		if !seen[org] {
			seen[org] = true
			for _, sk := range sks {
				keys = append(keys, key(orgPK(org), sk))
			}
		}
	}
	items, sent, err := s.batchGet(ctx, keys)
	if err != nil {
		return nil, sent, fmt.Errorf("table.ReadMirrors: %w", err)
	}
	mirrors := make(map[string]Mirror, len(orgs))
	for _, item := range items {
		org := strings.TrimPrefix(strAttr(item[AttrPK]), orgPK(""))
		m := mirrors[org]
		if err := m.add(item); err != nil {
			return nil, sent, fmt.Errorf("table.ReadMirrors %s: %w", org, err)
		}
		mirrors[org] = m
	}
	return mirrors, sent, nil
}
