package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// upsertFunction runs the real upsert-products bootstrap under
// aws-lambda-rie, against moto and a local Stripe, and returns the target
// billingctl should call.
func upsertFunction(t *testing.T) (target, *stripelocal.Server) {
	t.Helper()
	motoURL := testenv.Moto(t)
	name := testenv.NewTable(t)
	srv, stripeURL := testenv.LocalStripe(t, stripelocal.Options{})
	rie := testenv.StartRIE(t, testenv.BuildBootstrap(t, "upsert-products"), map[string]string{
		"STAGE": "dev", "BILLING_NAMESPACE": "ctl-test", "TABLE_NAME": name,
		"STRIPE_API_KEY": "sk_test_ctl", "STRIPE_API_BASE": stripeURL,
		"AWS_ENDPOINT_URL": motoURL, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
	})
	return target{endpoint: rie.URL, function: "function"}, srv
}

func ctl(t *testing.T, tg target, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	all := append([]string{"--endpoint", tg.endpoint, "--function", tg.function}, args...)
	err := run(ctx, all, &out, &errOut)
	return out.String() + errOut.String(), err
}

func rows(out, mark string) int {
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, mark+" ") {
			n++
		}
	}
	return n
}

func TestBillingctl_UpsertProductsPrintsThePlanThroughTheRealFunction(t *testing.T) {
	tg, _ := upsertFunction(t)

	out, err := ctl(t, tg, "upsert-products", "--dry-run")
	if err != nil || rows(out, "+") != 11 || !strings.Contains(out, "dry run: nothing was written") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	out, err = ctl(t, tg, "upsert-products")
	if err != nil || rows(out, "+") != 11 || !strings.Contains(out, "created 11 · updated 0 · archived 0 · unchanged 0") {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	out, err = ctl(t, tg, "upsert-products")
	if err != nil || rows(out, "=") != 11 {
		t.Fatalf("second run: %v\n%s", err, out)
	}

	// A catalog without gpu-h100 and with a renamed gpu-t4.
	cat, _ := os.ReadFile(filepath.Join(testenv.RepoRoot(), "pkg", "billing", "catalog.json"))
	edited := strings.Replace(string(cat), `"T4 GPU · 4 vCPU · 16 GiB"`, `"T4 GPU (renamed)"`, 1)
	var lines []string
	for _, l := range strings.Split(edited, "\n") {
		if !strings.Contains(l, `"gpu-h100"`) {
			lines = append(lines, l)
		}
	}
	edited = strings.Replace(strings.Join(lines, "\n"), `"unit_amount_decimal": "10.2400"},`, `"unit_amount_decimal": "10.2400"}`, 1)
	file := filepath.Join(t.TempDir(), "catalog.json")
	if err := os.WriteFile(file, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = ctl(t, tg, "upsert-products", "--catalog", file)
	if err != nil || rows(out, "~") != 1 || rows(out, "-") != 1 || rows(out, "=") != 9 || !strings.Contains(out, `name: "T4 GPU · 4 vCPU · 16 GiB" → "T4 GPU (renamed)"`) {
		t.Fatalf("edited catalog: %v\n%s", err, out)
	}
}

func TestBillingctl_ErrorsSayWhatToDoNext(t *testing.T) {
	tg, srv := upsertFunction(t)
	// stripe-go retries a failed read twice; make all three attempts fail.
	srv.InjectFault(stripelocal.Fault{Kind: "500", Path: "/v1/products", Count: 3})
	out, err := ctl(t, tg, "upsert-products")
	if err == nil || !strings.Contains(err.Error(), "unavailable") || !strings.Contains(err.Error(), "next: Stripe or AWS failed transiently") {
		t.Fatalf("got %v\n%s", err, out)
	}

	port, _ := testenv.FreePort()
	_, err = ctl(t, target{endpoint: fmt.Sprintf("http://127.0.0.1:%d", port), function: "function"}, "upsert-products")
	if err == nil || !strings.Contains(err.Error(), "make dev") {
		t.Fatalf("with nothing listening: %v", err)
	}
}
