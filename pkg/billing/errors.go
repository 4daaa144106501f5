package billing

import (
	"errors"
	"fmt"

	"github.com/baseten/billing-functions/pkg/table"
)

// Code classifies a failure for callers. The set is closed: anything that
// does not fit one of these is CodeInternal.
type Code string

const (
	CodeInvalidRequest  Code = "invalid_request"
	CodeNotFound        Code = "not_found"
	CodeConflict        Code = "conflict"
	CodeBillingDisabled Code = "billing_disabled"
	CodePaymentRequired Code = "payment_required"
	CodeUnavailable     Code = "unavailable"
	CodeInternal        Code = "internal"
)

// codes is the whole closed set; the JSON Schema's error codes are checked
// against it.
var codes = []Code{CodeInvalidRequest, CodeNotFound, CodeConflict, CodeBillingDisabled, CodePaymentRequired, CodeUnavailable, CodeInternal}

// Error is the one error vocabulary of the billing core. Message is safe to
// show to a caller: it never holds a secret, a stack or a vendor's error text.
// Err keeps the underlying cause for logs.
type Error struct {
	Code      Code
	Message   string
	Retryable bool
	// StripeRequestID names the Stripe request that failed, when Stripe
	// was involved.
	StripeRequestID string
	Err             error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted safe message.
// Only CodeUnavailable is retryable.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Retryable: code == CodeUnavailable}
}

// ErrorCode returns the code of the first *Error in err's chain, or
// CodeInternal when there is none.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// AsError returns err as an *Error. An unclassified error becomes an internal
// error whose message says nothing of its cause.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: "internal error", Err: err}
}

// ErrBillingDisabled is returned by every operation when no Stripe API key is
// configured. It is an expected state, not a failure.
var ErrBillingDisabled = &Error{Code: CodeBillingDisabled, Message: "billing is disabled: no Stripe API key is configured"}

// fromTable translates a pkg/table error into the error vocabulary.
func fromTable(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, table.ErrUnavailable), errors.Is(err, table.ErrTransactionConflict):
		return &Error{Code: CodeUnavailable, Message: op + ": DynamoDB is unavailable", Retryable: true, Err: err}
	case errors.Is(err, table.ErrPassBusy):
		return &Error{Code: CodeConflict, Message: op + ": another reconcile step is running", Retryable: true, Err: err}
	case errors.Is(err, table.ErrNotFound):
		return &Error{Code: CodeNotFound, Message: op + ": not found", Err: err}
	case errors.Is(err, table.ErrConditionFailed):
		return &Error{Code: CodeConflict, Message: op + ": changed concurrently", Err: err}
	}
	return &Error{Code: CodeInternal, Message: op + ": internal error", Err: err}
}
