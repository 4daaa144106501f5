package table

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// batchGetMax is the most keys DynamoDB reads in one BatchGetItem.
const (
	batchGetMax = 100
)

// RequestState is a request record as a batch reads it: Request, and
// whether an invocation still holds its lease.
type RequestState struct {
	Request
	Held bool
}

// UsageView is what a batch of usage records needs from the table, read
// with BatchGetItem, strongly consistent: the request records of its
// request_ids, the subscription mirror of its organizations and the
// product mappings of its instance types. Each map holds only what exists.
type UsageView struct {
	Requests      map[string]RequestState
	Subscriptions map[string]Subscription
	Products      map[string]ProductMapping
	Spends        map[string]Spend // by organization
	Terms         Terms
	Sent          int // the BatchGetItem requests it took
}

// ReadUsageView reads the request records, subscriptions, spend records and
// product mappings of a batch, and the catalog's Terms, in ⌈keys/100⌉ requests (more only when DynamoDB
// leaves keys unprocessed).
func (s *Store) ReadUsageView(ctx context.Context, requestIDs, orgIDs, productKeys []string, now time.Time) (UsageView, error) {
	var keys []map[string]types.AttributeValue
	for _, id := range requestIDs {
		keys = append(keys, key("REQ#"+id, "REQUEST"))
	}
	for _, org := range orgIDs {
		keys = append(keys, key(orgPK(org), skSubscription), key(orgPK(org), skSpend))
	}
	keys = append(keys, key(pkCatalog, skTerms))
	for _, k := range productKeys {
		keys = append(keys, productKey(k))
	}
	items, sent, err := s.batchGet(ctx, keys)
	if err != nil {
		return UsageView{}, fmt.Errorf("table.ReadUsageView: %w", err)
	}
	v := UsageView{Requests: map[string]RequestState{}, Subscriptions: map[string]Subscription{}, Products: map[string]ProductMapping{},
		Spends: map[string]Spend{}, Sent: sent}
	for _, item := range items {
		pk, sk := strAttr(item[AttrPK]), strAttr(item[AttrSK])
		switch sk {
		case "REQUEST":
			r := RequestState{Request: Request{Fingerprint: strAttr(item["fingerprint"]), Result: strAttr(item["result"]), Attempt: numAttr(item["attempt"])}}
			if b, ok := item["done"].(*types.AttributeValueMemberBOOL); ok {
				r.Done = b.Value
			}
			r.Held = !r.Done && numAttr(item["lease_until"]) >= now.UnixMilli()
			v.Requests[pk[len("REQ#"):]] = r
		case skSubscription:
			var sub Subscription
			if err := attributevalue.UnmarshalMap(item, &sub); err != nil {
				return UsageView{}, fmt.Errorf("table.ReadUsageView %s: %w", pk, err)
			}
			if sub.SubscriptionID != "" {
				v.Subscriptions[strings.TrimPrefix(pk, orgPK(""))] = sub
			}
		case skSpend:
			sp, err := spendOf(item)
			if err != nil {
				return UsageView{}, fmt.Errorf("table.ReadUsageView %s: %w", pk, err)
			}
			v.Spends[strings.TrimPrefix(pk, orgPK(""))] = sp
		case skTerms:
			if err := attributevalue.UnmarshalMap(item, &v.Terms); err != nil {
				return UsageView{}, fmt.Errorf("table.ReadUsageView terms: %w", err)
			}
		default:
			var m ProductMapping
			if err := attributevalue.UnmarshalMap(item, &m); err != nil {
				return UsageView{}, fmt.Errorf("table.ReadUsageView %s: %w", pk, err)
			}
			v.Products[m.Key] = m
		}
	}
	return v, nil
}

// ReadMirror reads an organization's mirror and the product mappings of
// productKeys (those that exist) in one BatchGetItem: what a change of the
// subscription needs before it calls Stripe.
func (s *Store) ReadMirror(ctx context.Context, orgID string, productKeys []string) (Mirror, map[string]ProductMapping, error) {
	m, products, _, err := s.readMirror(ctx, orgID, productKeys, "")
	return m, products, err
}

// ReadClaimed is ReadMirror with the record of requestID, which
// BeginClaimedRequest began: its attempt, and whether an earlier invocation
// began it too (Retry), in the same request.
func (s *Store) ReadClaimed(ctx context.Context, orgID, requestID string, productKeys []string) (Mirror, map[string]ProductMapping, Request, error) {
	return s.readMirror(ctx, orgID, productKeys, requestID)
}

