package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// function is one Lambda function running under aws-lambda-rie. RIE runs
// one invocation at a time, as one Lambda execution environment does.
type function struct {
	name, logicalID string
	invokeURL       string
	mu              sync.Mutex
}

func (f *function) invoke(ctx context.Context, payload []byte) (body []byte, functionError string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.invokeURL, bytes.NewReader(payload))
	if err != nil {
		return nil, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("invoke %s: %w", f.name, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	var probe struct {
		ErrorType string `json:"errorType"`
	}
	if json.Unmarshal(body, &probe) == nil && probe.ErrorType != "" {
		functionError = "Unhandled"
	}
	return body, functionError, nil
}

// invokeAPI serves the Lambda Invoke API
// (POST /2015-03-31/functions/{FunctionName}/invocations) for the given
// functions, as `sam local start-lambda` does: the aws CLI, boto3 and the
// aws-sdk-go-v2 Lambda client work against it with --endpoint-url.
func invokeAPI(functions map[string]*function) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if i := strings.LastIndex(name, ":function:"); i >= 0 { // an ARN
			name = name[i+len(":function:"):]
		}
		fn, ok := functions[name]
		if !ok {
			lambdaError(w, http.StatusNotFound, "ResourceNotFoundException",
				fmt.Sprintf("Function not found: arn:aws:lambda:us-east-1:000000000000:function:%s", name))
			return
		}
		if it := r.Header.Get("X-Amz-Invocation-Type"); it != "" && it != "RequestResponse" {
			lambdaError(w, http.StatusBadRequest, "InvalidParameterValueException", "only RequestResponse invocations are served locally")
			return
		}
		payload, err := io.ReadAll(io.LimitReader(r.Body, 6<<20))
		if err != nil {
			lambdaError(w, http.StatusBadRequest, "InvalidRequestContentException", "unreadable payload")
			return
		}
		if len(payload) == 0 {
			payload = []byte("{}")
		}
		body, fnErr, err := fn.invoke(r.Context(), payload)
		if err != nil {
			lambdaError(w, http.StatusBadGateway, "ServiceException", err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amz-Executed-Version", "$LATEST")
		if fnErr != "" {
			w.Header().Set("X-Amz-Function-Error", fnErr)
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		lambdaError(w, http.StatusNotFound, "UnknownOperationException", "only the Invoke API is served locally")
	})
	return mux
}

// lambdaError answers as the Lambda API does, so SDKs raise their typed
// errors.
func lambdaError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", typ)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"Type": "User", "message": msg})
}
