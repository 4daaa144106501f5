package table

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Event records a processed Stripe webhook event. It is written in the same
// transaction as the change the event causes, never before, and expires
// (DynamoDB TTL) at ExpiresAt, which must be at least 30 days later.
type Event struct {
	EventID     string    `dynamodbav:"event_id"`
	Type        string    `dynamodbav:"type"`
	OrgID       string    `dynamodbav:"org_id,omitempty"`
	ProcessedAt time.Time `dynamodbav:"processed_at"`
	ExpiresAt   int64     `dynamodbav:"expires_at"`
}

// Change is one guarded change to the mirror. Exactly one field is set.
type Change struct {
	Subscription *SubscriptionSnapshot
	Invoice      *InvoiceSnapshot
	Customer     *CustomerSnapshot
	Drift        *Drift
}

// SubscriptionSnapshot is a subscription as Stripe showed it at SourceTime
// (the event's created time). It replaces the stored one only when it is
// strictly newer, or, for a different subscription, when that subscription
// was created later.
type SubscriptionSnapshot struct {
	OrgID, CustomerID, SubscriptionID, Status, Tier string
	Items                                           []Item
	Created, CurrentPeriodStart, CurrentPeriodEnd   int64
	CancelAtPeriodEnd                               bool
	ScheduleID                                      string
	Trial                                           Trial
	// RequestID is the subscribe request that made the subscription.
	RequestID  string
	SourceTime int64
}

// InvoiceSnapshot is the latest invoice state of an organization's
// subscription, ordered by its own SourceTime. An invoice made before the
// mirror's subscription began, of another subscription, is older news: it
// never replaces the current subscription's.
type InvoiceSnapshot struct {
	OrgID, SubscriptionID, InvoiceID, Status string
	PaymentFailed                            bool
	// Payment is what the invoice's payment waits for from the customer,
	// or empty when it waits for nothing.
	Payment    Payment
	Created    int64 // when the invoice was made
	SourceTime int64
}

// CustomerSnapshot is the organization's customer at SourceTime.
type CustomerSnapshot struct {
	OrgID, CustomerID string
	Deleted           bool
	SourceTime        int64
}

// Drift records a catalog object changed outside upsert-products.
type Drift struct {
	Key, ObjectID, EventType string
	At                       int64
}

var (
	// ErrDuplicateEvent is returned when the event was already recorded.
	ErrDuplicateEvent = errors.New("table: event already processed")
	// ErrStale is returned when the stored state is newer than the change.
	ErrStale = errors.New("table: stored state is newer")
	// ErrUnchanged is returned when the stored state says what the change
	// says, from the same second. It matches ErrStale too; an event that
	// meets it is recorded on its own (RecordEvent), so that a redelivery
	// after a newer same-second change is a duplicate, not a tie.
	ErrUnchanged = &unchangedError{}
)

type unchangedError struct{}

func (*unchangedError) Error() string        { return "table: stored state is the same, from the same second" }
func (*unchangedError) Is(target error) bool { return target == ErrStale }

// TieError is returned when the stored state has the same source time as
// the change (Stripe's one-second resolution): which is newer is unknown.
type TieError struct{ SourceTime int64 }

func (e *TieError) Error() string { return fmt.Sprintf("table: tie at source time %d", e.SourceTime) }

// ApplyEvent records ev and applies ch in one transaction, one request. The
// event is recorded only if the change is applied, so a failed event is
// never taken for processed, and concurrent deliveries of one event have one
// effect. With allowEqual a change whose source time equals the stored one
// applies (the caller re-fetched the object from Stripe).
//
// It returns ErrDuplicateEvent, ErrStale or a *TieError, and then writes
// nothing; ErrTransactionConflict or ErrUnavailable when it may be retried.
func (s *Store) ApplyEvent(ctx context.Context, ev Event, ch Change, allowEqual bool) error {
	evItem, err := eventItem(ev)
	if err != nil {
		return fmt.Errorf("table.ApplyEvent %s: %w", ev.EventID, err)
	}
	items := []types.TransactWriteItem{{Put: &types.Put{TableName: &s.name, Item: evItem, ConditionExpression: aws.String("attribute_not_exists(pk)")}}}
	upd, timeAttr, t := s.changeUpdate(ch, allowEqual, ev.ProcessedAt)
	if upd != nil {
		upd.ReturnValuesOnConditionCheckFailure = types.ReturnValuesOnConditionCheckFailureAllOld
		items = append(items, types.TransactWriteItem{Update: upd})
	}
	_, err = s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
	err = translate(err)
	var canceled *CanceledError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &canceled) && canceled.ConditionFailedAt(0):
		return fmt.Errorf("table.ApplyEvent %s: %w", ev.EventID, ErrDuplicateEvent)
	case errors.As(err, &canceled) && canceled.ConditionFailedAt(1):
		return fmt.Errorf("table.ApplyEvent %s: %w", ev.EventID, staleOrTie(ch, canceled.Items[1], timeAttr, t))
	}
	return fmt.Errorf("table.ApplyEvent %s: %w", ev.EventID, err)
}

