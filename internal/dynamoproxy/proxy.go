// Package dynamoproxy sits in front of moto's server and gives its
// DynamoDB the isolation real DynamoDB has, and, for the fault suite, the
// failures real DynamoDB has: throttling, 500s, latency and dropped
// connections.
//
// moto's TransactWriteItems deep-copies the tables and, when a condition
// fails, puts the copies back: a transaction failing while another write
// commits erases that write. Real DynamoDB serializes transactions, so this
// proxy runs each TransactWriteItems alone, while other requests pass
// through freely. Every other service (Secrets Manager) passes through
// unchanged, unless a fault names it. `make dev` and every test that uses
// moto (testenv.Main) go through it.
package dynamoproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// Fault makes matching requests fail. It is consumed Count times.
type Fault struct {
	// Op is the operation to fail: a DynamoDB one ("TransactWriteItems",
	// "GetItem"), a Secrets Manager one ("GetSecretValue"), or "" for any.
	Op string
	// Kind is "throttle" (DynamoDB's ProvisionedThroughputExceeded, which
	// the SDK retries), "500" (InternalServerError), "latency" (wait Delay,
	// then serve) or "drop" (close the connection with no answer).
	Kind  string
	Count int
	Delay time.Duration
	// After serves the request first, then drops the answer: the write
	// lands and the caller never learns it.
	After bool
	// OnMatch, when set, runs as a matching request arrives, before the
	// fault acts (a test kills a process here).
	OnMatch func()
}

// Proxy forwards to moto, serializing transactions and acting out faults.
type Proxy struct {
	rp  *httputil.ReverseProxy
	txn sync.RWMutex

	mu     sync.Mutex
	faults []*Fault
	hits   map[string]int
	// actions are the IAM actions each caller's DynamoDB requests needed,
	// and partitions the partition key prefixes they touched ("ORG#",
	// "CATALOG"), by the caller's access key ID (make dev gives each
	// function its own).
	actions, partitions map[string]map[string]bool
}

// New returns a proxy to target (moto's URL).
func New(target *url.URL) *Proxy {
	rp := httputil.NewSingleHostReverseProxy(target)
	// A connection per request: moto cuts responses on reused keep-alive
	// connections under load.
	rp.Transport = &http.Transport{DisableKeepAlives: true}
	rp.ErrorLog = log.New(io.Discard, "", 0) // callers that give up are the point of some faults
	return &Proxy{rp: rp, hits: map[string]int{}, actions: map[string]map[string]bool{}, partitions: map[string]map[string]bool{}}
}

// Inject adds a fault; faults match in the order they were added.
func (p *Proxy) Inject(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, &f)
}

// Clear removes the faults not yet consumed and returns how many there were.
func (p *Proxy) Clear() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.faults)
	p.faults = nil
	return n
}

// Hits returns how many requests of an operation ("" for all) arrived.
func (p *Proxy) Hits(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if op == "" {
		n := 0
		for _, c := range p.hits {
			n += c
		}
		return n
	}
	return p.hits[op]
}

// operation names a request by its X-Amz-Target: "DynamoDB_20120810.GetItem"
// and "secretsmanager.GetSecretValue" are GetItem and GetSecretValue.
func operation(r *http.Request) (service, op string) {
	target := r.Header.Get("X-Amz-Target")
	service, op, _ = strings.Cut(target, ".")
	return service, op
}

func (p *Proxy) take(op string) *Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hits[op]++
	for i, f := range p.faults {
		if f.Op == "" || f.Op == op {
			f.Count--
			if f.Count <= 0 {
				p.faults = append(p.faults[:i], p.faults[i+1:]...)
			}
			return f
		}
	}
	return nil
}

// Actions returns, by access key ID, the IAM actions the DynamoDB requests
// signed with that key needed, sorted: an operation's own action, and for
// TransactWriteItems the action of each of its items (IAM authorizes a
// transaction item by item). A read of an index is "dynamodb:Query@index":
// IAM authorizes it on the index's ARN.
func (p *Proxy) Actions() map[string][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]string{}
	for key, set := range p.actions {
		for a := range set {
			out[key] = append(out[key], "dynamodb:"+a)
		}
		sort.Strings(out[key])
	}
	return out
}

// Partitions returns, by access key ID, the partition key prefixes of the
// table's items the requests signed with that key read or wrote (the text
// up to and including its first "#", or the whole key): what a
// dynamodb:LeadingKeys condition would have to allow. Index reads are not
// counted: their partition key is another attribute.
func (p *Proxy) Partitions() map[string][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]string{}
	for key, set := range p.partitions {
		for prefix := range set {
			out[key] = append(out[key], prefix)
		}
		sort.Strings(out[key])
	}
	return out
}

// keyed is the part of a request (or of a transaction item) that names
// items by their partition key.
type keyed struct {
	Key, Item                 map[string]map[string]any
	KeyConditionExpression    string
	ExpressionAttributeValues map[string]map[string]any
}

