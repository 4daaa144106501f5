package billing

// Response is the JSON envelope every invoked function answers with:
// {"ok": true, "result": …} or {"ok": false, "error": {…}}.
type Response struct {
	OK     bool       `json:"ok"`
	Result any        `json:"result,omitempty"`
	Error  *ErrorBody `json:"error,omitempty"`
}

// ErrorBody is the safe, caller-facing form of an *Error.
type ErrorBody struct {
	Code            Code   `json:"code"`
	Message         string `json:"message"`
	Retryable       bool   `json:"retryable"`
	StripeRequestID string `json:"stripe_request_id,omitempty"`
}

// Success wraps a result.
func Success(result any) Response { return Response{OK: true, Result: result} }

// Failure wraps err. An unclassified error is reported as internal, without
// its text.
func Failure(err error) Response {
	e := AsError(err)
	return Response{Error: &ErrorBody{Code: e.Code, Message: e.Message, Retryable: e.Retryable, StripeRequestID: e.StripeRequestID}}
}
