package billing

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/baseten/billing-functions/pkg/table"
)

// Command is one request of the core app to the subscribe function. Its
// contract is in subscribe.schema.json and the README.
type Command struct {
	Action        string   `json:"action"`
	OrgID         string   `json:"org_id"`
	RequestID     string   `json:"request_id"`
	Email         string   `json:"email"`
	Name          string   `json:"name"`
	Tier          string   `json:"tier"`
	InstanceTypes []string `json:"instance_types"`
	TrialDays     *int64   `json:"trial_days"`
	Proration     string   `json:"proration"`
	InstanceType  string   `json:"instance_type"`
	Minutes       *int64   `json:"minutes"`
	Timestamp     *int64   `json:"timestamp"`
	AtPeriodEnd   *bool    `json:"at_period_end"`
	ReturnURL     string   `json:"return_url"`
	SuccessURL    string   `json:"success_url"`
	CancelURL     string   `json:"cancel_url"`
	Limit         *int64   `json:"limit"`
	StartingAfter string   `json:"starting_after"`
	Repair        bool     `json:"repair"`
	Replay        bool     `json:"replay"`
	DryRun        bool     `json:"dry_run"`
	Page          string   `json:"page"`
	Amount        *int64   `json:"amount"`
	Currency      string   `json:"currency"`
	// Records are record_usage_batch's usage records, each decoded on its
	// own (omitted from the fingerprint of every other action).
	Records []json.RawMessage `json:"records,omitempty"`

	fields []string // the fields present, for the fingerprint
	// attempt and retry come from the request record: which attempt of the
	// request_id this is (its Stripe keys are its own), and whether an
	// earlier one began it, so that what it did in Stripe must be read.
	attempt int64
	retry   bool
}

// action is one subscribe action, declared once: its fields besides
// action, org_id and request_id, which of them are required, whether it
// changes something (and so needs a request_id and answers once per
// request_id), whether it is about the whole deployment rather than one
// organization, and what carries it out. The decoder, the dispatcher, the
// JSON Schema test and the fuzz oracle all read this table.
type action struct {
	fields   []string
	required []string
	mutating bool
	noOrg    bool
	// whenDisabled: the action answers when billing is disabled, instead
	// of billing_disabled.
	whenDisabled bool
	// maxSize bounds the request's size; 0 is MaxCommandSize.
	maxSize int
	// ownRecord: the action keeps its request_id's answer itself (the
	// usage path, in batches), instead of Run.
	ownRecord bool
	// claims: one request at a time per organization (subscribe, Checkout):
	// Run takes the organization's claim with the request_id and releases
	// it with the answer, each in one transaction.
	claims bool
	run    func(s *Service, ctx context.Context, cmd Command) (any, error)
}

