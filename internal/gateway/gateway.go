// Package gateway emulates an API Gateway HTTP API (payload format 2.0) in
// front of a Lambda function, for `make dev` and the tests: machines
// without Docker cannot run `sam local`. The raw body and every header pass
// through untouched, so Stripe's signature still verifies.
package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
)

// Invoker runs the function with a JSON event and returns its JSON answer.
type Invoker func(ctx context.Context, event []byte) ([]byte, error)

// Route serves one method and path in front of a function.
type Route struct {
	Method, Path string
	Invoke       Invoker
}

// maxBody is API Gateway's payload limit (10 MB).
const maxBody = 10 << 20

// New returns an http.Handler serving routes; other paths get API Gateway's
// 404 {"message":"Not Found"}.
func New(routes ...Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, rt := range routes {
			if r.Method == rt.Method && r.URL.Path == rt.Path {
				serve(w, r, rt)
				return
			}
		}
		writeJSON(w, http.StatusNotFound, `{"message":"Not Found"}`)
	})
}

func serve(w http.ResponseWriter, r *http.Request, rt Route) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		writeJSON(w, http.StatusRequestEntityTooLarge, `{"message":"Request Entity Too Large"}`)
		return
	}
	ev := Event(r, body, rt.Method+" "+rt.Path)
	raw, _ := json.Marshal(ev)
	out, err := rt.Invoke(r.Context(), raw)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, `{"message":"Internal Server Error"}`)
		return
	}
	var resp events.APIGatewayV2HTTPResponse
	if err := json.Unmarshal(out, &resp); err != nil || resp.StatusCode == 0 {
		writeJSON(w, http.StatusInternalServerError, `{"message":"Internal Server Error"}`)
		return
	}
	for k, v := range resp.Headers {
		w.Header().Set(k, v)
	}
	respBody := []byte(resp.Body)
	if resp.IsBase64Encoded {
		respBody, _ = base64.StdEncoding.DecodeString(resp.Body)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(respBody)
}

// Event builds the payload 2.0 event API Gateway would send for r.
// Header names are lowercased, as API Gateway does; a body that is not
// valid UTF-8 is base64-encoded.
func Event(r *http.Request, body []byte, routeKey string) events.APIGatewayV2HTTPRequest {
	headers := map[string]string{}
	for k, v := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	now := time.Now()
	ev := events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: routeKey, RawPath: r.URL.Path, RawQueryString: r.URL.RawQuery, Headers: headers,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			AccountID: "000000000000", APIID: "local", Stage: "$default", DomainName: r.Host,
			RequestID: fmt.Sprintf("local-%d", now.UnixNano()), Time: now.UTC().Format("02/Jan/2006:15:04:05 -0700"), TimeEpoch: now.UnixMilli(),
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: r.Method, Path: r.URL.Path, Protocol: r.Proto, SourceIP: strings.Split(r.RemoteAddr, ":")[0], UserAgent: r.UserAgent()},
		},
		Body: string(body),
	}
	if !utf8.Valid(body) {
		ev.Body, ev.IsBase64Encoded = base64.StdEncoding.EncodeToString(body), true
	}
	return ev
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}
