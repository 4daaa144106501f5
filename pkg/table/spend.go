package table

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
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
	if err := s.putCatalogItem(ctx, skTerms, t); err != nil {
		return fmt.Errorf("table.PutTerms: %w", err)
	}
	return nil
}

const skSpend = "SPEND"

// Spend is an organization's metered spend in its current billing period,
// and its own spend cap. Amount is a decimal number of the currency's
// minor unit, exact (DynamoDB numbers keep 38 digits; usage writes ADD to
// it). Alerts holds, per threshold crossed this period ("50", "80",
// "100"), when its alert was claimed (ClaimAlert: one claim succeeds).
// TierCap is the tier's default cap as the last usage write saw it. Cap is
// the organization's own cap (0 without one), kept across periods.
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
}

// spendItem reads a Spend, its amount from a number.
func spendOf(item map[string]types.AttributeValue) (Spend, error) {
	var sp Spend
	if n, ok := item["amount"].(*types.AttributeValueMemberN); ok {
		item = maps.Clone(item)
		// DynamoDB trims a number's trailing zeros; moto may not.
		v := n.Value
		if strings.Contains(v, ".") {
			v = strings.TrimRight(strings.TrimRight(v, "0"), ".")
		}
		item["amount"] = &types.AttributeValueMemberS{Value: v}
	}
	if err := attributevalue.UnmarshalMap(item, &sp); err != nil {
		return Spend{}, err
	}
	return sp, nil
}

// SetSpendCap sets the organization's own spend cap (0 removes it, so that
// the tier's default applies).
func (s *Store) SetSpendCap(ctx context.Context, orgID string, capAmount int64) (Spend, error) {
	out, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &s.name, Key: key(orgPK(orgID), skSpend),
		UpdateExpression:          aws.String("SET #cap = :cap"),
		ExpressionAttributeNames:  map[string]string{"#cap": "cap"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":cap": num(capAmount)},
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

// GetSpend reads an organization's spend record (the zero Spend without
// one).
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

// SpendAdd is what one transaction adds to an organization's spend: Amount
// (minor units, decimal) for the period starting at PeriodStart. Rollover
// starts the period's record (the stored one is of an earlier period, or
// there is none) instead of adding to it.
type SpendAdd struct {
	PeriodStart, PeriodEnd int64
	Amount                 string
	Currency               string
	TierCap                int64
	Rollover               bool
	// SetTerms also stores PeriodEnd, Currency and TierCap, which the
	// stored record of the period does not hold (the tier changed, say).
	// Otherwise the addition only adds: the record keeps its terms.
	SetTerms bool
	// Below, when set, adds only if the stored amount is below it: the
	// addition then reaches no threshold line, which is what a batch
	// expects of almost every addition; the cancellation says otherwise.
	Below string
}

// UsageWrite is one organization's part of a usage transaction: the
// answers of its records and, when they add spend, the addition.
type UsageWrite struct {
	OrgID   string
	Records []FinishedRequest
	Add     *SpendAdd
}

// MaxUsageActions is the most actions a DynamoDB transaction takes.
const MaxUsageActions = 100

// Actions is how many actions w takes in a transaction.
func (w UsageWrite) Actions() int {
	if w.Add != nil {
		return len(w.Records) + 1
	}
	return len(w.Records)
}

// UsageConflict says which parts of a canceled usage transaction failed
// their condition: records another invocation stored first (by request
// ID), and organizations whose spend record is not of the period the
// addition assumed (another invocation rolled it over first).
type UsageConflict struct {
	StoredBefore map[string]bool
	SpendMoved   map[string]bool
	// Spends holds the spend records that moved, as stored, when DynamoDB
	// returned them with the cancellation.
	Spends map[string]Spend
}

// WriteUsage writes the parts, at most MaxUsageActions actions from
// different organizations, in one transaction: each record's answer,
// unless one is stored already, and each addition to a spend record. An
// addition is DynamoDB's ADD, so that concurrent batches for one
// organization never collide; its condition is only that the record is of
// the addition's period. All of it is written, or none. A failed condition
// returns the UsageConflict and ErrConditionFailed; other errors as
// translate says.
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
		if w.Add != nil {
			actions = append(actions, types.TransactWriteItem{Update: spendUpdate(s.name, w.OrgID, *w.Add)})
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

// spendUpdate adds to the spend record of add's period, setting its terms
// when add says they changed, or starts that period's record. The
// organization's own cap is left as it is.
func spendUpdate(tableName, orgID string, add SpendAdd) *types.Update {
	values := map[string]types.AttributeValue{":ps": num(add.PeriodStart), ":amount": &types.AttributeValueMemberN{Value: add.Amount}}
	terms := func() {
		values[":pe"], values[":cur"], values[":tc"] = num(add.PeriodEnd), &types.AttributeValueMemberS{Value: add.Currency}, num(add.TierCap)
	}
	u := &types.Update{TableName: &tableName, Key: key(orgPK(orgID), skSpend), ExpressionAttributeValues: values,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld}
	if add.Rollover {
		terms()
		values[":empty"] = &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}}
		u.UpdateExpression = aws.String("SET period_start = :ps, period_end = :pe, amount = :amount, currency = :cur, tier_cap = :tc, alerts = :empty, alerts_sent = :empty")
		u.ConditionExpression = aws.String("attribute_not_exists(period_start) OR period_start < :ps")
		return u
	}
	u.UpdateExpression = aws.String("ADD amount :amount")
	if add.SetTerms {
		terms()
		u.UpdateExpression = aws.String("SET period_end = :pe, currency = :cur, tier_cap = :tc ADD amount :amount")
	}
	u.ConditionExpression = aws.String("period_start = :ps")
	if add.Below != "" {
		values[":below"] = &types.AttributeValueMemberN{Value: add.Below}
		u.ConditionExpression = aws.String("period_start = :ps AND amount < :below")
	}
	return u
}