// partition returns the partition key prefix k names, or "".
func (k keyed) partition() string {
	pk := ""
	for _, m := range []map[string]map[string]any{k.Key, k.Item} {
		if v, ok := m["pk"]["S"].(string); ok {
			pk = v
		}
	}
	if _, rest, ok := strings.Cut(k.KeyConditionExpression, "pk = "); ok && pk == "" {
		name, _, _ := strings.Cut(rest, " ")
		pk, _ = k.ExpressionAttributeValues[name]["S"].(string)
	}
	if i := strings.Index(pk, "#"); i >= 0 {
		return pk[:i+1]
	}
	return pk
}

// partitionOf returns the partition key prefix a transaction item or a
// batch's write names.
func partitionOf(raw json.RawMessage) string {
	var k keyed
	_ = json.Unmarshal(raw, &k)
	return k.partition()
}

// record notes the IAM actions a DynamoDB request needs, and the
// partitions it touches, for its signer.
func (p *Proxy) record(r *http.Request, op string) {
	_, cred, _ := strings.Cut(r.Header.Get("Authorization"), "Credential=")
	key, _, _ := strings.Cut(cred, "/")
	body, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return
	}
	var req struct {
		keyed
		IndexName     string
		TransactItems []map[string]json.RawMessage
		RequestItems  map[string]json.RawMessage
	}
	_ = json.Unmarshal(body, &req)
	needed, partitions := []string{op}, []string{req.partition()}
	switch {
	case req.IndexName != "":
		needed, partitions = []string{op + "@index"}, nil // authorized on the index's ARN
	case op == "TransactWriteItems":
		// IAM authorizes a transaction item by item.
		needed = nil
		byKind := map[string]string{"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}
		for _, it := range req.TransactItems {
			for kind, raw := range it {
				needed = append(needed, byKind[kind])
				partitions = append(partitions, partitionOf(raw))
			}
		}
	case op == "BatchWriteItem":
		// A batch is authorized as itself (dynamodb:BatchWriteItem).
		for _, raw := range req.RequestItems {
			var writes []map[string]json.RawMessage
			_ = json.Unmarshal(raw, &writes)
			for _, w := range writes {
				for _, r := range w {
					partitions = append(partitions, partitionOf(r))
				}
			}
		}
	case op == "BatchGetItem":
		for _, raw := range req.RequestItems {
			var get struct{ Keys []map[string]map[string]any }
			_ = json.Unmarshal(raw, &get)
			for _, k := range get.Keys {
				partitions = append(partitions, keyed{Key: k}.partition())
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for set, values := range map[*map[string]map[string]bool][]string{&p.actions: needed, &p.partitions: partitions} {
		if (*set)[key] == nil {
			(*set)[key] = map[string]bool{}
		}
		for _, v := range values {
			if v != "" {
				(*set)[key][v] = true
			}
		}
	}
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	service, op := operation(r)
	if service == "DynamoDB_20120810" {
		p.record(r, op)
	}
	f := p.take(op)
	if f != nil && f.OnMatch != nil {
		f.OnMatch()
	}
	if f != nil {
		switch {
		case f.Kind == "latency":
			// If the caller gives up meanwhile, the request still goes
			// through, as one already sent to DynamoDB would.
			time.Sleep(f.Delay)
			r = r.WithContext(context.WithoutCancel(r.Context()))
			// Hidden from the reverse proxy, which would otherwise cancel
			// the forwarded request when the caller hangs up (CloseNotifier).
			w = plainWriter{w}
		case f.Kind == "drop" && f.After:
			rec := httptest.NewRecorder()
			p.forward(rec, r, service, op)
			drop(w)
			return
		case f.Kind == "drop":
			drop(w)
			return
		case f.Kind == "throttle":
			awsError(w, http.StatusBadRequest, service, "ProvisionedThroughputExceededException",
				"The level of configured provisioned throughput for the table was exceeded (injected).")
			return
		case f.Kind == "500":
			awsError(w, http.StatusInternalServerError, service, "InternalServerError", "Internal server error (injected).")
			return
		}
	}
	p.forward(w, r, service, op)
}

func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, service, op string) {
	switch {
	case service == "DynamoDB_20120810" && op == "TransactWriteItems":
		p.txn.Lock()
		defer p.txn.Unlock()
	case service == "DynamoDB_20120810":
		p.txn.RLock()
		defer p.txn.RUnlock()
	}
	p.rp.ServeHTTP(w, r)
}

// awsError answers as the AWS JSON protocols do.
func awsError(w http.ResponseWriter, status int, service, code, msg string) {
	prefix := "com.amazonaws.dynamodb.v20120810#"
	if service != "DynamoDB_20120810" {
		prefix = ""
	}
	body := fmt.Sprintf(`{"__type":%q,"message":%q}`, prefix+code, msg)
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("X-Amzn-ErrorType", code)
	w.Header().Set("X-Amz-Crc32", fmt.Sprint(crc32.ChecksumIEEE([]byte(body))))
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// drop closes the connection without an answer.
func drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// plainWriter is an http.ResponseWriter and nothing more: no CloseNotifier.
type plainWriter struct{ w http.ResponseWriter }

func (p plainWriter) Header() http.Header         { return p.w.Header() }
func (p plainWriter) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p plainWriter) WriteHeader(code int)        { p.w.WriteHeader(code) }
