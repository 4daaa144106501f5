package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"testing"
)

// TestMoto_ThePatchedServerAnswersAsMotoItself sends the same DynamoDB
// requests to scripts/moto_server.py and to moto as released
// (MOTO_UNPATCHED=1) and compares every answer: status and body. The
// requests cover what the launcher changes in moto's update path (the
// traversal, the copy of the parsed expression, the checks of the
// expression alone made once, the conditions parsed once), its
// transactions and its Query of one partition. Each request whose outcome a cache could change is sent
// twice, the second time to the cache: errors stay errors, a condition's
// new values are its own, an expression checked on one table is checked
// again on a table whose key it updates.
func TestMoto_ThePatchedServerAnswersAsMotoItself(t *testing.T) {
	Need(t, "moto's server")
	patched, err := StartMoto()
	if err != nil {
		t.Fatal(err)
	}
	defer patched.Stop()
	t.Setenv("MOTO_UNPATCHED", "1")
	unpatched, err := StartMoto()
	if err != nil {
		t.Fatal(err)
	}
	defer unpatched.Stop()

	send := func(url, op string, body any) (int, any) {
		t.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(raw))
		req.Header.Set("Content-Type", "application/x-amz-json-1.0")
		req.Header.Set("X-Amz-Target", "DynamoDB_20120810."+op)
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		var v any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("%s answered %d %q", op, resp.StatusCode, out)
		}
		return resp.StatusCode, v
	}
	type request struct {
		op   string
		body map[string]any
	}
	s := func(v string) map[string]any { return map[string]any{"S": v} }
	n := func(v string) map[string]any { return map[string]any{"N": v} }
	key := func(table, sk string) map[string]any {
		if table == "byamount" {
			return map[string]any{"amount": n(sk)}
		}
		return map[string]any{"pk": s("org"), "sk": s(sk)}
	}
	update := func(table, sk, expr string, names map[string]string, values map[string]any, extra ...any) request {
		body := map[string]any{"TableName": table, "Key": key(table, sk), "UpdateExpression": expr, "ReturnValues": "ALL_NEW"}
		if names != nil {
			body["ExpressionAttributeNames"] = names
		}
		if values != nil {
			body["ExpressionAttributeValues"] = values
		}
		for i := 0; i < len(extra); i += 2 {
			body[extra[i].(string)] = extra[i+1]
		}
		return request{"UpdateItem", body}
	}
	twice := func(r request) []request { return []request{r, r} }
	one := map[string]any{":one": n("1")}

	var script []request
	for _, table := range []map[string]any{
		{"TableName": "t", "BillingMode": "PAY_PER_REQUEST",
			"KeySchema":            []any{map[string]any{"AttributeName": "pk", "KeyType": "HASH"}, map[string]any{"AttributeName": "sk", "KeyType": "RANGE"}},
			"AttributeDefinitions": []any{map[string]any{"AttributeName": "pk", "AttributeType": "S"}, map[string]any{"AttributeName": "sk", "AttributeType": "S"}}},
		{"TableName": "byamount", "BillingMode": "PAY_PER_REQUEST",
			"KeySchema":            []any{map[string]any{"AttributeName": "amount", "KeyType": "HASH"}},
			"AttributeDefinitions": []any{map[string]any{"AttributeName": "amount", "AttributeType": "N"}}},
	} {
		for _, url := range []string{patched.URL, unpatched.URL} {
			if status, v := send(url, "CreateTable", table); status != http.StatusOK {
				t.Fatalf("CreateTable: %d %v", status, v)
			}
		}
	}
	item := key("t", "a")
	item["amount"], item["name"], item["ss"] = n("10"), s("x"), map[string]any{"SS": []string{"a", "b"}}
	item["m"] = map[string]any{"M": map[string]any{"l": map[string]any{"L": []any{s("z"), n("3")}}}}
	script = append(script, request{"PutItem", map[string]any{"TableName": "t", "Item": item}})
	script = append(script, twice(update("t", "a", "SET #n = :n ADD amount :a", map[string]string{"#n": "name"}, map[string]any{":n": s("y"), ":a": n("0.25")}))...)
	// The same text with other names and values: the cache holds neither.
	script = append(script, update("t", "a", "SET #n = :n ADD amount :a", map[string]string{"#n": "other"}, map[string]any{":n": s("w"), ":a": n("-2")}))
	// Conditions, met then not, with the old item returned.
	for _, max := range []string{"100", "1", "100", "1"} {
		script = append(script, update("t", "a", "ADD amount :one", nil, map[string]any{":one": n("1"), ":max": n(max)},
			"ConditionExpression", "amount < :max", "ReturnValuesOnConditionCheckFailure", "ALL_OLD"))
	}
	// Expressions moto refuses, each twice.
	for _, bad := range []request{
		update("t", "a", "SET a = :one SET b = :one", nil, one),
		update("t", "a", "SET m = :one, m.l = :one", nil, one),
		update("t", "a", "SET sk = :one", nil, one),
		update("t", "a", "SET c = :undefined", nil, one),
		update("t", "a", "SET c = missing + :one", nil, one),
		update("t", "a", "ADD #n :one", map[string]string{"#n": "name"}, one),
		update("t", "a", "SET #unused = :one", map[string]string{"#unused": "c", "#n": "name"}, one),
	} {
		script = append(script, twice(bad)...)
	}
	// Functions, lists, sets, removal, a new item.
	script = append(script, twice(update("t", "a", "SET m.l = list_append(m.l, :l), c = if_not_exists(c, :one)", nil, map[string]any{":l": map[string]any{"L": []any{s("q")}}, ":one": n("1")}))...)
	script = append(script, twice(update("t", "a", "SET m.l[0] = :z REMOVE c", nil, map[string]any{":z": s("zz")}))...)
	script = append(script, twice(update("t", "a", "ADD ss :s DELETE ss :d", nil, map[string]any{":s": map[string]any{"SS": []string{"c"}}, ":d": map[string]any{"SS": []string{"a"}}}))...)
	script = append(script, twice(update("t", "new", "ADD amount :one", nil, one))...)
	// Checked on t, where amount is no key; on byamount it is one.
	script = append(script, update("byamount", "5", "ADD amount :one", nil, one), update("byamount", "5", "SET #n = :n ADD amount :a", map[string]string{"#n": "name"}, map[string]any{":n": s("y"), ":a": n("0.25")}))
	// Transactions: applied, and cancelled with each action's reason.
	txn := func(amountBelow string) request {
		return request{"TransactWriteItems", map[string]any{"TransactItems": []any{
			map[string]any{"Put": map[string]any{"TableName": "t", "Item": key("t", "txn"), "ConditionExpression": "attribute_not_exists(pk)"}},
			map[string]any{"Update": map[string]any{"TableName": "t", "Key": key("t", "a"), "UpdateExpression": "SET period_end = :pe ADD amount :a",
				"ConditionExpression": "amount < :below", "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
				"ExpressionAttributeValues": map[string]any{":pe": n("9"), ":a": n("2.5"), ":below": n(amountBelow)}}},
		}}}
	}
	script = append(script, txn("1000"), txn("1000"), txn("1"))
	script = append(script, request{"DeleteItem", map[string]any{"TableName": "t", "Key": key("t", "txn"), "ConditionExpression": "attribute_exists(pk)"}})
	script = append(script, request{"DeleteItem", map[string]any{"TableName": "t", "Key": key("t", "txn"), "ConditionExpression": "attribute_exists(pk)"}})
	script = append(script, txn("1000"))
	// Filters whose values change under the same text.
	for _, v := range []string{"1", "1000", "1"} {
		script = append(script, request{"Scan", map[string]any{"TableName": "t", "FilterExpression": "amount > :v", "ExpressionAttributeValues": map[string]any{":v": n(v)}}})
	}
	script = append(script, request{"Scan", map[string]any{"TableName": "t"}}, request{"Scan", map[string]any{"TableName": "byamount"}})
	// Queries of a table read its partition alone: partitions before and
	// after it, ranges, both orders, pages, filters, projections, counts,
	// absent partitions (one that a GetItem miss left empty), a refusal.
	for i, pk := range []string{"a", "org", "orh", "zz"} {
		for j, sk := range []string{"b", "c", "d"} {
			script = append(script, request{"PutItem", map[string]any{"TableName": "t", "Item": map[string]any{"pk": s(pk), "sk": s(sk), "amount": n(fmt.Sprint(i*10 + j))}}})
		}
	}
	query := func(table, cond string, values map[string]any, extra ...any) request {
		body := map[string]any{"TableName": table, "KeyConditionExpression": cond, "ExpressionAttributeValues": values}
		for i := 0; i < len(extra); i += 2 {
			body[extra[i].(string)] = extra[i+1]
		}
		return request{"Query", body}
	}
	org := map[string]any{":p": s("org")}
	script = append(script,
		query("t", "pk = :p", org),
		query("t", "pk = :p AND sk > :s", map[string]any{":p": s("org"), ":s": s("b")}),
		query("t", "pk = :p AND begins_with(sk, :s)", map[string]any{":p": s("org"), ":s": s("t")}),
		query("t", "pk = :p", org, "ScanIndexForward", false),
		query("t", "pk = :p", org, "Limit", 2),
		query("t", "pk = :p", org, "Limit", 2, "ExclusiveStartKey", map[string]any{"pk": s("org"), "sk": s("b")}),
		query("t", "pk = :p", org, "ScanIndexForward", false, "Limit", 2, "ExclusiveStartKey", map[string]any{"pk": s("org"), "sk": s("c")}),
		query("t", "pk = :p", map[string]any{":p": s("org"), ":v": n("11")}, "FilterExpression", "amount > :v"),
		query("t", "pk = :p", org, "ProjectionExpression", "sk, amount"),
		query("t", "pk = :p", org, "Select", "COUNT"),
		query("t", "pk = :p", map[string]any{":p": s("none")}),
		request{"GetItem", map[string]any{"TableName": "t", "Key": map[string]any{"pk": s("ghost"), "sk": s("b")}}},
		query("t", "pk = :p", map[string]any{":p": s("ghost")}),
		query("t", "#n = :p", map[string]any{":p": s("org")}, "ExpressionAttributeNames", map[string]string{"#n": "name"}),
		query("byamount", "amount = :a", map[string]any{":a": n("5")}),
		query("byamount", "amount = :a", map[string]any{":a": n("77")}),
		request{"Scan", map[string]any{"TableName": "t"}},
	)

	errors := 0
	for i, r := range script {
		ps, pv := send(patched.URL, r.op, r.body)
		us, uv := send(unpatched.URL, r.op, r.body)
		if ps >= 400 {
			errors++
		}
		if ps != us || !reflect.DeepEqual(pv, uv) {
			raw, _ := json.Marshal(r.body)
			t.Errorf("request %d, %s %s:\npatched   %d %v\nunpatched %d %v", i, r.op, raw, ps, pv, us, uv)
		}
	}
	// The script is worth what it exercises: refusals and cancellations
	// among the answers, not only successes.
	if errors < 15 {
		t.Errorf("only %d of %d requests refused: the script no longer reaches moto's errors", errors, len(script))
	}
	t.Logf("%d requests, %d refused, the same answers", len(script), errors)
}
