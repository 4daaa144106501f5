package testenv

import (
	"context"
	"reflect"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// TestMoto_TheFastAnswersAreTheModelsAnswers runs scripts/moto_server.py
// with MOTO_FAST_JSON_CHECK=1: every data-plane answer is made both ways,
// its own JSON and moto's model serializer, and a difference answers 500,
// which fails the request here. The items hold every attribute type, with
// and without binary ones (which go the model's way), and the answers ask
// for old and new values and for consumed capacity.
func TestMoto_TheFastAnswersAreTheModelsAnswers(t *testing.T) {
	Need(t, "moto's server")
	t.Setenv("MOTO_FAST_JSON_CHECK", "1")
	srv, err := StartMoto()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	ctx := context.Background()
	db := dynamodb.NewFromConfig(AWSConfig(srv.URL), func(o *dynamodb.Options) { o.RetryMaxAttempts = 1 })
	name := "fast"
	if _, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{TableName: &name, BillingMode: types.BillingModePayPerRequest,
		KeySchema: []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}, {AttributeName: aws.String("sk"), KeyType: types.KeyTypeRange}},
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: types.ScalarAttributeTypeS}}}); err != nil {
		t.Fatal(err)
	}
	s := func(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
	n := func(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }
	key := func(sk string) map[string]types.AttributeValue {
		return map[string]types.AttributeValue{"pk": s("org"), "sk": s(sk)}
	}
	plain := key("plain")
	for k, v := range map[string]types.AttributeValue{
		"amount": n("12.50"), "name": s("x"), "empty": s(""), "on": &types.AttributeValueMemberBOOL{Value: true},
		"none": &types.AttributeValueMemberNULL{Value: true}, "ss": &types.AttributeValueMemberSS{Value: []string{"a", "b"}},
		"ns": &types.AttributeValueMemberNS{Value: []string{"1", "2.5"}},
		"m": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"l": &types.AttributeValueMemberL{Value: []types.AttributeValue{s("z"), n("3"),
			&types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}}}}}},
	} {
		plain[k] = v
	}
	binary := key("binary")
	binary["b"] = &types.AttributeValueMemberB{Value: []byte("hello")}
	binary["bs"] = &types.AttributeValueMemberBS{Value: [][]byte{[]byte("a")}}
	total := types.ReturnConsumedCapacityTotal
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	for _, item := range []map[string]types.AttributeValue{plain, binary} {
		_, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: &name, Item: item, ReturnConsumedCapacity: total})
		must("PutItem", err)
		old, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: &name, Item: item, ReturnValues: types.ReturnValueAllOld})
		must("PutItem ALL_OLD", err)
		if !reflect.DeepEqual(old.Attributes, item) {
			t.Fatalf("PutItem's old item %v, want %v", old.Attributes, item)
		}
		got, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: &name, Key: key(item["sk"].(*types.AttributeValueMemberS).Value), ConsistentRead: aws.Bool(true), ReturnConsumedCapacity: total})
		must("GetItem", err)
		if !reflect.DeepEqual(got.Item, item) || got.ConsumedCapacity == nil {
			t.Fatalf("GetItem %v (capacity %v), want %v", got.Item, got.ConsumedCapacity, item)
		}
	}
	missing, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: &name, Key: key("missing")})
	must("GetItem of nothing", err)
	if missing.Item != nil {
		t.Fatalf("GetItem of nothing: %v", missing.Item)
	}
	batch, err := db.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{name: {Keys: []map[string]types.AttributeValue{key("plain"), key("missing")}}},
		ReturnConsumedCapacity: total})
	must("BatchGetItem", err)
	if r := batch.Responses[name]; len(r) != 1 || !reflect.DeepEqual(r[0], plain) {
		t.Fatalf("BatchGetItem %v", batch.Responses)
	}
	q, err := db.Query(ctx, &dynamodb.QueryInput{TableName: &name, KeyConditionExpression: aws.String("pk = :p"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":p": s("org")}, Limit: aws.Int32(1)})
	must("Query", err)
	if len(q.Items) != 1 || q.LastEvaluatedKey == nil {
		t.Fatalf("Query of one: %v, last key %v", q.Items, q.LastEvaluatedKey)
	}
	count, err := db.Query(ctx, &dynamodb.QueryInput{TableName: &name, KeyConditionExpression: aws.String("pk = :p"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":p": s("org")}, Select: types.SelectCount})
	must("Query COUNT", err)
	scan, err := db.Scan(ctx, &dynamodb.ScanInput{TableName: &name})
	must("Scan", err)
	if count.Count != 2 || len(scan.Items) != 2 {
		t.Fatalf("Query COUNT %d, Scan %d items, want 2", count.Count, len(scan.Items))
	}
	add := &dynamodb.UpdateItemInput{TableName: &name, Key: key("plain"), UpdateExpression: aws.String("SET #n = :n ADD amount :a"),
		ExpressionAttributeNames: map[string]string{"#n": "name"}, ExpressionAttributeValues: map[string]types.AttributeValue{":n": s("y"), ":a": n("0.25")},
		ReturnValues: types.ReturnValueUpdatedNew, ReturnConsumedCapacity: total}
	up, err := db.UpdateItem(ctx, add)
	must("UpdateItem", err)
	if !reflect.DeepEqual(up.Attributes, map[string]types.AttributeValue{"name": s("y"), "amount": n("12.75")}) {
		t.Fatalf("UpdateItem UPDATED_NEW %v", up.Attributes)
	}
	add.ReturnValues = types.ReturnValueAllNew
	_, err = db.UpdateItem(ctx, add)
	must("UpdateItem ALL_NEW", err)
	_, err = db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{Put: &types.Put{TableName: &name, Item: key("txn"), ConditionExpression: aws.String("attribute_not_exists(pk)")}},
		{Update: &types.Update{TableName: &name, Key: key("plain"), UpdateExpression: aws.String("ADD amount :a"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":a": n("1")}}},
	}})
	must("TransactWriteItems", err)
	tg, err := db.TransactGetItems(ctx, &dynamodb.TransactGetItemsInput{TransactItems: []types.TransactGetItem{{Get: &types.Get{TableName: &name, Key: key("plain")}},
		{Get: &types.Get{TableName: &name, Key: key("binary")}}}})
	must("TransactGetItems", err)
	if len(tg.Responses) != 2 || !reflect.DeepEqual(tg.Responses[1].Item, binary) {
		t.Fatalf("TransactGetItems %v", tg.Responses)
	}
	_, err = db.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{name: {
		{PutRequest: &types.PutRequest{Item: key("bw")}}, {DeleteRequest: &types.DeleteRequest{Key: key("txn")}}}}, ReturnConsumedCapacity: total})
	must("BatchWriteItem", err)
	del, err := db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &name, Key: key("bw"), ReturnValues: types.ReturnValueAllOld, ReturnConsumedCapacity: total})
	must("DeleteItem", err)
	if !reflect.DeepEqual(del.Attributes, key("bw")) {
		t.Fatalf("DeleteItem ALL_OLD %v", del.Attributes)
	}
}
