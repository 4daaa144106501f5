package table

import (
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
)

var (
	// ErrNotFound is returned when a requested item does not exist.
	ErrNotFound = errors.New("table: not found")
	// ErrConditionFailed is returned when a write's condition does not hold:
	// the item already exists, or a newer version or event was stored first.
	ErrConditionFailed = errors.New("table: condition failed")
	// ErrTransactionConflict is returned when a transaction collided with
	// another write to the same items. Retrying may succeed.
	ErrTransactionConflict = errors.New("table: transaction conflict")
	// ErrUnavailable is returned when DynamoDB throttled or failed after the
	// SDK's own retries. Retrying later may succeed.
	ErrUnavailable = errors.New("table: unavailable")
	// ErrTableExists is returned when a table to create exists already.
	ErrTableExists = errors.New("table: table exists")
)

// ConditionError is a single write whose condition failed. Item is the
// stored item as it was (nil when DynamoDB did not return it). It matches
// ErrConditionFailed with errors.Is.
type ConditionError struct {
	Item    map[string]types.AttributeValue
	message string
}

func (e *ConditionError) Error() string { return fmt.Sprintf("%v: %s", ErrConditionFailed, e.message) }

func (e *ConditionError) Is(target error) bool { return target == ErrConditionFailed }

// CanceledError describes a canceled transaction: Reasons holds the
// cancellation code of each action, in order ("None" for those that
// passed), and Items the stored item of each action whose condition failed.
// It matches ErrConditionFailed, ErrTransactionConflict or ErrUnavailable
// with errors.Is.
type CanceledError struct {
	Reasons []string
	Items   []map[string]types.AttributeValue
	kind    error
}

func (e *CanceledError) Error() string {
	return fmt.Sprintf("%v: transaction canceled [%s]", e.kind, strings.Join(e.Reasons, ", "))
}

func (e *CanceledError) Is(target error) bool { return target == e.kind }

// ConditionFailedAt reports whether action i of the transaction failed its
// condition.
func (e *CanceledError) ConditionFailedAt(i int) bool {
	return i < len(e.Reasons) && e.Reasons[i] == "ConditionalCheckFailed"
}

// translate maps a DynamoDB error to this package's errors. It is the one
// place that knows the SDK's exception types.
func translate(err error) error {
	if err == nil {
		return nil
	}
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return &ConditionError{Item: ccf.Item, message: msg(ccf.Message)}
	}
	var inUse *types.ResourceInUseException
	if errors.As(err, &inUse) {
		return fmt.Errorf("%w: %s", ErrTableExists, msg(inUse.Message))
	}
	var tce *types.TransactionCanceledException
	if errors.As(err, &tce) {
		ce := &CanceledError{kind: ErrUnavailable}
		conditionFailed, conflict := false, false
		for _, r := range tce.CancellationReasons {
			code := "None"
			if r.Code != nil {
				code = *r.Code
			}
			ce.Reasons = append(ce.Reasons, code)
			ce.Items = append(ce.Items, r.Item)
			switch code {
			case "ConditionalCheckFailed":
				conditionFailed = true
			case "TransactionConflict":
				conflict = true
			}
		}
		switch {
		case conditionFailed:
			ce.kind = ErrConditionFailed
		case conflict:
			ce.kind = ErrTransactionConflict
		}
		return ce
	}
	var tip *types.TransactionInProgressException
	if errors.As(err, &tip) {
		return markAs(ErrTransactionConflict, err)
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
			"InternalServerError", "ServiceUnavailable", "LimitExceededException":
			return markAs(ErrUnavailable, err)
		}
		if api.ErrorFault() == smithy.FaultServer {
			return markAs(ErrUnavailable, err)
		}
		return err
	}
	// No API error at all: the request never got an answer (timeout, reset,
	// refused connection, canceled context).
	return markAs(ErrUnavailable, err)
}

// markAs gives err one of our kinds. The SDK's error stays text (%v), not
// wrapped: callers decide on our kinds, never on the SDK's types.
func markAs(kind, err error) error {
	return fmt.Errorf("%w: %v", kind, err) //nolint:errorlint // on purpose, as above
}

func msg(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
