package testenv

import (
	"context"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/baseten/billing-functions/pkg/table"
)

// Isolated gives moto's DynamoDB the isolation real DynamoDB has. moto's
// TransactWriteItems deep-copies the tables first and, when a condition
// fails, puts the copies back: a transaction that fails while another
// request commits erases that commit. Real DynamoDB serializes
// transactions, so concurrent tests run each transaction alone here.
func Isolated(db table.DB) table.DB { return &isolated{DB: db} }

type isolated struct {
	table.DB
	mu sync.RWMutex
}

func (i *isolated) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, o ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.DB.TransactWriteItems(ctx, in, o...)
}

func (i *isolated) PutItem(ctx context.Context, in *dynamodb.PutItemInput, o ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.DB.PutItem(ctx, in, o...)
}

func (i *isolated) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, o ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.DB.UpdateItem(ctx, in, o...)
}

func (i *isolated) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, o ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.DB.DeleteItem(ctx, in, o...)
}
