// Command hello is the cold-start baseline of `make bench`: an
// aws-lambda-go function that does nothing, built like the real ones.
package main

import (
	"context"
	"encoding/json"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(ctx context.Context, in json.RawMessage) (string, error) { return "hello", nil })
}
