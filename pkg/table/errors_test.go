package table

import (
	"errors"
	"net"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

func TestTranslate_ClassifiesDynamoDBErrors(t *testing.T) {
	cases := []struct {
		name string
		in   error
		want error
	}{
		{"condition failed", &types.ConditionalCheckFailedException{Message: aws.String("x")}, ErrConditionFailed},
		{"throttled", &types.ProvisionedThroughputExceededException{}, ErrUnavailable},
		{"no answer", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, ErrUnavailable},
		{"transaction condition", &types.TransactionCanceledException{CancellationReasons: []types.CancellationReason{
			{Code: aws.String("None")}, {Code: aws.String("ConditionalCheckFailed")}}}, ErrConditionFailed},
		{"transaction conflict", &types.TransactionCanceledException{CancellationReasons: []types.CancellationReason{
			{Code: aws.String("TransactionConflict")}}}, ErrTransactionConflict},
		{"transaction throttled", &types.TransactionCanceledException{CancellationReasons: []types.CancellationReason{
			{Code: aws.String("ThrottlingError")}}}, ErrUnavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := translate(c.in); !errors.Is(got, c.want) {
				t.Fatalf("translate(%T) = %v, want %v", c.in, got, c.want)
			}
		})
	}
}
