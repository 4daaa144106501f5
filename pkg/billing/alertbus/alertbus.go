// Package alertbus puts spend alerts on an EventBridge bus: the one place
// that knows EventBridge. It lives apart from package billing so that only
// the function that sends alerts (subscribe) links the EventBridge client.
package alertbus

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge/types"

	"github.com/baseten/billing-functions/pkg/billing"
)

// API is the part of the EventBridge client the bus uses.
type API interface {
	PutEvents(ctx context.Context, in *eventbridge.PutEventsInput, opts ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error)
}

// EventBridge puts each alert as one event on the named bus, with source
// billing.AlertSource and detail type billing.AlertDetailType.
type EventBridge struct {
	client API
	bus    string
}

var _ billing.AlertBus = (*EventBridge)(nil)

// New returns the bus named name, through client. It makes no request.
func New(client API, name string) *EventBridge { return &EventBridge{client: client, bus: name} }

// Put puts up to ten events, one per detail, and returns the indexes of
// those EventBridge did not take (all of them when the request failed).
func (e *EventBridge) Put(ctx context.Context, details []string) ([]int, error) {
	entries := make([]types.PutEventsRequestEntry, len(details))
	for i, d := range details {
		entries[i] = types.PutEventsRequestEntry{EventBusName: aws.String(e.bus), Source: aws.String(billing.AlertSource),
			DetailType: aws.String(billing.AlertDetailType), Detail: aws.String(d)}
	}
	all := make([]int, len(details))
	for i := range all {
		all[i] = i
	}
	out, err := e.client.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: entries})
	if err != nil {
		return all, fmt.Errorf("put events: %w", err)
	}
	var refused []int
	for i, entry := range out.Entries {
		if entry.ErrorCode != nil && i < len(details) {
			refused = append(refused, i)
		}
	}
	if len(refused) > 0 {
		return refused, fmt.Errorf("put events: %d of %d entries refused (%s)", len(refused), len(details), aws.ToString(out.Entries[refused[0]].ErrorCode))
	}
	return nil, nil
}
