package billing_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/baseten/billing-functions/pkg/billing"
)

func TestWebhook_BillingDisabledAnswers503(t *testing.T) {
	t.Parallel()
	resp, err := disabledService(t).HandleWebhook(context.Background(), events.APIGatewayV2HTTPRequest{Body: `{"id":"evt_1"}`})
	if err != nil {
		t.Fatalf("a disabled webhook must answer, not fail: %v", err)
	}
	if resp.StatusCode != 503 || resp.Body != `{"status":"billing_disabled"}` {
		t.Fatalf("got %d %s, want 503 billing_disabled", resp.StatusCode, resp.Body)
	}
}

func TestInvokedFunctions_BillingDisabledIsAClearEnvelope(t *testing.T) {
	t.Parallel()
	svc := disabledService(t)
	for name, handle := range map[string]func(context.Context, json.RawMessage) (billing.Response, error){
		"subscribe":       svc.HandleSubscribe,
		"upsert-products": svc.HandleUpsertProducts,
	} {
		resp, err := handle(context.Background(), json.RawMessage(`{"action":"get_status","org_id":"org_1"}`))
		if err != nil {
			t.Fatalf("%s failed at the Lambda level: %v", name, err)
		}
		got, _ := json.Marshal(resp)
		want := `{"ok":false,"error":{"code":"billing_disabled","message":"billing is disabled: no Stripe API key is configured","retryable":false}}`
		if string(got) != want {
			t.Errorf("%s answered %s, want %s", name, got, want)
		}
	}
}
