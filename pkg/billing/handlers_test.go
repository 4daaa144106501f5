package billing_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

// disabledService has no Stripe key at all, as most dev setups do.
func disabledService(t *testing.T) *billing.Service {
	t.Helper()
	cfg, err := billing.LoadConfig(func(k string) string {
		return map[string]string{"STAGE": "dev", "BILLING_NAMESPACE": "local-dev", "TABLE_NAME": "billing-local"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	return billing.NewService(cfg, billing.NewKeySource(cfg, nil), table.New(nil, cfg.TableName), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestWebhook_BillingDisabledAnswers503(t *testing.T) {
	resp, err := disabledService(t).HandleWebhook(context.Background(), events.APIGatewayV2HTTPRequest{Body: `{"id":"evt_1"}`})
	if err != nil {
		t.Fatalf("a disabled webhook must answer, not fail: %v", err)
	}
	if resp.StatusCode != 503 || resp.Body != `{"status":"billing_disabled"}` {
		t.Fatalf("got %d %s, want 503 billing_disabled", resp.StatusCode, resp.Body)
	}
}

func TestInvokedFunctions_BillingDisabledIsAClearEnvelope(t *testing.T) {
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
