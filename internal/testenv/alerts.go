package testenv

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// AlertBus is an EventBridge bus on moto whose every event a rule delivers
// to an SQS queue, as the core app's rule would: what a test reads back is
// what EventBridge took.
type AlertBus struct {
	Name   string
	Client *eventbridge.Client
	queue  *sqs.Client
	url    string
}

// NewAlertBus makes a bus, a queue and a rule from one to the other on
// moto for t, and deletes them when t ends.
func NewAlertBus(t testing.TB) *AlertBus {
	t.Helper()
	ctx := context.Background()
	cfg := AWSConfig(Moto(t))
	b := &AlertBus{Name: UniqueName(t, "alerts"), Client: eventbridge.NewFromConfig(cfg), queue: sqs.NewFromConfig(cfg)}
	if _, err := b.Client.CreateEventBus(ctx, &eventbridge.CreateEventBusInput{Name: &b.Name}); err != nil {
		t.Fatalf("create bus: %v", err)
	}
	q, err := b.queue.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &b.Name})
	if err != nil {
		t.Fatalf("create queue: %v", err)
	}
	b.url = *q.QueueUrl
	attrs, err := b.queue.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatalf("queue arn: %v", err)
	}
	pattern, _ := json.Marshal(map[string]any{"source": []string{"billing-functions"}})
	if _, err := b.Client.PutRule(ctx, &eventbridge.PutRuleInput{Name: &b.Name, EventBusName: &b.Name, EventPattern: aws.String(string(pattern))}); err != nil {
		t.Fatalf("put rule: %v", err)
	}
	if _, err := b.Client.PutTargets(ctx, &eventbridge.PutTargetsInput{Rule: &b.Name, EventBusName: &b.Name,
		Targets: []ebtypes.Target{{Id: aws.String("queue"), Arn: aws.String(attrs.Attributes["QueueArn"])}}}); err != nil {
		t.Fatalf("put targets: %v", err)
	}
	t.Cleanup(func() {
		_, _ = b.Client.RemoveTargets(ctx, &eventbridge.RemoveTargetsInput{Rule: &b.Name, EventBusName: &b.Name, Ids: []string{"queue"}})
		_, _ = b.Client.DeleteRule(ctx, &eventbridge.DeleteRuleInput{Name: &b.Name, EventBusName: &b.Name})
		_, _ = b.Client.DeleteEventBus(ctx, &eventbridge.DeleteEventBusInput{Name: &b.Name})
		_, _ = b.queue.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: &b.url})
	})
	return b
}

// Events returns the detail of every event delivered so far, and removes
// them from the queue.
func (b *AlertBus) Events(t testing.TB) []json.RawMessage {
	t.Helper()
	return drainEvents(t, b.queue, b.url)
}

// QueueEvents is Events for a queue a rule already delivers to, by name, on
// the moto server at awsURL (make dev's alert queue).
func QueueEvents(t testing.TB, awsURL, name string) []json.RawMessage {
	t.Helper()
	q := sqs.NewFromConfig(AWSConfig(awsURL))
	u, err := q.GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: &name})
	if err != nil {
		t.Fatalf("the queue %s: %v", name, err)
	}
	return drainEvents(t, q, *u.QueueUrl)
}

// drainEvents receives and deletes every message of a queue of EventBridge
// events, and returns their details.
func drainEvents(t testing.TB, q *sqs.Client, url string) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	for {
		m, err := q.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: &url, MaxNumberOfMessages: 10})
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if len(m.Messages) == 0 {
			return out
		}
		for _, msg := range m.Messages {
			var ev struct {
				Detail json.RawMessage `json:"detail"`
			}
			if err := json.Unmarshal([]byte(*msg.Body), &ev); err != nil {
				t.Fatalf("an event that is not JSON: %.200s", *msg.Body)
			}
			out = append(out, ev.Detail)
			_, _ = q.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: &url, ReceiptHandle: msg.ReceiptHandle})
		}
	}
}
