package billing

import (
	_ "embed"
	"encoding/json"
	"slices"
	"testing"
)

//go:embed subscribe.schema.json
var subscribeSchema []byte

// TestSchema_MatchesTheCode keeps subscribe.schema.json in step with the
// decoder: the same actions, with the same fields and required fields, and
// the same error codes.
func TestSchema_MatchesTheCode(t *testing.T) {
	var schema struct {
		Defs struct {
			Error struct {
				Properties struct {
					Code struct {
						Enum []string `json:"enum"`
					} `json:"code"`
				} `json:"properties"`
			} `json:"error"`
		} `json:"$defs"`
		Request struct {
			OneOf []struct {
				Required   []string                   `json:"required"`
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"oneOf"`
		} `json:"request"`
	}
	if err := json.Unmarshal(subscribeSchema, &schema); err != nil {
		t.Fatalf("the schema is not JSON: %v", err)
	}
	seen := map[string]bool{}
	for _, variant := range schema.Request.OneOf {
		var action struct {
			Const string `json:"const"`
		}
		_ = json.Unmarshal(variant.Properties["action"], &action)
		spec, ok := actions[action.Const]
		if !ok {
			t.Errorf("the schema has action %q, the code does not", action.Const)
			continue
		}
		seen[action.Const] = true
		var props []string
		for p := range variant.Properties {
			if p != "action" && p != "org_id" && p != "request_id" {
				props = append(props, p)
			}
		}
		if !sameSet(props, spec.fields) {
			t.Errorf("%s: schema fields %v, code fields %v", action.Const, props, spec.fields)
		}
		for _, r := range spec.required {
			if !slices.Contains(variant.Required, r) {
				t.Errorf("%s: the code requires %s, the schema does not", action.Const, r)
			}
		}
		if spec.mutating != slices.Contains(variant.Required, "request_id") {
			t.Errorf("%s: request_id required in the schema = %v, in the code = %v", action.Const, !spec.mutating, spec.mutating)
		}
	}
	for a := range actions {
		if !seen[a] {
			t.Errorf("the code has action %q, the schema does not", a)
		}
	}
	var want []string
	for _, c := range codes {
		want = append(want, string(c))
	}
	if !sameSet(schema.Defs.Error.Properties.Code.Enum, want) {
		t.Errorf("error codes: schema %v, code %v", schema.Defs.Error.Properties.Code.Enum, want)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
