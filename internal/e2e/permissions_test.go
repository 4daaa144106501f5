package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/baseten/billing-functions/internal/devstack"
	"github.com/baseten/billing-functions/internal/testenv"
)

// called gathers, over the package's stacks, the DynamoDB actions each
// function needed and the partition key prefixes it touched.
var called = struct {
	mu                  sync.Mutex
	actions, partitions map[string]map[string]bool
	stacks              int
}{actions: map[string]map[string]bool{}, partitions: map[string]map[string]bool{}}

// TestEndToEnd_EachFunctionHasExactlyTheDynamoDBActionsItCalls compares,
// for each function, the DynamoDB actions its real binary needed during the
// package's other end-to-end tests (recorded by make dev's DynamoDB proxy, from each
// function's own access key; a transaction counts as the actions of its
// items; a read of an index as "@index", which IAM authorizes on the
// index's ARN) with the actions template.yaml grants it on each resource:
// no more, no fewer. It runs after the stacks of the package's other tests
// stopped: go test runs files in name order, and this file's name sorts
// after theirs.
func TestEndToEnd_EachFunctionHasExactlyTheDynamoDBActionsItCalls(t *testing.T) {
	testenv.Need(t, "the package's other end-to-end tests")
	called.mu.Lock()
	defer called.mu.Unlock()
	if called.stacks < 2 {
		t.Skip("needs the other end-to-end tests of this package in the same run: go test ./internal/e2e/")
	}
	python := testenv.VenvTool(t, "python")
	script := `
import json, sys
from cfnlint.decode import decode
t, m = decode(sys.argv[1])
out = {}
for fid, r in t["Resources"].items():
    if r["Type"] != "AWS::Serverless::Function":
        continue
    acts, leading = set(), None
    for pol in r["Properties"].get("Policies", []):
        for st in pol.get("Statement", []):
            a, res = st["Action"], st["Resource"]
            for x in (a if isinstance(a, list) else [a]):
                if not x.startswith("dynamodb:"):
                    continue
                for rr in (res if isinstance(res, list) else [res]):
                    index = "/index/" in json.dumps(rr)
                    acts.add(x + ("@index" if index else ""))
                    if not index:
                        for op, cond in st.get("Condition", {}).items():
                            if op.startswith("ForAllValues:String") and "dynamodb:LeadingKeys" in cond:
                                v = cond["dynamodb:LeadingKeys"]
                                leading = sorted(v if isinstance(v, list) else [v])
    out[fid] = {"actions": sorted(acts), "leading": leading}
print(json.dumps(out))
`
	out, err := exec.Command(python, "-c", script, filepath.Join(testenv.RepoRoot(), "template.yaml")).Output()
	if err != nil {
		t.Fatalf("reading the template's policies: %v", err)
	}
	var granted map[string]struct {
		Actions []string
		Leading []string // nil: no dynamodb:LeadingKeys condition
	}
	if err := json.Unmarshal(out, &granted); err != nil {
		t.Fatal(err)
	}
	for fn, g := range granted {
		var needed []string
		for a := range called.actions[fn] {
			needed = append(needed, a)
		}
		sort.Strings(needed)
		if !slices.Equal(needed, g.Actions) {
			t.Errorf("%s: the template grants %v; its code called %v", fn, g.Actions, needed)
		}
		// Each partition the function touched is one its LeadingKeys
		// condition allows ("ORG#*" allows "ORG#"; "CATALOG" itself).
		for prefix := range called.partitions[fn] {
			if g.Leading != nil && !slices.Contains(g.Leading, prefix) && !slices.Contains(g.Leading, prefix+"*") {
				t.Errorf("%s touched partition %q, which its dynamodb:LeadingKeys condition %v refuses", fn, prefix, g.Leading)
			}
		}
		t.Logf("%s: actions %v; partitions %v; LeadingKeys %v", fn, needed, keys(called.partitions[fn]), g.Leading)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// byHand makes the changes a person makes in Stripe's Dashboard, which
// take the functions down their rare paths (a subtest of the core flows).
func (s *stack) byHand(t *testing.T) {
	// A second endpoint with a wrong signing secret, for customer events:
	// its deliveries fail, so the daily reconcile's replay takes them up.
	raw, _ := json.Marshal(map[string]any{"url": s.gatewayURL + devstack.WebhookPath, "secrets": []string{"whsec_wrong"}, "events": []string{"customer.created"}})
	resp, err := http.Post(s.stripeURL+"/_local/webhook_endpoints", "application/json", strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	var endpoint struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&endpoint)
	resp.Body.Close()

	var c, p struct{ ID, Name string }
	s.stripeAPI(t, http.MethodPost, "/v1/customers", url.Values{"email": {"byhand@example.com"}}, &c)
	const product = "/v1/products/bf_local-e2e_gpu-t4"
	s.stripeAPI(t, http.MethodPost, product, url.Values{"name": {"Renamed by hand"}}, &p)
	// Not /_local/wait, which would wait out the failing endpoint's retries.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var failed struct{ Data []struct{ ID string } }
		s.stripeAPI(t, http.MethodGet, "/v1/events?delivery_success=false", nil, &failed)
		log := s.webhookLog()
		if len(failed.Data) > 0 && strings.Contains(log, "catalog drift") && strings.Contains(log, `"type":"customer.created","status":200`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook did not see the changes by hand (failed deliveries %v):\n%s", failed.Data, log)
		}
	}
	var deleted struct{ Deleted bool }
	s.stripeAPI(t, http.MethodDelete, "/v1/webhook_endpoints/"+endpoint.ID, nil, &deleted)
	rep := s.call(map[string]any{"action": "reconcile", "replay": true})
	if replay, _ := rep["replay"].(map[string]any); replay["events"] == nil || replay["events"].(float64) < 1 || replay["failed"].(float64) != 0 {
		t.Fatalf("the replay of the undelivered customer event: %v", rep)
	}
	upsert := func() map[string]any {
		t.Helper()
		out, err := s.lambda.Invoke(context.Background(), &lambda.InvokeInput{FunctionName: aws.String("UpsertProductsFunction"), Payload: []byte("{}")})
		if err != nil {
			t.Fatal(err)
		}
		var env map[string]any
		_ = json.Unmarshal(out.Payload, &env)
		return env
	}
	s.control("/_local/faults", map[string]any{"kind": "500", "count": 1, "method": "POST", "path": product})
	if env := upsert(); env["ok"] != false || fmt.Sprint(env["error"].(map[string]any)["code"]) != "unavailable" {
		t.Fatalf("upsert-products through a Stripe 500: %v", env)
	}
	if env := upsert(); env["ok"] != true {
		t.Fatalf("upsert-products after the 500: %v", env)
	}
	s.stripeAPI(t, http.MethodGet, product, nil, &p)
	if p.Name == "Renamed by hand" {
		t.Fatalf("upsert-products left the name changed by hand: %+v", p)
	}
}