// staleOrTie classifies a failed guard from the stored item: a tie when it
// has the same source time, is about the same object and says something
// else; stale otherwise. A same-second snapshot equal to the stored one
// carries nothing new (typically the webhook of subscribe's own change),
// so it needs no re-fetch.
func staleOrTie(ch Change, old map[string]types.AttributeValue, timeAttr string, t int64) error {
	switch {
	case old == nil || numAttr(old[timeAttr]) != t || !sameObject(ch, old):
		return ErrStale
	case sameState(ch, old):
		return ErrUnchanged
	}
	return &TieError{SourceTime: t}
}

// RecordEvent records ev alone, as processed: for an event whose change
// the store already held (ErrUnchanged). It returns ErrDuplicateEvent when
// the event is recorded already.
func (s *Store) RecordEvent(ctx context.Context, ev Event) error {
	item, err := eventItem(ev)
	if err != nil {
		return fmt.Errorf("table.RecordEvent %s: %w", ev.EventID, err)
	}
	_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.name, Item: item, ConditionExpression: aws.String("attribute_not_exists(pk)")})
	if err = translate(err); errors.Is(err, ErrConditionFailed) {
		return fmt.Errorf("table.RecordEvent %s: %w", ev.EventID, ErrDuplicateEvent)
	}
	if err != nil {
		return fmt.Errorf("table.RecordEvent %s: %w", ev.EventID, err)
	}
	return nil
}

func eventItem(ev Event) (map[string]types.AttributeValue, error) {
	return attributevalue.MarshalMap(struct {
		PK string `dynamodbav:"pk"`
		SK string `dynamodbav:"sk"`
		Event
	}{PK: "EVT#" + ev.EventID, SK: "EVENT", Event: ev})
}

// sameState reports whether the stored item already says what ch says.
func sameState(ch Change, old map[string]types.AttributeValue) bool {
	switch {
	case ch.Subscription != nil:
		var cur Subscription
		if attributevalue.UnmarshalMap(old, &cur) != nil {
			return false
		}
		c := ch.Subscription
		return cur.Status == c.Status && cur.Tier == c.Tier && cur.CurrentPeriodStart == c.CurrentPeriodStart && cur.CurrentPeriodEnd == c.CurrentPeriodEnd &&
			cur.CancelAtPeriodEnd == c.CancelAtPeriodEnd && cur.CustomerID == c.CustomerID && slices.Equal(cur.Items, c.Items) && cur.Trial == c.Trial &&
			cur.ScheduleID == c.ScheduleID
	case ch.Invoice != nil:
		var cur Subscription
		if attributevalue.UnmarshalMap(old, &cur) != nil {
			return false
		}
		c := ch.Invoice
		return cur.LatestInvoiceID == c.InvoiceID && cur.LatestInvoiceStatus == c.Status && cur.InvoicePaymentFail == c.PaymentFailed &&
			cur.Payment == c.Payment
	case ch.Customer != nil:
		b, _ := old["deleted"].(*types.AttributeValueMemberBOOL)
		return b != nil && b.Value == ch.Customer.Deleted
	}
	return false
}

// sameObject reports whether the stored item is about the same Stripe
// object as the change: only then is an equal time a tie.
func sameObject(ch Change, old map[string]types.AttributeValue) bool {
	switch {
	case ch.Subscription != nil:
		return strAttr(old["subscription_id"]) == ch.Subscription.SubscriptionID
	case ch.Customer != nil:
		return strAttr(old["customer_id"]) == ch.Customer.CustomerID
	}
	return true
}