func (s *Store) readMirror(ctx context.Context, orgID string, productKeys []string, requestID string) (Mirror, map[string]ProductMapping, Request, error) {
	keys := append([]map[string]types.AttributeValue{key(orgPK(orgID), skCustomer), key(orgPK(orgID), skSubscription), key(orgPK(orgID), skSpend),
		key(pkCatalog, skTerms)}, productKeysOf(productKeys)...)
	if requestID != "" {
		keys = append(keys, key("REQ#"+requestID, "REQUEST"))
	}
	items, _, err := s.batchGet(ctx, keys)
	if err != nil {
		return Mirror{}, nil, Request{}, fmt.Errorf("table.ReadMirror %s: %w", orgID, err)
	}
	var m Mirror
	var req Request
	products := map[string]ProductMapping{}
	for _, item := range items {
		if strAttr(item[AttrSK]) == "REQUEST" {
			req = Request{Fingerprint: strAttr(item["fingerprint"]), Attempt: max(numAttr(item["attempt"]), 1), Retry: numAttr(item["begun"]) > 1}
			continue
		}
		if strAttr(item[AttrSK]) == skTerms {
			var t Terms
			if err := attributevalue.UnmarshalMap(item, &t); err != nil {
				return Mirror{}, nil, req, fmt.Errorf("table.ReadMirror %s: %w", orgID, err)
			}
			m.Terms = &t
			continue
		}
		if strAttr(item[AttrPK]) == pkCatalog {
			var p ProductMapping
			if err := attributevalue.UnmarshalMap(item, &p); err != nil {
				return Mirror{}, nil, req, fmt.Errorf("table.ReadMirror %s: %w", orgID, err)
			}
			products[p.Key] = p
			continue
		}
		if err := m.add(item); err != nil {
			return Mirror{}, nil, req, fmt.Errorf("table.ReadMirror %s: %w", orgID, err)
		}
	}
	return m, products, req, nil
}

// productKeysOf returns the item keys of catalog keys, each once (a batch
// refuses a key twice).
func productKeysOf(catalogKeys []string) []map[string]types.AttributeValue {
	var out []map[string]types.AttributeValue
	seen := map[string]bool{}
	for _, k := range catalogKeys {
		if !seen[k] {
			seen[k] = true
			out = append(out, productKey(k))
		}
	}
	return out
}

// FinishedRequest is the stored answer of one request_id.
type FinishedRequest struct {
	RequestID   string
	Fingerprint string
	Result      string
}

// unprocessedBackoff is the first wait before sending again what DynamoDB
// left unprocessed (throttled); it doubles each time.
const unprocessedBackoff = 50 * time.Millisecond

// batchGetConcurrency is how many of a read's BatchGetItem requests are
// in flight at once.
const batchGetConcurrency = 4

// batchGet reads keys, strongly consistent, in requests of at most 100,
// batchGetConcurrency at a time, sending again the keys DynamoDB leaves
// unprocessed. It returns the items and the requests it sent; on a
// failure, the first error, and the requests still to come are cancelled.
// A read of one request (every read of one organization) sends it alone.
func (s *Store) batchGet(ctx context.Context, keys []map[string]types.AttributeValue) ([]map[string]types.AttributeValue, int, error) {
	switch {
	case len(keys) == 0:
		return nil, 0, nil
	case len(keys) <= batchGetMax:
		return s.batchGetChunk(ctx, keys)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		items []map[string]types.AttributeValue
		sent  int
		first error
	)
	slots := make(chan struct{}, batchGetConcurrency)
	for start := 0; start < len(keys); start += batchGetMax {
		chunk := keys[start:min(start+batchGetMax, len(keys))]
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			got, n, err := s.batchGetChunk(ctx, chunk)
			mu.Lock()
			defer mu.Unlock()
			items, sent = append(items, got...), sent+n
			if err != nil && first == nil {
				first = err
				cancel()
			}
		})
	}
	wg.Wait()
	if first != nil {
		return nil, sent, first
	}
	return items, sent, nil
}

// batchGetChunk reads at most 100 keys in one BatchGetItem, and the keys
// DynamoDB leaves unprocessed in more, after a wait that doubles.
func (s *Store) batchGetChunk(ctx context.Context, keys []map[string]types.AttributeValue) ([]map[string]types.AttributeValue, int, error) {
	var items []map[string]types.AttributeValue
	sent := 0
	pending := map[string]types.KeysAndAttributes{s.name: {Keys: keys, ConsistentRead: aws.Bool(true)}}
	for wait := unprocessedBackoff; len(pending) > 0; wait *= 2 {
		out, err := s.db.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: pending})
		sent++
		if err != nil {
			return nil, sent, translate(err)
		}
		items = append(items, out.Responses[s.name]...)
		pending = out.UnprocessedKeys
		if len(pending) > 0 {
			if err := sleep(ctx, wait); err != nil {
				return nil, sent, err
			}
		}
	}
	return items, sent, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return markAs(ErrUnavailable, ctx.Err())
	case <-t.C:
		return nil
	}
}