// GetSpends reads the spend records of orgs (those that exist), strongly
// consistent, in ⌈orgs/100⌉ BatchGetItem requests, which it returns.
func (s *Store) GetSpends(ctx context.Context, orgs []string) (map[string]Spend, int, error) {
	var keys []map[string]types.AttributeValue
	for _, org := range orgs {
		keys = append(keys, key(orgPK(org), skSpend))
	}
	items, sent, err := s.batchGet(ctx, keys)
	if err != nil {
		return nil, sent, fmt.Errorf("table.GetSpends: %w", err)
	}
	out := map[string]Spend{}
	for _, item := range items {
		sp, err := spendOf(item)
		if err != nil {
			return nil, sent, fmt.Errorf("table.GetSpends: %w", err)
		}
		out[strings.TrimPrefix(strAttr(item[AttrPK]), orgPK(""))] = sp
	}
	return out, sent, nil
}

// ClaimAlert records that the spend of the period starting at periodStart
// crossed a threshold, unless it is recorded already: the one write that
// succeeds decides that its caller sends the alert. ErrConditionFailed
// says another did, or the record moved to another period.
func (s *Store) ClaimAlert(ctx context.Context, orgID string, periodStart int64, threshold string, at time.Time) error {
	if err := s.stampThreshold(ctx, orgID, periodStart, "alerts", threshold, at, true); err != nil {
		return fmt.Errorf("table.ClaimAlert %s: %w", orgID, err)
	}
	return nil
}

// MarkAlertSent records that the alert of a threshold was sent, unless the
// spend record has moved to another period.
func (s *Store) MarkAlertSent(ctx context.Context, orgID string, periodStart int64, threshold string, at time.Time) error {
	if err := s.stampThreshold(ctx, orgID, periodStart, "alerts_sent", threshold, at, false); err != nil {
		return fmt.Errorf("table.MarkAlertSent %s: %w", orgID, err)
	}
	return nil
}

// stampThreshold sets threshold's time in the spend record's map (alerts
// or alerts_sent), if the record is still of the period starting at
// periodStart, and with once only if the threshold has no time there yet.
func (s *Store) stampThreshold(ctx context.Context, orgID string, periodStart int64, mapName, threshold string, at time.Time, once bool) error {
	cond := "period_start = :ps AND attribute_exists(#m)"
	if once {
		cond += " AND attribute_not_exists(#m.#t)"
	}
	_, err := s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &s.name, Key: key(orgPK(orgID), skSpend),
		UpdateExpression:          aws.String("SET #m.#t = :at"),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  map[string]string{"#m": mapName, "#t": threshold},
		ExpressionAttributeValues: map[string]types.AttributeValue{":at": num(at.Unix()), ":ps": num(periodStart)},
	})
	return translate(err)
}