// actions are the subscribe function's actions, by name.
var actions = map[string]action{
	"get_config": {noOrg: true, whenDisabled: true, run: (*Service).getConfig},
	"ensure_customer": {fields: []string{"email", "name"}, required: []string{"email"}, mutating: true,
		run: (*Service).ensureCustomerAction},
	"subscribe": {fields: []string{"tier", "email", "name", "instance_types", "trial_days"}, required: []string{"tier", "email"},
		mutating: true, claims: true, run: result((*Service).subscribe)},
	"change_tier": {fields: []string{"tier", "proration"}, required: []string{"tier"}, mutating: true,
		run: result((*Service).changeTier)},
	"set_instance_types": {fields: []string{"instance_types"}, required: []string{"instance_types"}, mutating: true,
		run: result((*Service).setInstanceTypes)},
	"record_usage": {fields: []string{"instance_type", "minutes", "timestamp"}, required: []string{"instance_type", "minutes"},
		mutating: true, ownRecord: true, run: (*Service).recordUsageAction},
	"cancel":     {fields: []string{"at_period_end"}, mutating: true, run: result((*Service).cancel)},
	"resume":     {mutating: true, run: result((*Service).resume)},
	"get_status": {run: func(s *Service, ctx context.Context, cmd Command) (any, error) { return s.status(ctx, cmd.OrgID) }},
	"create_portal_session": {fields: []string{"return_url"}, required: []string{"return_url"},
		run: (*Service).portalAction},
	"create_checkout_session": {fields: []string{"tier", "email", "name", "instance_types", "trial_days", "success_url", "cancel_url"},
		required: []string{"tier", "email", "success_url", "cancel_url"}, mutating: true, claims: true, run: (*Service).createCheckoutSession},
	"list_invoices":   {fields: []string{"limit", "starting_after"}, run: result((*Service).listInvoices)},
	"preview_invoice": {run: result((*Service).previewInvoice)},
	// check_access answers with billing disabled too: an empty key allows
	// everything.
	"check_access": {fields: []string{"instance_type"}, required: []string{"instance_type"}, whenDisabled: true,
		run: result((*Service).checkAccess)},
	"set_spend_cap": {fields: []string{"amount", "currency"}, required: []string{"amount"}, mutating: true,
		run: result((*Service).setSpendCap)},
	// reconcile is for operators and the daily schedule: its writes
	// (repair, replay) are idempotent, so it needs no request_id.
	"reconcile": {fields: []string{"repair", "replay"}, noOrg: true, run: func(s *Service, ctx context.Context, cmd Command) (any, error) {
		return s.reconcileRun(ctx, ReconcileOptions{Repair: cmd.Repair, Replay: cmd.Replay})
	}},
	// migrate_prices is for operators: its moves carry idempotency keys
	// derived from the move, and it keeps its own cursor.
	"migrate_prices": {fields: []string{"dry_run", "proration", "page"}, noOrg: true, run: func(s *Service, ctx context.Context, cmd Command) (any, error) {
		return s.migrateRun(ctx, MigrateRequest{DryRun: cmd.DryRun, Proration: cmd.Proration, Page: cmd.Page})
	}},
}

// record_usage_batch decodes each record as a record_usage command
// (DecodeCommand, which reads this table), so it joins the table at init.
// Each record has its own request_id; the batch itself is not a request to
// answer once.
func init() {
	actions["record_usage_batch"] = action{fields: []string{"records"}, required: []string{"records"}, noOrg: true,
		maxSize: MaxUsageBatchSize, run: result((*Service).recordUsageBatch)}
}

// result adapts an action that answers a typed result.
func result[T any](run func(*Service, context.Context, Command) (T, error)) func(*Service, context.Context, Command) (any, error) {
	return func(s *Service, ctx context.Context, cmd Command) (any, error) { return run(s, ctx, cmd) }
}

// The proration behaviours a change of items may take (change_tier,
// migrate_prices).
var prorations = []string{"none", "create_prorations", "always_invoice"}

var (
	orgIDPattern     = newPattern(`^[A-Za-z0-9_-]+$`, 1, 64)
	requestIDPattern = newPattern(`^[A-Za-z0-9_.:-]+$`, 1, 128)
	stripeIDPattern  = newPattern(`^[A-Za-z0-9_]+$`, 1, 255)
	// A search's next_page token is opaque; Stripe takes up to 5000
	// characters (FIDELITY.md, rule 17).
	pageTokenPattern = newPattern(`^[A-Za-z0-9_=+/.:-]+$`, 1, 5000)
)

// MaxCommandSize bounds a request; a real one is a few hundred bytes.
// MaxUsageBatchSize bounds a record_usage_batch: 500 records of up to
// about 300 bytes each.
const (
	MaxCommandSize    = 16 << 10
	MaxUsageBatchSize = 256 << 10
)

