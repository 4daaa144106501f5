package table

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Terms are what the catalog entitles, as upsert-products last stored
// them: per tier, the instance types it includes and its default spend cap,
// and each instance type's price per minute in the currency's minor unit.
type Terms struct {
	Currency string               `dynamodbav:"currency"`
	Tiers    map[string]TierTerms `dynamodbav:"tiers"`
	Prices   map[string]string    `dynamodbav:"prices"`
}

// TierTerms are one tier's entitlements. SpendCap is 0 without a default
// cap.
type TierTerms struct {
	Includes []string `dynamodbav:"includes"`
	SpendCap int64    `dynamodbav:"spend_cap"`
}

// Same reports whether two Terms say the same thing.
func (t Terms) Same(o Terms) bool {
	return t.Currency == o.Currency && maps.Equal(t.Prices, o.Prices) &&
		maps.EqualFunc(t.Tiers, o.Tiers, func(a, b TierTerms) bool {
			return a.SpendCap == b.SpendCap && slices.Equal(a.Includes, b.Includes)
		})
}

const skTerms = "TERMS"

// GetTerms returns the stored Terms, or ErrNotFound before upsert-products
// stored any.
func (s *Store) GetTerms(ctx context.Context) (Terms, error) {
	var t Terms
	if err := s.getItem(ctx, key(pkCatalog, skTerms), &t); err != nil {
		return Terms{}, fmt.Errorf("table.GetTerms: %w", err)
	}
	return t, nil
}

// PutTerms stores the catalog's Terms; upsert-products is their only
// writer.
func (s *Store) PutTerms(ctx context.Context, t Terms) error {
	item, err := attributevalue.MarshalMap(t)
	if err != nil {
		return fmt.Errorf("table.PutTerms: %w", err)
	}
	maps.Copy(item, key(pkCatalog, skTerms))
	if _, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.name, Item: item}); err != nil {
		return fmt.Errorf("table.PutTerms: %w", translate(err))
	}
	return nil
}

const skSpend = "SPEND"

// Spend is an organization's metered spend in its current billing period,
// and its own spend cap. Amount is a decimal number of the currency's
// minor unit, exact (DynamoDB numbers keep 38 digits). Alerts holds, per
// threshold crossed this period ("50", "80", "100"), when the write that
// crossed it was made: one write crosses each threshold, decided by
// Version. TierCap is the tier's default cap as the last usage write saw
// it. Cap is the organization's own cap (0 without one), kept across
// periods.
type Spend struct {
	PeriodStart int64            `dynamodbav:"period_start"`
	PeriodEnd   int64            `dynamodbav:"period_end"`
	Amount      string           `dynamodbav:"amount"`
	Currency    string           `dynamodbav:"currency"`
	Cap         int64            `dynamodbav:"cap"`
	TierCap     int64            `dynamodbav:"tier_cap"`
	Alerts      map[string]int64 `dynamodbav:"alerts"`
	// AlertsSent holds, per threshold, when its alert was sent (logged and
	// put on the bus): one in Alerts and not here is pending.
	AlertsSent map[string]int64 `dynamodbav:"alerts_sent"`
	Version    int64            `dynamodbav:"version"` // 0: no record yet
}

// spendItem reads a Spend, its amount from a number.
func spendOf(item map[string]types.AttributeValue) (Spend, error) {
	var sp Spend
	if n, ok := item["amount"].(*types.AttributeValueMemberN); ok {
		item = maps.Clone(item)
		item["amount"] = &types.AttributeValueMemberS{Value: n.Value}
	}
	if err := attributevalue.UnmarshalMap(item, &sp); err != nil {
		return Spend{}, err
	}
	return sp, nil
}

// Access is what check_access reads: the organization's subscription (nil
// without one), its spend and the catalog's Terms.
type Access struct {
	Subscription *Subscription
	Spend        Spend
	Terms        Terms
}

