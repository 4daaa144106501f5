package testenv

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/baseten/billing-functions/pkg/table"
)

type awsClients struct {
	ddb *dynamodb.Client
	sm  *secretsmanager.Client
}

var clients lazy[awsClients]

func motoClients(t testing.TB) awsClients {
	t.Helper()
	u := Moto(t)
	c, _ := clients.get(func() (awsClients, error) {
		cfg := AWSConfig(u)
		return awsClients{ddb: dynamodb.NewFromConfig(cfg), sm: secretsmanager.NewFromConfig(cfg)}, nil
	})
	return c
}

// DynamoDB returns a client of moto's DynamoDB (see Moto).
func DynamoDB(t testing.TB) *dynamodb.Client {
	t.Helper()
	return motoClients(t).ddb
}

// SecretsManager returns a client of moto's Secrets Manager (see Moto).
func SecretsManager(t testing.TB) *secretsmanager.Client {
	t.Helper()
	return motoClients(t).sm
}

// NewTable creates a fresh table with the deployed schema on moto for t,
// and deletes it when t ends. It returns the table's name.
func NewTable(t testing.TB) string {
	t.Helper()
	ddb := DynamoDB(t)
	name := UniqueName(t, "billing")
	if err := table.CreateTable(context.Background(), ddb, name); err != nil {
		t.Fatalf("create table %s: %v", name, err)
	}
	t.Cleanup(func() { _, _ = ddb.DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: &name}) })
	return name
}

// DB is the tests' one DynamoDB wrapper: it counts the requests on their
// way to Next and lets a test answer any of them itself.
type DB struct {
	// Next receives the requests; nil answers each as throttled DynamoDB
	// does, so that code runs with no I/O at all.
	Next table.DB
	// Intercept, when set, sees each request's operation first
	// ("TransactWriteItems", "GetItem", …): an error fails the request
	// with it; skip answers it with an empty success and sends nothing.
	Intercept func(op string) (skip bool, err error)
	// Latency, when set, answers each request Next takes no sooner than
	// Latency after it was sent: a DynamoDB whose round trip takes that
	// long, with moto's own time inside it as DynamoDB's own work is
	// inside its latency (longer only when moto takes longer).
	Latency time.Duration

	mu            sync.Mutex
	reads, writes int
}

var _ table.DB = (*DB)(nil)

// Counts returns the reads and writes sent since the last Reset.
func (d *DB) Counts() (reads, writes int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reads, d.writes
}

// Reset returns the counts and zeroes them.
func (d *DB) Reset() (reads, writes int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	reads, writes = d.reads, d.writes
	d.reads, d.writes = 0, 0
	return reads, writes
}

// send counts one request, lets Intercept answer it, or calls next.
func send[O any](d *DB, op string, write bool, next func(table.DB) (*O, error)) (*O, error) {
	d.mu.Lock()
	if write {
		d.writes++
	} else {
		d.reads++
	}
	d.mu.Unlock()
	if d.Intercept != nil {
		if skip, err := d.Intercept(op); err != nil || skip {
			if err != nil {
				return nil, err
			}
			return new(O), nil
		}
	}
	if d.Next == nil {
		return nil, &ddbtypes.ProvisionedThroughputExceededException{Message: new(string)}
	}
	start := time.Now()
	out, err := next(d.Next)
	if d.Latency > 0 {
		waitUntil(start.Add(d.Latency))
	}
	return out, err
}

func (d *DB) GetItem(ctx context.Context, in *dynamodb.GetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	return send(d, "GetItem", false, func(n table.DB) (*dynamodb.GetItemOutput, error) { return n.GetItem(ctx, in, o...) })
}

func (d *DB) Query(ctx context.Context, in *dynamodb.QueryInput, o ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	return send(d, "Query", false, func(n table.DB) (*dynamodb.QueryOutput, error) { return n.Query(ctx, in, o...) })
}

func (d *DB) Scan(ctx context.Context, in *dynamodb.ScanInput, o ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	return send(d, "Scan", false, func(n table.DB) (*dynamodb.ScanOutput, error) { return n.Scan(ctx, in, o...) })
}

func (d *DB) PutItem(ctx context.Context, in *dynamodb.PutItemInput, o ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	return send(d, "PutItem", true, func(n table.DB) (*dynamodb.PutItemOutput, error) { return n.PutItem(ctx, in, o...) })
}

func (d *DB) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	return send(d, "UpdateItem", true, func(n table.DB) (*dynamodb.UpdateItemOutput, error) { return n.UpdateItem(ctx, in, o...) })
}

func (d *DB) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, o ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	return send(d, "DeleteItem", true, func(n table.DB) (*dynamodb.DeleteItemOutput, error) { return n.DeleteItem(ctx, in, o...) })
}

func (d *DB) BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, o ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	return send(d, "BatchGetItem", false, func(n table.DB) (*dynamodb.BatchGetItemOutput, error) { return n.BatchGetItem(ctx, in, o...) })
}

func (d *DB) BatchWriteItem(ctx context.Context, in *dynamodb.BatchWriteItemInput, o ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error) {
	return send(d, "BatchWriteItem", true, func(n table.DB) (*dynamodb.BatchWriteItemOutput, error) { return n.BatchWriteItem(ctx, in, o...) })
}

func (d *DB) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	return send(d, "TransactWriteItems", true, func(n table.DB) (*dynamodb.TransactWriteItemsOutput, error) {
		return n.TransactWriteItems(ctx, in, o...)
	})
}

// waitUntil returns at t. time.Sleep wakes up to a millisecond late on
// this machine (a 5 ms Latency measured 5.65 ms at the median), so the
// last millisecond is waited by yielding.
func waitUntil(t time.Time) {
	if d := time.Until(t) - time.Millisecond; d > 0 {
		time.Sleep(d)
	}
	for time.Now().Before(t) {
		runtime.Gosched()
	}
}
