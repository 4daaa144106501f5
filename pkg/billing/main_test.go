package billing_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/baseten/billing-functions/internal/stripelocal"
	"github.com/baseten/billing-functions/internal/testenv"
	"github.com/baseten/billing-functions/pkg/billing"
	"github.com/baseten/billing-functions/pkg/table"
)

var (
	motoURL       string
	stripeMockURL string
	sm            *secretsmanager.Client
	ddb           *dynamodb.Client
)

func TestMain(m *testing.M) {
	mock, err := testenv.StartStripeMock()
	if err != nil {
		fmt.Fprintln(os.Stderr, "billing tests:", err)
		os.Exit(1)
	}
	stripeMockURL = mock.URL
	testenv.Main(m, func(url string) {
		motoURL = url
		cfg := testenv.AWSConfig(url)
		sm = secretsmanager.NewFromConfig(cfg)
		ddb = dynamodb.NewFromConfig(cfg)
	})
	mock.Stop()
}

// countingDB counts DynamoDB requests on their way to moto.
type countingDB struct {
	table.DB
	mu     sync.Mutex
	reads  int
	writes int
}

func (c *countingDB) count(write bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if write {
		c.writes++
	} else {
		c.reads++
	}
}

func (c *countingDB) GetItem(ctx context.Context, in *dynamodb.GetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	c.count(false)
	return c.DB.GetItem(ctx, in, o...)
}

func (c *countingDB) Query(ctx context.Context, in *dynamodb.QueryInput, o ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	c.count(false)
	return c.DB.Query(ctx, in, o...)
}

func (c *countingDB) Scan(ctx context.Context, in *dynamodb.ScanInput, o ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	c.count(false)
	return c.DB.Scan(ctx, in, o...)
}

func (c *countingDB) PutItem(ctx context.Context, in *dynamodb.PutItemInput, o ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.count(true)
	return c.DB.PutItem(ctx, in, o...)
}

func (c *countingDB) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	c.count(true)
	return c.DB.UpdateItem(ctx, in, o...)
}

func (c *countingDB) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, o ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	c.count(true)
	return c.DB.DeleteItem(ctx, in, o...)
}

func (c *countingDB) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	c.count(true)
	return c.DB.TransactWriteItems(ctx, in, o...)
}

func (c *countingDB) reset() (reads, writes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	reads, writes = c.reads, c.writes
	c.reads, c.writes = 0, 0
	return reads, writes
}

// fixture is a Service wired to moto (a fresh table) and a local Stripe
// whose every request stripe-mock checks.
type fixture struct {
	t      testing.TB
	svc    *billing.Service
	stripe *stripelocal.Server
	url    string
	db     *countingDB
	store  *table.Store
}

func newFixture(t testing.TB, namespace string) *fixture {
	t.Helper()
	srv := stripelocal.New(stripelocal.Options{Validator: stripeMockURL, RetryBase: 20 * time.Millisecond})
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
		if v := srv.Violations(); len(v) > 0 {
			t.Errorf("stripe-mock rejected %d requests:\n%s", len(v), strings.Join(v, "\n"))
		}
	})
	f := &fixture{t: t, stripe: srv, url: hs.URL}
	f.svc, f.db, f.store = newService(t, namespace, hs.URL, nil)
	f.svc.SetMetricsOutput(io.Discard)
	return f
}

// withNamespace returns a second Service on the same Stripe and table under
// another namespace, as another deployment sharing the account would be.
func (f *fixture) withNamespace(ns string) *billing.Service {
	svc, _, _ := newService(f.t, ns, f.url, f.store)
	return svc
}

func newService(t testing.TB, namespace, stripeURL string, store *table.Store) (*billing.Service, *countingDB, *table.Store) {
	t.Helper()
	db := &countingDB{DB: ddb}
	name := testenv.UniqueName(t, "billing")
	if store == nil {
		if err := table.CreateTable(context.Background(), ddb, name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: &name}) })
	} else {
		name = store.Name()
	}
	env := map[string]string{
		"STAGE": "dev", "BILLING_NAMESPACE": namespace, "TABLE_NAME": name,
		"STRIPE_API_KEY": "sk_test_fixture", "STRIPE_PUBLISHABLE_KEY": "pk_test_fixture",
		"STRIPE_ENDPOINT_SECRET": "whsec_fixture", "STRIPE_API_BASE": stripeURL,
	}
	cfg, err := billing.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	s := table.New(db, name)
	return billing.NewService(cfg, billing.NewKeySource(cfg, nil), s, slog.New(slog.NewTextHandler(io.Discard, nil))), db, s
}

type (
	dynamodbTransactInput  = dynamodb.TransactWriteItemsInput
	dynamodbTransactOutput = dynamodb.TransactWriteItemsOutput
	dynamodbOption         = func(*dynamodb.Options)
)

// throttled is DynamoDB's throttling error as the SDK reports it.
type throttled = ddbtypes.ProvisionedThroughputExceededException

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