// DecodeCommand reads and validates a request. Its errors are
// invalid_request and name the field; they never quote the input.
func DecodeCommand(raw []byte) (Command, error) {
	var c Command
	if len(raw) > MaxUsageBatchSize {
		return c, Errorf(CodeInvalidRequest, "the request is over %d bytes", MaxUsageBatchSize)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return c, Errorf(CodeInvalidRequest, "the request must be a JSON object")
	}
	if err := json.Unmarshal(fields["action"], &c.Action); err != nil || c.Action == "" {
		return c, Errorf(CodeInvalidRequest, "action: a string is required")
	}
	spec, ok := actions[c.Action]
	if !ok {
		return c, Errorf(CodeInvalidRequest, "action: unknown action (want one of %s)", strings.Join(actionNames(), ", "))
	}
	if limit := cmp.Or(spec.maxSize, MaxCommandSize); len(raw) > limit {
		return c, Errorf(CodeInvalidRequest, "the request is over %d bytes", limit)
	}
	allowed := append([]string{"action", "org_id", "request_id"}, spec.fields...)
	for name := range fields {
		if !slices.Contains(allowed, name) {
			return c, Errorf(CodeInvalidRequest, "%s: not a field of %s", safeName(name), c.Action)
		}
		if name != "action" && name != "org_id" && name != "request_id" {
			c.fields = append(c.fields, name)
		}
	}
	sort.Strings(c.fields)
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&c); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field == "records":
			return c, Errorf(CodeInvalidRequest, "records: must be an array of usage records")
		case errors.As(err, &te):
			return c, Errorf(CodeInvalidRequest, "%s: must be a %s", te.Field, te.Type)
		}
		return c, Errorf(CodeInvalidRequest, "the request is malformed")
	}
	if !spec.noOrg && !orgIDPattern.MatchString(c.OrgID) {
		return c, Errorf(CodeInvalidRequest, "org_id: required, 1-64 characters of [A-Za-z0-9_-]")
	}
	if spec.mutating && !requestIDPattern.MatchString(c.RequestID) {
		return c, Errorf(CodeInvalidRequest, "request_id: required for %s, 1-128 characters of [A-Za-z0-9_.:-]", c.Action)
	}
	if c.RequestID != "" && !requestIDPattern.MatchString(c.RequestID) {
		return c, Errorf(CodeInvalidRequest, "request_id: 1-128 characters of [A-Za-z0-9_.:-]")
	}
	for _, f := range spec.required {
		if _, ok := fields[f]; !ok {
			return c, Errorf(CodeInvalidRequest, "%s: required for %s", f, c.Action)
		}
	}
	return c, c.validate()
}

func (c Command) validate() error {
	switch {
	case c.Email != "" && (len(c.Email) > 254 || !validEmail(c.Email)):
		return Errorf(CodeInvalidRequest, "email: not an email address")
	case slices.Contains(c.fields, "email") && c.Email == "":
		return Errorf(CodeInvalidRequest, "email: must not be empty")
	case len(c.Name) > 256:
		return Errorf(CodeInvalidRequest, "name: at most 256 characters")
	case c.TrialDays != nil && (*c.TrialDays < 1 || *c.TrialDays > 730):
		return Errorf(CodeInvalidRequest, "trial_days: an integer from 1 to 730")
	case c.Minutes != nil && (*c.Minutes < 1 || *c.Minutes > 1_000_000):
		return Errorf(CodeInvalidRequest, "minutes: an integer from 1 to 1,000,000")
	case c.Proration != "" && !slices.Contains(prorations, c.Proration):
		return Errorf(CodeInvalidRequest, "proration: one of %s", strings.Join(prorations, ", "))
	case c.Page != "" && !pageTokenPattern.MatchString(c.Page):
		return Errorf(CodeInvalidRequest, "page: the next_page of the answer before")
	case c.Page != "" && !c.DryRun:
		return Errorf(CodeInvalidRequest, "page: only with dry_run (a migration keeps its own cursor)")
	case c.Action == "record_usage_batch" && (len(c.Records) < 1 || len(c.Records) > MaxUsageBatch):
		return Errorf(CodeInvalidRequest, "records: from 1 to %d usage records", MaxUsageBatch)
	case c.Amount != nil && (*c.Amount < 1 || *c.Amount > MaxSpendCap):
		return Errorf(CodeInvalidRequest, "amount: an integer of minor units from 1 to %d, or null to remove the cap", MaxSpendCap)
	case c.Amount != nil && !slices.Contains(knownCurrencies, c.Currency):
		return Errorf(CodeInvalidRequest, "currency: required with an amount, a lowercase ISO code such as usd")
	case c.Amount == nil && c.Currency != "":
		return Errorf(CodeInvalidRequest, "currency: only with an amount")
	case len(c.InstanceTypes) > MaxCatalogEntries:
		return Errorf(CodeInvalidRequest, "instance_types: at most %d", MaxCatalogEntries)
	}
	seen := map[string]bool{}
	for _, k := range c.InstanceTypes {
		if !keyPattern.MatchString(k) {
			return Errorf(CodeInvalidRequest, "instance_types: %q is not a catalog key", safeName(k))
		}
		if seen[k] {
			return Errorf(CodeInvalidRequest, "instance_types: %s is listed twice", k)
		}
		seen[k] = true
	}
	if slices.Contains(c.fields, "instance_type") && !keyPattern.MatchString(c.InstanceType) {
		return Errorf(CodeInvalidRequest, "instance_type: %q is not a catalog key", safeName(c.InstanceType))
	}
	for field, u := range map[string]string{"return_url": c.ReturnURL, "success_url": c.SuccessURL, "cancel_url": c.CancelURL} {
		if slices.Contains(c.fields, field) {
			if err := checkReturnURL(field, u); err != nil {
				return err
			}
		}
	}
	switch {
	case c.Limit != nil && (*c.Limit < 1 || *c.Limit > 100):
		return Errorf(CodeInvalidRequest, "limit: an integer from 1 to 100")
	case slices.Contains(c.fields, "starting_after") && !stripeIDPattern.MatchString(c.StartingAfter):
		return Errorf(CodeInvalidRequest, "starting_after: an invoice ID from an earlier page")
	}
	return nil
}

