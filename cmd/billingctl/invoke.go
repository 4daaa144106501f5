package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudformation"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
)

// target is where billingctl sends its calls.
type target struct {
	endpoint string // a local Invoke API; used unless stage is set
	stage    string
	stack    string
	function string
}

// invoke calls the function whose logical ID is given (SubscribeFunction,
// UpsertProductsFunction) with payload and decodes its envelope.
func (t target) invoke(ctx context.Context, logicalID string, payload any) (envelope, error) {
	client, name, err := t.resolve(ctx, logicalID)
	if err != nil {
		return envelope{}, err
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return envelope{}, err
	}
	out, err := client.Invoke(ctx, &lambda.InvokeInput{FunctionName: &name, Payload: raw})
	if err != nil {
		if t.stage == "" {
			return envelope{}, fmt.Errorf("invoke %s at %s: %w\n  next: start the local setup with `make dev`, or pass --stage", name, t.endpoint, err)
		}
		return envelope{}, fmt.Errorf("invoke %s: %w", name, err)
	}
	if out.FunctionError != nil {
		return envelope{}, fmt.Errorf("%s failed (%s): %s", name, *out.FunctionError, out.Payload)
	}
	var env envelope
	if err := json.Unmarshal(out.Payload, &env); err != nil {
		return envelope{}, fmt.Errorf("%s answered something that is not an envelope: %s", name, out.Payload)
	}
	return env, nil
}

// resolve returns a Lambda client and the function to call: the local
// Invoke API with the logical ID as name, or the stage's function ARN from
// its stack's outputs.
func (t target) resolve(ctx context.Context, logicalID string) (*lambda.Client, string, error) {
	if t.stage == "" {
		// The local Invoke API checks no signature; any credentials do.
		cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"),
			config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")))
		if err != nil {
			return nil, "", err
		}
		name := logicalID
		if t.function != "" {
			name = t.function
		}
		return lambda.NewFromConfig(cfg, func(o *lambda.Options) { o.BaseEndpoint = aws.String(t.endpoint) }), name, nil
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, "", err
	}
	if t.function != "" {
		return lambda.NewFromConfig(cfg), t.function, nil
	}
	stack := t.stack
	if stack == "" {
		stack = "billing-functions-" + t.stage
	}
	out, err := cloudformation.NewFromConfig(cfg).DescribeStacks(ctx, &cloudformation.DescribeStacksInput{StackName: &stack})
	if err != nil {
		return nil, "", fmt.Errorf("read the outputs of stack %s: %w", stack, err)
	}
	want := logicalID + "Arn"
	for _, s := range out.Stacks {
		for _, o := range s.Outputs {
			if aws.ToString(o.OutputKey) == want {
				return lambda.NewFromConfig(cfg), aws.ToString(o.OutputValue), nil
			}
		}
	}
	return nil, "", fmt.Errorf("stack %s has no output %s: was it deployed from this template?", stack, want)
}