// ReadAccess reads an organization's subscription and spend, and the
// catalog's Terms, in one BatchGetItem.
func (s *Store) ReadAccess(ctx context.Context, orgID string) (Access, error) {
	items, _, err := s.batchGet(ctx, []map[string]types.AttributeValue{
		key(orgPK(orgID), skSubscription), key(orgPK(orgID), skSpend), key(pkCatalog, skTerms)})
	if err != nil {
		return Access{}, fmt.Errorf("table.ReadAccess %s: %w", orgID, err)
	}
	var a Access
	for _, item := range items {
		if err := a.add(item); err != nil {
			return Access{}, fmt.Errorf("table.ReadAccess %s: %w", orgID, err)
		}
	}
	return a, nil
}

func (a *Access) add(item map[string]types.AttributeValue) error {
	var err error
	switch strAttr(item[AttrSK]) {
	case skSubscription:
		var sub Subscription
		if err = attributevalue.UnmarshalMap(item, &sub); err == nil && sub.SubscriptionID != "" {
			a.Subscription = &sub
		}
	case skSpend:
		a.Spend, err = spendOf(item)
	case skTerms:
		err = attributevalue.UnmarshalMap(item, &a.Terms)
	}
	return err
}

// SetSpendCap sets the organization's own spend cap (0 removes it, so that
// the tier's default applies). It moves Version, so that a usage write
// that read the old cap decides its alerts again.
func (s *Store) SetSpendCap(ctx context.Context, orgID string, capAmount int64) (Spend, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &s.name, Key: key(orgPK(orgID), skSpend),
		UpdateExpression:          aws.String("SET #cap = :cap ADD version :one"),
		ExpressionAttributeNames:  map[string]string{"#cap": "cap"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":cap": num(capAmount), ":one": num(1)},
		ReturnValues:              types.ReturnValueAllNew,
	})
	if err != nil {
		return Spend{}, fmt.Errorf("table.SetSpendCap %s: %w", orgID, translate(err))
	}
	sp, err := spendOf(out.Attributes)
	if err != nil {
		return Spend{}, fmt.Errorf("table.SetSpendCap %s: %w", orgID, err)
	}
	return sp, nil
}

// GetSpend reads an organization's spend record (Version 0 without one).
func (s *Store) GetSpend(ctx context.Context, orgID string) (Spend, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.name, Key: key(orgPK(orgID), skSpend), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return Spend{}, fmt.Errorf("table.GetSpend %s: %w", orgID, translate(err))
	}
	if out.Item == nil {
		return Spend{}, nil
	}
	sp, err := spendOf(out.Item)
	if err != nil {
		return Spend{}, fmt.Errorf("table.GetSpend %s: %w", orgID, err)
	}
	return sp, nil
}

// UsageWrite is one organization's part of a usage transaction: the
// answers of its records and, when they add spend, its spend record as it
// becomes (To), written only if it is still at From.Version.
type UsageWrite struct {
	OrgID   string
	Records []FinishedRequest
	From    Spend
	To      *Spend
}

// MaxUsageActions is the most actions a DynamoDB transaction takes.
const MaxUsageActions = 100

// Actions is how many actions w takes in a transaction.
func (w UsageWrite) Actions() int {
	if w.To != nil {
		return len(w.Records) + 1
	}
	return len(w.Records)
}

// UsageConflict says which parts of a canceled usage transaction failed
// their condition: records another invocation stored first (by request
// ID), and organizations whose spend record moved.
type UsageConflict struct {
	StoredBefore map[string]bool
	SpendMoved   map[string]bool
	// Spends holds the spend records that moved, as stored, when DynamoDB
	// returned them with the cancellation.
	Spends map[string]Spend
}

