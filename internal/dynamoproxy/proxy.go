// Package dynamoproxy sits in front of moto's server and gives its
// DynamoDB the isolation real DynamoDB has. moto's TransactWriteItems
// deep-copies the tables and, when a condition fails, puts the copies back:
// a transaction failing while another write commits erases that write.
// Real DynamoDB serializes transactions, so this proxy runs each
// TransactWriteItems alone, while other requests pass through freely.
// Every other service (Secrets Manager) passes through unchanged. `make dev`
// and every test that uses moto (testenv.Main) go through it.
package dynamoproxy

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
)

// New returns a reverse proxy to target (moto's URL).
func New(target *url.URL) http.Handler {
	rp := httputil.NewSingleHostReverseProxy(target)
	// A connection per request: moto cuts responses on reused keep-alive
	// connections under load.
	rp.Transport = &http.Transport{DisableKeepAlives: true}
	var mu sync.RWMutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := r.Header.Get("X-Amz-Target")
		switch {
		case op == "DynamoDB_20120810.TransactWriteItems":
			mu.Lock()
			defer mu.Unlock()
		case strings.HasPrefix(op, "DynamoDB_20120810."):
			mu.RLock()
			defer mu.RUnlock()
		}
		rp.ServeHTTP(w, r)
	})
}