// changeUpdate builds the guarded update for ch, and names the attribute
// and value that order it.
func (s *Store) changeUpdate(ch Change, allowEqual bool, now time.Time) (*types.Update, string, int64) {
	older := "<"
	if allowEqual {
		older = "<="
	}
	str := func(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
	boolean := func(v bool) types.AttributeValue { return &types.AttributeValueMemberBOOL{Value: v} }
	vals := map[string]types.AttributeValue{":now": str(now.UTC().Format(time.RFC3339Nano))}
	switch {
	case ch.Subscription != nil:
		c := ch.Subscription
		items, _ := attributevalue.Marshal(c.Items)
		if len(c.Items) == 0 {
			items = &types.AttributeValueMemberL{Value: []types.AttributeValue{}}
		}
		for k, v := range map[string]types.AttributeValue{
			":org": str(c.OrgID), ":cus": str(c.CustomerID), ":sid": str(c.SubscriptionID), ":status": str(c.Status),
			":tier": str(c.Tier), ":items": items, ":created": num(c.Created), ":cps": num(c.CurrentPeriodStart),
			":cpe": num(c.CurrentPeriodEnd), ":cape": boolean(c.CancelAtPeriodEnd), ":sched": str(c.ScheduleID), ":rid": str(c.RequestID), ":t": num(c.SourceTime),
			":tend": num(c.Trial.End), ":pmof": boolean(c.Trial.PaymentMethodOnFile), ":scs": str(c.Trial.SetupClientSecret),
		} {
			vals[k] = v
		}
		return &types.Update{
			TableName: &s.name, Key: key(orgPK(c.OrgID), skSubscription),
			UpdateExpression: aws.String("SET org_id = :org, customer_id = :cus, subscription_id = :sid, stripe_id = :sid, #status = :status, " +
				"tier = :tier, #items = :items, subscription_created = :created, current_period_start = :cps, current_period_end = :cpe, " +
				"cancel_at_period_end = :cape, schedule_id = :sched, trial_end = :tend, payment_method_on_file = :pmof, setup_client_secret = :scs, " +
				"request_id = :rid, source_time = :t, updated_at = :now ADD version :one"),
			ConditionExpression: aws.String("attribute_not_exists(subscription_id) OR (subscription_id = :sid AND (attribute_not_exists(source_time) OR source_time " + older + " :t)) " +
				"OR (subscription_id <> :sid AND subscription_created < :created)"),
			ExpressionAttributeNames:  map[string]string{"#status": "status", "#items": "items"},
			ExpressionAttributeValues: withOne(vals),
		}, "source_time", c.SourceTime
	case ch.Invoice != nil:
		c := ch.Invoice
		for k, v := range invoiceValues(c) {
			vals[k] = v
		}
		vals[":org"] = str(c.OrgID)
		return &types.Update{
			TableName: &s.name, Key: key(orgPK(c.OrgID), skSubscription),
			UpdateExpression:          aws.String("SET org_id = :org, " + invoiceSets + ", updated_at = :now ADD version :one"),
			ConditionExpression:       aws.String(invoiceGuard(older)),
			ExpressionAttributeValues: withOne(vals),
		}, "invoice_time", c.SourceTime
	case ch.Customer != nil:
		c := ch.Customer
		for k, v := range map[string]types.AttributeValue{
			":org": str(c.OrgID), ":cid": str(c.CustomerID), ":deleted": boolean(c.Deleted), ":t": num(c.SourceTime),
		} {
			vals[k] = v
		}
		return &types.Update{
			TableName: &s.name, Key: key(orgPK(c.OrgID), skCustomer),
			UpdateExpression: aws.String("SET org_id = :org, customer_id = :cid, stripe_id = :cid, deleted = :deleted, customer_time = :t, " +
				"created_at = if_not_exists(created_at, :now)"),
			ConditionExpression: aws.String("attribute_not_exists(customer_id) OR (customer_id = :cid AND " +
				"(attribute_not_exists(customer_time) OR customer_time " + older + " :t))"),
			ExpressionAttributeValues: vals,
		}, "customer_time", c.SourceTime
	case ch.Drift != nil:
		c := ch.Drift
		for k, v := range map[string]types.AttributeValue{":obj": str(c.ObjectID), ":type": str(c.EventType), ":at": num(c.At)} {
			vals[k] = v
		}
		return &types.Update{
			TableName: &s.name, Key: key(pkCatalog, "DRIFT#"+c.Key),
			UpdateExpression:          aws.String("SET object_id = :obj, event_type = :type, changed_at = :at, flagged_at = :now ADD times :one"),
			ExpressionAttributeValues: withOne(vals),
		}, "", 0
	}
	return nil, "", 0
}

// The invoice part of the subscription record: what an invoice snapshot
// sets, and its guard (newer than the stored invoice, and of the stored
// subscription or a later one). Its values are invoiceValues'.
const invoiceSets = "invoice_subscription_id = :isid, latest_invoice_id = :inv, latest_invoice_status = :istatus, " +
	"invoice_payment_failed = :failed, payment_status = :pst, payment_client_secret = :pcs, hosted_invoice_url = :hurl, invoice_time = :it"

func invoiceGuard(older string) string {
	return "(attribute_not_exists(invoice_time) OR invoice_time " + older + " :it) AND " +
		"(attribute_not_exists(subscription_id) OR subscription_id = :isid OR subscription_created <= :icreated)"
}

func invoiceValues(c *InvoiceSnapshot) map[string]types.AttributeValue {
	str := func(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
	return map[string]types.AttributeValue{
		":isid": str(c.SubscriptionID), ":inv": str(c.InvoiceID), ":istatus": str(c.Status),
		":failed": &types.AttributeValueMemberBOOL{Value: c.PaymentFailed}, ":icreated": num(c.Created), ":it": num(c.SourceTime),
		":pst": str(c.Payment.Status), ":pcs": str(c.Payment.ClientSecret), ":hurl": str(c.Payment.HostedInvoiceURL),
	}
}

func withOne(vals map[string]types.AttributeValue) map[string]types.AttributeValue {
	vals[":one"] = num(1)
	return vals
}

// ApplyChange applies a guarded mirror change that no webhook event caused
// (subscribe writing Stripe's answer). It returns ErrStale or a *TieError
// when the stored state is newer or as new (unless allowEqual). For a
// change of the subscription record (a subscription or invoice snapshot)
// it also returns the record as stored after the request, written or not,
// so that the caller needs no second read; otherwise nil.
func (s *Store) ApplyChange(ctx context.Context, ch Change, allowEqual bool, now time.Time) (*Subscription, error) {
	upd, timeAttr, t := s.changeUpdate(ch, allowEqual, now)
	if upd == nil {
		return nil, nil
	}
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: upd.TableName, Key: upd.Key, UpdateExpression: upd.UpdateExpression,
		ConditionExpression: upd.ConditionExpression, ExpressionAttributeNames: upd.ExpressionAttributeNames,
		ExpressionAttributeValues:           upd.ExpressionAttributeValues,
		ReturnValues:                        types.ReturnValueAllNew,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var failed *ConditionError
	switch err = translate(err); {
	case err == nil:
		return subscriptionRecord(ch, out.Attributes), nil
	case errors.As(err, &failed):
		return subscriptionRecord(ch, failed.Item), fmt.Errorf("table.ApplyChange: %w", staleOrTie(ch, failed.Item, timeAttr, t))
	}
	return nil, fmt.Errorf("table.ApplyChange: %w", err)
}

// ApplySubscriptionAnswer applies a subscription snapshot and, when inv is
// set, its latest invoice's, as subscribe writes Stripe's answer: in one
// UpdateItem whose condition is both guards. When either guard fails it
// applies them one at a time, as ApplyChange would, so that the part that
// is not stale still lands. It returns the record as stored after, like
// ApplyChange; ErrStale only when the subscription part was stale.
func (s *Store) ApplySubscriptionAnswer(ctx context.Context, sub *SubscriptionSnapshot, inv *InvoiceSnapshot, now time.Time) (*Subscription, error) {
	if inv == nil || inv.OrgID != sub.OrgID {
		return s.ApplyChange(ctx, Change{Subscription: sub}, true, now)
	}
	upd, _, _ := s.changeUpdate(Change{Subscription: sub}, true, now)
	vals := upd.ExpressionAttributeValues
	for k, v := range invoiceValues(inv) {
		vals[k] = v
	}
	expr := strings.Replace(*upd.UpdateExpression, " ADD version :one", ", "+invoiceSets+" ADD version :one", 1)
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: upd.TableName, Key: upd.Key, UpdateExpression: &expr,
		ConditionExpression:       aws.String("(" + *upd.ConditionExpression + ") AND (" + invoiceGuard("<=") + ")"),
		ExpressionAttributeNames:  upd.ExpressionAttributeNames,
		ExpressionAttributeValues: vals,
		ReturnValues:              types.ReturnValueAllNew,
	})
	var failed *ConditionError
	switch err = translate(err); {
	case err == nil:
		return subscriptionRecord(Change{Subscription: sub}, out.Attributes), nil
	case !errors.As(err, &failed):
		return nil, fmt.Errorf("table.ApplySubscriptionAnswer: %w", err)
	}
	// One guard failed: each part on its own.
	written, err := s.ApplyChange(ctx, Change{Subscription: sub}, true, now)
	if err != nil && !errors.Is(err, ErrStale) {
		return nil, err
	}
	after, ierr := s.ApplyChange(ctx, Change{Invoice: inv}, true, now)
	if ierr != nil && !errors.Is(ierr, ErrStale) {
		return nil, ierr
	}
	if after != nil {
		written = after
	}
	return written, err
}

// subscriptionRecord reads the subscription record item as stored, for a
// change of it; nil for other changes or no item.
func subscriptionRecord(ch Change, item map[string]types.AttributeValue) *Subscription {
	if (ch.Subscription == nil && ch.Invoice == nil) || item == nil {
		return nil
	}
	var sub Subscription
	if attributevalue.UnmarshalMap(item, &sub) != nil || sub.SubscriptionID == "" {
		return nil
	}
	return &sub
}