// WriteUsage writes the parts, at most MaxUsageActions actions from
// different organizations, in one transaction: each record's answer,
// unless one is stored already, and each spend record, if still at the
// version read. All of it is written, or none. A failed condition returns
// the UsageConflict and ErrConditionFailed; other errors as translate says.
func (s *Store) WriteUsage(ctx context.Context, parts []UsageWrite, now time.Time, keep time.Duration) (UsageConflict, error) {
	var actions []types.TransactWriteItem
	type at struct {
		org, request string
	}
	var index []at
	for _, w := range parts {
		for _, r := range w.Records {
			item := key("REQ#"+r.RequestID, "REQUEST")
			item["fingerprint"] = &types.AttributeValueMemberS{Value: r.Fingerprint}
			item["done"] = &types.AttributeValueMemberBOOL{Value: true}
			item["result"] = &types.AttributeValueMemberS{Value: r.Result}
			item["attempt"] = num(1)
			item[AttrExpiresAt] = num(now.Add(keep).Unix())
			actions = append(actions, types.TransactWriteItem{Put: &types.Put{TableName: &s.name, Item: item,
				ConditionExpression:       aws.String("attribute_not_exists(#done) OR #done = :false"),
				ExpressionAttributeNames:  map[string]string{"#done": "done"},
				ExpressionAttributeValues: map[string]types.AttributeValue{":false": &types.AttributeValueMemberBOOL{Value: false}},
			}})
			index = append(index, at{request: r.RequestID})
		}
		if w.To != nil {
			actions = append(actions, types.TransactWriteItem{Update: spendUpdate(s.name, w.OrgID, w.From.Version, *w.To)})
			index = append(index, at{org: w.OrgID})
		}
	}
	if len(actions) == 0 {
		return UsageConflict{}, nil
	}
	_, err := s.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: actions})
	err = translate(err)
	conflict := UsageConflict{StoredBefore: map[string]bool{}, SpendMoved: map[string]bool{}, Spends: map[string]Spend{}}
	if ce, ok := err.(*CanceledError); ok { //nolint:errorlint // translate returns it bare
		for i, a := range index {
			if !ce.ConditionFailedAt(i) {
				continue
			}
			if a.org != "" {
				conflict.SpendMoved[a.org] = true
				if item := ce.Items[i]; item != nil {
					if sp, err := spendOf(item); err == nil {
						conflict.Spends[a.org] = sp
					}
				}
			} else {
				conflict.StoredBefore[a.request] = true
			}
		}
	}
	if err != nil {
		return conflict, fmt.Errorf("table.WriteUsage: %w", err)
	}
	return conflict, nil
}

// spendUpdate writes the spend record to, on condition that it is still at
// version from (absent for 0). The organization's own cap is left as it
// is.
func spendUpdate(tableName, orgID string, from int64, to Spend) *types.Update {
	alerts, sent := map[string]types.AttributeValue{}, map[string]types.AttributeValue{}
	for t, at := range to.Alerts {
		alerts[t] = num(at)
	}
	for t, at := range to.AlertsSent {
		sent[t] = num(at)
	}
	cond := "version = :from"
	values := map[string]types.AttributeValue{
		":ps": num(to.PeriodStart), ":pe": num(to.PeriodEnd), ":amount": &types.AttributeValueMemberN{Value: to.Amount},
		":cur": &types.AttributeValueMemberS{Value: to.Currency}, ":tc": num(to.TierCap), ":alerts": &types.AttributeValueMemberM{Value: alerts},
		":sent": &types.AttributeValueMemberM{Value: sent},
		":to":   num(from + 1), ":from": num(from),
	}
	if from == 0 {
		cond = "attribute_not_exists(version)"
		delete(values, ":from")
	}
	return &types.Update{TableName: &tableName, Key: key(orgPK(orgID), skSpend),
		UpdateExpression:                    aws.String("SET period_start = :ps, period_end = :pe, amount = :amount, currency = :cur, tier_cap = :tc, alerts = :alerts, alerts_sent = :sent, version = :to"),
		ConditionExpression:                 aws.String(cond),
		ExpressionAttributeValues:           values,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
}

// MarkAlertSent records that the alert of a threshold was sent, unless the
// spend record has moved to another period. It moves Version, so that a
// usage write that read the record before cannot write the mark away.
func (s *Store) MarkAlertSent(ctx context.Context, orgID string, periodStart int64, threshold string, at time.Time) error {
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &s.name, Key: key(orgPK(orgID), skSpend),
		UpdateExpression:          aws.String("SET alerts_sent.#t = :at ADD version :one"),
		ConditionExpression:       aws.String("period_start = :ps AND attribute_exists(alerts_sent)"),
		ExpressionAttributeNames:  map[string]string{"#t": threshold},
		ExpressionAttributeValues: map[string]types.AttributeValue{":at": num(at.Unix()), ":one": num(1), ":ps": num(periodStart)},
	})
	if err != nil {
		return fmt.Errorf("table.MarkAlertSent %s: %w", orgID, translate(err))
	}
	return nil
}