// fingerprint identifies what a request asks (its action, org and fields),
// so that a request_id reused with other fields is told apart.
func (c Command) fingerprint() string {
	b, _ := json.Marshal(c)
	h := sha256.Sum256(append([]byte(strings.Join(c.fields, ",")+"|"), b...))
	return hex.EncodeToString(h[:16])
}

func actionNames() []string {
	var out []string
	for a := range actions {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// safeName shortens and cleans a caller-supplied name for a message.
func safeName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}

// requestLease is how long an invocation holds a request_id; a Lambda
// timeout is shorter, so a lapsed lease means the invocation died.
const (
	requestLease = 60 * time.Second
	requestKeep  = 7 * 24 * time.Hour
)

// HandleSubscribe is the subscribe function's handler, invoked by the core
// app. It always answers with a Response envelope; only a failure to answer
// at all is a Lambda error.
func (s *Service) HandleSubscribe(ctx context.Context, raw json.RawMessage) (Response, error) {
	start, before := time.Now(), s.stripeCounts()
	cmd, err := DecodeCommand(raw)
	var resp Response
	if err != nil {
		resp = Failure(err)
	} else {
		resp = s.Run(ctx, cmd)
	}
	attrs := []any{"action", cmd.Action, "org_id", cmd.OrgID, "request_id", cmd.RequestID, "ok", resp.OK, "duration_ms", time.Since(start).Milliseconds()}
	level := "info"
	if resp.Error != nil {
		attrs = append(attrs, "outcome", resp.Error.Code, "error", resp.Error.Message, "stripe_request_id", resp.Error.StripeRequestID)
		if resp.Error.Code == CodeInternal || resp.Error.Code == CodeUnavailable {
			level = "error"
		}
	} else {
		attrs = append(attrs, "outcome", "ok")
	}
	if level == "error" {
		s.log.ErrorContext(ctx, "subscribe", attrs...)
	} else {
		s.log.InfoContext(ctx, "subscribe", attrs...)
	}
	s.emitEMF("subscribe", stripeMetrics, s.addStripeCounts(map[string]int{}, before))
	return resp, nil
}

// Run carries out a decoded command, once per request_id.
func (s *Service) Run(ctx context.Context, cmd Command) Response {
	act := actions[cmd.Action]
	if !act.whenDisabled {
		if _, err := s.enabledKeys(ctx); err != nil {
			return Failure(err)
		}
	}
	if !act.mutating || act.ownRecord {
		return s.dispatch(ctx, act, cmd)
	}
	begin := func() (table.Request, error) {
		if act.claims {
			return s.store.BeginClaimedRequest(ctx, cmd.RequestID, cmd.fingerprint(), cmd.OrgID, time.Now(), requestLease, requestKeep)
		}
		return s.store.BeginRequest(ctx, cmd.RequestID, cmd.fingerprint(), time.Now(), requestLease, requestKeep)
	}
	prev, err := begin()
	switch {
	case errors.Is(err, table.ErrClaimed):
		return Failure(Errorf(CodeConflict, "another subscribe for this organization is in progress"))
	case errors.Is(err, table.ErrRequestMismatch):
		return Failure(Errorf(CodeConflict, "request_id: already used with other fields"))
	case errors.Is(err, table.ErrRequestInProgress):
		return Failure(&Error{Code: CodeUnavailable, Message: "request_id: the same request is in progress; retry shortly", Retryable: true})
	case err != nil:
		return Failure(fromTable("begin request", err))
	case prev.Done:
		var replay struct {
			OK     bool            `json:"ok"`
			Result json.RawMessage `json:"result"`
			Error  *ErrorBody      `json:"error"`
		}
		if json.Unmarshal([]byte(prev.Result), &replay) == nil {
			r := Response{OK: replay.OK, Error: replay.Error}
			if replay.Result != nil {
				r.Result = replay.Result // byte for byte the first answer
			}
			return r
		}
	}
	cmd.attempt, cmd.retry = prev.Attempt, prev.Retry
	work, cancel := withAnswerTime(ctx)
	result, runErr := act.run(s, work, cmd)
	cancel()
	resp := answer(result, runErr)
	// What becomes of the request_id is written even when the caller's
	// deadline has passed: a held claim would answer "in progress" to every
	// retry until its lease lapsed.
	ctx, cancelRecord := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancelRecord()
	if resp.Error != nil && resp.Error.Retryable {
		// The retry runs the request again: with the same Stripe keys, so
		// that Stripe replays what it did; after an answer Stripe stores
		// under a key for 24 hours (a 5xx), with new ones.
		if err := s.store.ReleaseRequest(ctx, cmd.RequestID, errors.Is(runErr, errKeyBurned)); err != nil {
			s.log.WarnContext(ctx, "could not release request_id; it frees itself when its lease lapses", "request_id", cmd.RequestID, "error", err.Error())
		}
		if act.claims {
			if err := s.store.ReleaseSubscribe(ctx, cmd.OrgID, cmd.RequestID); err != nil {
				s.log.WarnContext(ctx, "could not release the organization's claim; it frees itself when its lease lapses", "org_id", cmd.OrgID, "error", err.Error())
			}
		}
		return resp
	}
	raw, _ := json.Marshal(resp)
	finish := s.store.FinishRequest
	if act.claims {
		finish = func(ctx context.Context, id, result string) error {
			return s.store.FinishClaimedRequest(ctx, id, cmd.OrgID, result)
		}
	}
	if err := finish(ctx, cmd.RequestID, string(raw)); err != nil {
		s.log.WarnContext(ctx, "could not store the request's answer; a retry runs it again", "request_id", cmd.RequestID, "error", err.Error())
	}
	return resp
}

// recordTimeout bounds the write that records a request's outcome.
const recordTimeout = 2 * time.Second

// withAnswerTime returns ctx with an earlier deadline, keeping back a
// quarter of the time left (at most a second): when Stripe is slower than
// the invocation, the work gives up first and there is still time to
// release the request_id and answer unavailable, instead of Lambda killing
// the invocation with the request_id held until its lease lapses.
func withAnswerTime(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, deadline.Add(-min(time.Until(deadline)/4, time.Second)))
}

func (s *Service) dispatch(ctx context.Context, act action, cmd Command) Response {
	return answer(act.run(s, ctx, cmd))
}

func answer(result any, err error) Response {
	if err != nil {
		return Failure(err)
	}
	return Success(result)
}

// getConfig answers with billing disabled too: the core app reads whether
// billing is on, and the key its frontend gives Stripe.js.
func (s *Service) getConfig(ctx context.Context, _ Command) (any, error) {
	keys, err := s.keys.Keys(ctx)
	if err != nil {
		return nil, err
	}
	pk := ""
	if keys.Enabled() {
		pk = keys.PublishableKey
	}
	return map[string]any{"billing_enabled": keys.Enabled(), "publishable_key": pk, "stage": s.cfg.Stage, "namespace": s.cfg.Namespace}, nil
}
